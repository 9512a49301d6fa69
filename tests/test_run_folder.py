"""A run folder belongs to one run: refusal, --overwrite, --resume's recipe check, nothing left
behind by a failed setup, filesystem and data checks before work, --check, --version."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from basealign import cli
from conftest import small_recipe, toy_rows, write_pairs_folder


def one_error_line(capsys, argv) -> str:
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    # transformers may draw a progress bar before it; the error itself is one line
    assert "Traceback" not in err and err.splitlines()[-1].startswith("basealign train: error: "), err
    return err.splitlines()[-1]


@pytest.fixture
def recipe_file(tmp_path, pairs_folder):
    def make(out: Path, **sections) -> str:
        path = tmp_path / f"recipe-{len(list(tmp_path.glob('recipe-*')))}.yaml"
        path.write_text(yaml.safe_dump(small_recipe(pairs_folder, out, **sections)))
        return str(path)

    return make


def steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)]


def test_another_run_in_the_folder_is_refused_and_resume_checks_the_recipe(tmp_path, recipe_file, capsys):
    """The issue's repro: a 10-step sigmoid run, then ipo into the same folder, then ipo with --resume."""
    out = tmp_path / "run"
    first = recipe_file(out, training={"max_steps": 10, "save_steps": 10})
    assert cli.main(["train", first]) == 0
    adapter = (out / "adapter_model.safetensors").read_bytes()
    capsys.readouterr()

    line = one_error_line(capsys, ["train", first, "loss.type=[ipo]", "training.max_steps=3"])
    assert "holds another run" in line and "--resume" in line and "--overwrite" in line
    line = one_error_line(capsys, ["train", first, "--resume", "loss.type=[ipo]", "training.max_steps=3"])
    assert "different loss.type" in line
    line = one_error_line(capsys, ["train", first, "loss.beta=0.5", "--resume", "training.learning_rate=1e-3"])
    assert "different loss.beta, training.learning_rate" in line
    assert (out / "adapter_model.safetensors").read_bytes() == adapter  # untouched
    assert steps(out) == list(range(1, 11))


def test_resume_may_change_the_length_of_a_run(tmp_path, recipe_file, capsys):
    out = tmp_path / "run"
    first = recipe_file(out, training={"max_steps": 2, "save_steps": 2})
    assert cli.main(["train", first]) == 0
    assert cli.main(["train", first, "--resume", "training.max_steps=3", "training.logging_steps=1"]) == 0
    assert steps(out) == [1, 2, 3]


def test_overwrite_replaces_the_old_run(tmp_path, recipe_file, capsys):
    out = tmp_path / "run"
    first = recipe_file(out, training={"max_steps": 3, "save_steps": 3})
    assert cli.main(["train", first]) == 0
    assert cli.main(["train", first, "--overwrite", "loss.type=[ipo]", "training.max_steps=2",
                     "training.save_steps=100"]) == 0
    assert steps(out) == [1, 2]
    assert not (out / "checkpoint-3").exists()
    assert yaml.safe_load((out / "recipe.yaml").read_text())["loss"]["type"] == ["ipo"]
    assert "final train metrics (step 2)" in capsys.readouterr().out


def test_failed_first_run_leaves_no_folder(tmp_path, recipe_file, capsys):
    out = tmp_path / "new" / "run"
    line = one_error_line(capsys, ["train", recipe_file(out, lora={"target_modules": ["nope_proj"]})])
    assert "lora.target_modules" in line and "q_proj" in line
    assert not out.exists()  # base_model/, recipe.yaml and data_stats.json were written, then removed


def test_failed_run_in_an_existing_folder_removes_only_what_it_added(tmp_path, recipe_file, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    one_error_line(capsys, ["train", recipe_file(out), "data.eval_split=nosuch"])
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_data_recipe_prepared_by_a_failed_run_is_removed(tmp_path, capsys):
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "qs"
    line = one_error_line(capsys, ["train", str(root / "recipes/quickstart.yaml"), f"output_dir={out}",
                                   "lora.target_modules=[nope_proj]"])
    assert "lora.target_modules" in line and not out.exists()


def test_eval_split_that_does_not_exist(tmp_path, recipe_file, capsys):
    line = one_error_line(capsys, ["train", recipe_file(tmp_path / "run"), "data.eval_split=nosuch"])
    assert "data.eval_split" in line and "'nosuch'" in line and "test, train" in line


@pytest.mark.parametrize("where", ["file", "read-only"])
def test_output_dir_that_cannot_be_written(tmp_path, recipe_file, capsys, where):
    if where == "file":
        out = tmp_path / "a_file"
        out.write_text("x")
        expected = "is a file"
    else:
        out = Path("/proc/basealign-test/run")  # nobody, root included, can create files there
        expected = "cannot write in /proc"
    line = one_error_line(capsys, ["train", recipe_file(out)])
    assert "output_dir" in line and expected in line


def test_check_prints_the_plan_and_writes_nothing(tmp_path, recipe_file, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", recipe_file(out), "--check"]) == 0
    text = capsys.readouterr().out
    assert not out.exists()
    assert "train: 24/24 pairs kept" in text and "test: 6/6 pairs kept" in text
    assert "micro-batches" in text and "optimizer steps" in text and "tokens" in text
    assert "attention backend sdpa" in text
    assert "parameters x float32" in text and "GiB" in text


def test_check_drops_and_the_data_recipe(tmp_path, capsys):
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "qs"
    assert cli.main(["train", str(root / "recipes/quickstart.yaml"), f"output_dir={out}", "--check",
                     "data.max_length=60", "training.max_tokens_per_batch=200"]) == 0
    text = capsys.readouterr().out
    assert not out.exists()
    assert "truncated to data.max_length=60" in text or "dropped" in text


def test_check_refuses_what_a_run_refuses(tmp_path, recipe_file, capsys):
    out = tmp_path / "run"
    (out / "checkpoint-4").mkdir(parents=True)
    assert "holds another run" in one_error_line(capsys, ["train", recipe_file(out), "--check"])


def test_unreachable_hub_model_fails_fast(tmp_path, recipe_file, capsys, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    start = time.monotonic()
    line = one_error_line(capsys, ["train", recipe_file(tmp_path / "run"), "model.name_or_path=someone/some-model"])
    assert "cannot reach the Hub at http://127.0.0.1:9" in line and "someone/some-model" in line
    assert time.monotonic() - start < 20
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    line = one_error_line(capsys, ["train", recipe_file(tmp_path / "run"), "model.name_or_path=someone/some-model"])
    assert "HF_HUB_OFFLINE" in line
    assert not (tmp_path / "run").exists()


def test_version(capsys):
    from basealign import __version__

    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"basealign {__version__}"


def test_options_and_overrides_in_any_order():
    args = cli.parse_args(["train", "r.yaml", "--resume", "loss.beta=0.2", "training.seed=1"])
    assert args.resume and args.overrides == ["loss.beta=0.2", "training.seed=1"]
    args = cli.parse_args(["score", "RUN", "data.max_length=64", "--out", "s.jsonl", "loss.beta=1", "--pairs", "P"])
    assert (args.model, args.out, args.pairs) == ("RUN", "s.jsonl", "P")
    assert args.overrides == ["data.max_length=64", "loss.beta=1"]


def test_empty_pairs_folder_leaves_nothing(tmp_path, recipe_file, capsys):
    pairs = write_pairs_folder(tmp_path / "empty", toy_rows(0), toy_rows(0))
    out = tmp_path / "run"
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(small_recipe(pairs, out)))
    assert "empty" in one_error_line(capsys, ["train", str(path)])
    assert not out.exists()
