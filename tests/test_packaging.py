"""pyproject declares a torch range that keeps an installed torch; the Makefile pins the CPU build."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def test_torch_is_a_range_that_the_installed_torch_satisfies():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (torch,) = [Requirement(d) for d in deps if Requirement(d).name == "torch"]
    assert not any(spec.operator in ("==", "===") for spec in torch.specifier), torch
    installed = Version(importlib.metadata.version("torch")).public  # 2.13.0+cpu -> 2.13.0
    assert torch.specifier.contains(installed), (str(torch), installed)
    # a CUDA build of another supported version is kept too, not replaced
    assert torch.specifier.contains("2.6.0") and torch.specifier.contains("2.9.1")
    assert not torch.specifier.contains("2.5.1")


def test_makefile_keeps_the_cpu_pin():
    assert re.search(r"^TORCH \?= torch==\d+\.\d+\.\d+$", (ROOT / "Makefile").read_text(), re.M)


def test_data_prep_installs_inside_basealign_not_as_a_top_level_module(tmp_path):
    """From a folder that is not the repo (so the checkout's own data_prep/ is not on sys.path),
    the installed package offers basealign.data_prep and no generic top-level `data_prep`."""
    import subprocess
    import sys

    probe = ("import importlib.util, basealign.data_prep.prepare as p; "
             "print(importlib.util.find_spec('data_prep') is None, p.__name__)")
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "basealign.data_prep.prepare"]
