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
    assert "unknown loss 'simgoid'" in run_cli(capsys, recipe(), "loss.type=[simgoid]")
    assert "did you mean 'sigmoid'?" in run_cli(capsys, recipe(), "loss.type=[simgoid]")


def _missing_integration() -> str | None:
    from transformers.integrations import get_available_reporting_integrations
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    installed = get_available_reporting_integrations()
    return next((name for name in INTEGRATION_TO_CALLBACK if name not in installed), None)


@pytest.mark.parametrize(
    "override,message",
    [
        ("training.logging_steps=0", "training.logging_steps must be > 0"),
        ("training.save_steps=0", "training.save_steps must be > 0"),
        ("training.eval_steps=0", "training.eval_steps must be > 0"),
        ("training.save_total_limit=-1", "training.save_total_limit must be > 0"),
        ("training.pad_to_multiple_of=0", "training.pad_to_multiple_of must be > 0"),
        ("training.lr_scheduler_type=bogus", "training.lr_scheduler_type: unknown scheduler 'bogus' (known: linear, cosine"),
        ("training.lr_scheduler_type=cosin", "did you mean 'cosine'?"),
        # transformers' own rule, found by building its TrainingArguments at check time
        ("training.lr_scheduler_type=reduce_lr_on_plateau", "training.lr_scheduler_type: "),
        ("training.warmup_ratio=5", "training.warmup_ratio must be in [0, 1)"),
        ("training.warmup_ratio=1.0", "training.warmup_ratio must be in [0, 1)"),
        ("training.num_epochs=-1", "training.num_epochs must be > 0"),
        ("training.num_epochs=0", "training.num_epochs must be > 0"),
        ("training.max_steps=0", "training.max_steps must be > 0"),
        ("training.max_steps=-3", "training.max_steps must be > 0"),
        ("training.dataloader_num_workers=-1", "training.dataloader_num_workers must be >= 0"),
        ("training.weight_decay=-0.1", "training.weight_decay must be >= 0"),
        ("training.max_grad_norm=-1", "training.max_grad_norm must be >= 0"),
        ("lora.dropout=2", "lora.dropout must be in [0, 1)"),
        ("lora.dropout=-0.1", "lora.dropout must be in [0, 1)"),
        ("training.report_to=[wandbb]", "training.report_to: unknown integration 'wandbb'"),
    ],
)
def test_bad_training_value_named_before_any_work(capsys, recipe, override, message):
    assert message in run_cli(capsys, recipe(), override)


def test_report_to_an_integration_that_is_not_installed(capsys, recipe):
    name = _missing_integration()
    if name is None:
        pytest.skip("every reporting integration is installed")
    assert f"training.report_to: '{name}' is not installed" in run_cli(capsys, recipe(), f"training.report_to=[{name}]")


def test_fields_unknown_section(capsys):
    assert cli.main(["fields", "trainig"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "unknown section 'trainig'" in err and "did you mean 'training'?" in err


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
