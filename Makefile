# Two commands do all set-up on a fresh machine with Python 3.11:
#   make quickstart   install, then train recipes/quickstart.yaml (tiny model, bundled pairs)
#   make test         install with the dev extras, then run the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; an unpinned torch pulls several GB of CUDA packages.
TORCH ?= torch==2.13.0

.PHONY: install install-dev quickstart test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e .

install-dev: $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	# DeepSpeed (for the ZeRO-3 test) ships as source that imports torch while it builds:
	# build it against the torch above, with no ops compiled ahead of time.
	DS_BUILD_OPS=0 $(BIN)/pip install --quiet --no-build-isolation "deepspeed==0.19.8"

# --overwrite: running the demo again replaces runs/quickstart instead of refusing it
quickstart: install
	$(BIN)/basealign train recipes/quickstart.yaml --overwrite

test: install-dev
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf runs .pytest_cache
