"""hub.push: true in a training recipe pushes the finished run (against the local fake Hub)."""

from __future__ import annotations

import yaml

from basealign.config import recipe_from_dict
from basealign.training.run import run

from conftest import toy_rows, write_pairs_folder  # tests/conftest.py

from .conftest import read_front_matter


def test_training_with_hub_push_uploads_the_run(tmp_path, fake_hub):
    pairs = write_pairs_folder(tmp_path / "pairs", toy_rows(8), toy_rows(2, seed=1))
    recipe = recipe_from_dict({
        "model": {"name_or_path": "builtin:tiny-mistral"},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "data": {"pairs": str(pairs), "max_length": 256},
        "loss": {"type": ["ipo"], "beta": 0.1},
        "training": {"learning_rate": 1e-3, "max_tokens_per_batch": 700, "max_steps": 2, "seed": 1},
        "output_dir": str(tmp_path / "run"),
        "hub": {"push": True, "repo_id": "me/tiny-ipo", "private": True},
    })
    run(recipe)
    files = fake_hub.repos["me/tiny-ipo"]["files"]
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "recipe.yaml", "metrics.jsonl", "README.md"):
        assert name in files, name
    meta, body = read_front_matter(files["README.md"].decode())
    assert "ipo" in meta["tags"] and meta["library_name"] == "peft"
    assert yaml.safe_load(files["recipe.yaml"])["loss"]["type"] == ["ipo"]
    assert len(fake_hub.commits) == 1
