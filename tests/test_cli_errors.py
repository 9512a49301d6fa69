"""Bad input: one clear line on stderr, exit code 2, never a traceback."""

from __future__ import annotations

import pandas as pd
import pytest

from basealign import cli
from conftest import toy_rows, write_pairs_folder


def run_cli(capsys, *args) -> str:
    code = cli.main(["train", *map(str, args)])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("basealign train: error: ")
    return lines[0]


@pytest.fixture
def recipe(tmp_path, pairs_folder):
    def make(extra: str = "", pairs=None) -> str:
        path = tmp_path / "recipe.yaml"
        path.write_text(
            "model: {name_or_path: 'builtin:tiny-mistral'}\n"
            f"data: {{pairs: '{pairs or pairs_folder}', max_length: 256}}\n"
            f"output_dir: '{tmp_path / 'out'}'\n" + extra
        )
        return str(path)

    return make


def test_missing_recipe_file(capsys, tmp_path):
    assert "recipe file not found" in run_cli(capsys, tmp_path / "nope.yaml")


def test_yaml_syntax_error(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  seed: [1, 2\n")
    line = run_cli(capsys, bad)
    assert "YAML syntax error" in line and "line" in line


def test_unknown_field_in_recipe(capsys, recipe):
    assert "unknown key 'betaa' in section 'loss'; did you mean 'beta'?" in run_cli(capsys, recipe("loss: {betaa: 0.1}\n"))


def test_ill_typed_override(capsys, recipe):
    assert "training.learning_rate: expected float, got str 'fast'" in run_cli(capsys, recipe(), "training.learning_rate=fast")


def test_unknown_override_key(capsys, recipe):
    assert "unknown key 'sed' in section 'training'; did you mean 'seed'?" in run_cli(capsys, recipe(), "training.sed=1")


def test_unknown_loss(capsys, recipe):
    assert "unknown loss 'dpo'" in run_cli(capsys, recipe(), "loss.type=[dpo]")


def test_model_path_does_not_exist(capsys, recipe, tmp_path):
    line = run_cli(capsys, recipe(), f"model.name_or_path={tmp_path / 'no_model'}")
    assert "model path does not exist" in line


def test_dataset_without_required_columns(capsys, recipe, tmp_path):
    folder = tmp_path / "nochosen"
    folder.mkdir()
    pd.DataFrame({"prompt": ["hi"], "answer": ["hello"], "rejected": ["no"]}).to_parquet(folder / "train.parquet")
    line = run_cli(capsys, recipe(pairs=folder))
    assert "chosen" in line


def test_empty_dataset(capsys, recipe, tmp_path):
    folder = write_pairs_folder(tmp_path / "empty", toy_rows(0))
    line = run_cli(capsys, recipe(pairs=folder))
    assert "empty" in line or "0 " in line


def test_max_length_too_small_for_every_pair(capsys, recipe):
    line = run_cli(capsys, recipe(), "data.max_length=8")
    assert "no training pair fits data.max_length=8" in line and "prompt fills max_length" in line


def test_pairs_path_that_is_neither_folder_nor_recipe(capsys, recipe, tmp_path):
    assert "neither a prepared pairs folder nor a data recipe" in run_cli(capsys, recipe(pairs=tmp_path / "nothing"))


def test_resume_without_checkpoint(capsys, recipe):
    code = cli.main(["train", recipe(), "--resume"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no checkpoint" in err and len(err.splitlines()) == 1
