"""Every user error ends as exit code 2 with one stderr line and no traceback."""

import pytest
from prep_helpers import SAMPLES

from basealign.cli import main
from basealign.errors import BasealignError
from basealign.data_prep.errors import PrepareError


def write_recipe(tmp_path, body: str):
    path = tmp_path / "recipe.yaml"
    path.write_text(body + f"\noutput_dir: {tmp_path / 'out'}\n", encoding="utf-8")
    return path


def run(capsys, *argv):
    code = main(["prepare", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.err


HH = str(SAMPLES / "hh_harmless.jsonl")


@pytest.mark.parametrize("body, overrides, expected", [
    (f"sources:\n  - {{name: a, type: hh_rlhff, path: {HH}, label: harmless}}", [], "unknown source type 'hh_rlhff' (did you mean 'hh_rlhf'?)"),
    (f"sources:\n  - {{name: a, type: pku_saferlhf, path: {HH}, label: harmless}}", [],
     "missing required column(s) prompt, response_0, response_1, is_response_0_safe, is_response_1_safe, safer_response_id"),
    ("sources:\n  - {name: a, type: hh_rlhf, path: nowhere/missing.jsonl, label: harmless}", [], "file not found"),
    (f"sources:\n  - {{name: a, type: hh_rlhf, path: {HH}, label: harmless, weight: -0.5}}", [], "weight must not be negative"),
    (f"sources:\n  - {{name: a, type: hh_rlhf, path: {HH}, label: harmless, weight: 0}}\n  - {{name: b, type: hh_rlhf, path: {HH}, label: helpful, weight: 0.0}}",
     [], "all source weights are zero"),
    (f"sources:\n  - {{name: a, type: hh_rlhf, path: {HH}, label: harmless, wieght: 0.5}}", [], "unknown key 'wieght' (did you mean 'weight'?)"),
    (f"sources:\n  - {{name: a, type: hh_rlhf, path: {HH}, label: harmless}}\ntest_sise: 0.1", [], "unknown key 'test_sise' (did you mean 'test_size'?)"),
    (f"sources:\n  - {{name: a, type: hh_rlhf, path: {HH}, label: harmless}}", ["sead=3"], "unknown key 'sead' (did you mean 'seed'?)"),
    (f"sources:\n  - {{name: a, type: hh_rlhf, path: {HH}, label: harmful}}", [], "label must be harmless or helpful"),
    (f"sources:\n  - {{name: a, type: hh_rlhf, path: {HH}, label: harmless, weight: 1.5}}", [], "neither a fraction"),
    (f"sources:\n  - {{name: a, type: hh_rlhf, path: {HH}, label: harmless, both_unsafe: keep}}", [], "only applies to type pku_saferlhf"),
    (f"sources:\n  - {{name: a, type: pku_saferlhf, path: {SAMPLES / 'pku_saferlhf.jsonl'}, label: harmless, both_unsafe: maybe}}", [], "both_unsafe must be drop or keep"),
    (f"sources:\n  - {{name: a, type: hh_rlhf, path: {HH}, label: harmless}}", ["seed"], "is not key=value"),
    (f"sources:\n  - {{name: a, type: hh_rlhf, path: {HH}, label: harmless}}\nmax_tokens: {{tokenizer: ./no_such_tok, max_length: 10}}", [], "tokenizer folder not found"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, body, overrides, expected):
    code, err = run(capsys, write_recipe(tmp_path, body), *overrides)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("basealign prepare: error: ")
    assert expected in err
    assert "Traceback" not in err


def test_missing_recipe_file(tmp_path, capsys):
    code, err = run(capsys, tmp_path / "nope.yaml")
    assert code == 2 and "data recipe not found" in err and err.count("\n") == 1


def test_malformed_line_does_not_stop_the_run(tmp_path, capsys):
    recipe = write_recipe(tmp_path, f"sources:\n  - {{name: a, type: hh_rlhf, path: {SAMPLES / 'hh_malformed.jsonl'}, label: harmless}}\ntest_size: 0")
    code, err = run(capsys, recipe)
    assert code == 0 and err == ""
    assert (tmp_path / "out" / "train.parquet").is_file()


def test_prepare_error_is_a_basealign_error():
    assert issubclass(PrepareError, BasealignError)
    assert str(PrepareError("two\nlines")) == "two lines"
