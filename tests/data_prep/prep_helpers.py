"""Shared paths and helpers for the data_prep tests (a unique module name, not conftest)."""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "data_prep" / "samples"
RECIPES = ROOT / "recipes" / "data"


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
