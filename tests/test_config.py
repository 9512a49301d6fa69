"""Recipes: typed validation, extends, command-line overrides, the real recipes."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from basealign import cli
from basealign.config import Recipe, field_docs, load_recipe, recipe_from_dict, recipe_to_yaml, training_arguments
from basealign.errors import BasealignError

ROOT = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_unknown_key_names_section_and_closest_key(tmp_path):
    recipe = write(tmp_path / "r.yaml", "training:\n  learning_rte: 1.0e-5\n")
    with pytest.raises(BasealignError, match=r"unknown key 'learning_rte' in section 'training'; did you mean 'learning_rate'\?"):
        load_recipe(recipe)


def test_unknown_section_suggests_closest(tmp_path):
    with pytest.raises(BasealignError, match=r"unknown key 'trainng' in section 'recipe'; did you mean 'training'"):
        load_recipe(write(tmp_path / "r.yaml", "trainng: {seed: 1}\n"))


@pytest.mark.parametrize(
    "text,match",
    [
        ("training:\n  seed: abc\n", r"training.seed: expected int, got str 'abc'"),
        ("training:\n  packing: 3\n", r"training.packing: expected bool"),
        ("loss:\n  beta: [1]\n", r"loss.beta: expected float, got list"),
        ("model:\n  dtype: float64\n", r"model.dtype: expected one of 'float32', 'bfloat16', 'float16'"),
        ("lora:\n  r: 1.5\n", r"lora.r: expected int"),
    ],
)
def test_wrong_type_names_field_and_expected_type(tmp_path, text, match):
    with pytest.raises(BasealignError, match=match):
        load_recipe(write(tmp_path / "r.yaml", text))


def test_extends_and_overrides(tmp_path):
    write(tmp_path / "base.yaml", "loss: {beta: 0.3, type: [ipo]}\ntraining: {seed: 7, learning_rate: 1.0e-4}\n")
    child = write(tmp_path / "child.yaml", "extends: base.yaml\ntraining: {seed: 9}\n")
    recipe = load_recipe(child, ["loss.beta=0.05", "training.packing=false", "lora=null"])
    assert recipe.training.seed == 9  # child wins over base
    assert recipe.training.learning_rate == 1e-4  # inherited
    assert recipe.loss.type == ["ipo"] and recipe.loss.beta == 0.05  # override wins over both
    assert recipe.training.packing is False and recipe.training.prefix_sharing is False
    assert recipe.lora is None


def test_override_with_unknown_key_or_bad_type_fails(tmp_path):
    recipe = write(tmp_path / "r.yaml", "output_dir: x\n")
    with pytest.raises(BasealignError, match=r"unknown key 'bta' in section 'loss'; did you mean 'beta'"):
        load_recipe(recipe, ["loss.bta=0.2"])
    with pytest.raises(BasealignError, match=r"training.max_steps: expected int, got str"):
        load_recipe(recipe, ["training.max_steps=ten"])
    with pytest.raises(BasealignError, match=r"not of the form section.field=value"):
        load_recipe(recipe, ["training.max_steps"])


def test_scalar_loss_type_is_a_one_element_list_and_unknown_loss_fails():
    assert recipe_from_dict({"loss": {"type": "hinge"}}).loss.type == ["hinge"]
    with pytest.raises(BasealignError, match=r"unknown loss 'sigmod'.*did you mean 'sigmoid'"):
        recipe_from_dict({"loss": {"type": ["sigmod"]}})
    with pytest.raises(BasealignError, match=r"2 weights for 1 losses"):
        recipe_from_dict({"loss": {"type": ["sigmoid"], "weights": [1.0, 2.0]}})


def test_dpo_is_an_alias_of_sigmoid():
    assert recipe_from_dict({"loss": {"type": ["dpo", "sft"]}}).loss.type == ["sigmoid", "sft"]
    assert recipe_from_dict({"loss": {"type": "dpo"}}).loss.type == ["sigmoid"]


def test_warmup_ratio_is_a_fraction_of_all_steps():
    from transformers import TrainingArguments

    recipe = recipe_from_dict({"training": {"warmup_ratio": 0.1}})
    args = TrainingArguments(**training_arguments(recipe, has_eval=False, use_cpu=True))
    assert args.get_warmup_steps(200) == 20


def test_scheduler_that_needs_evaluation_is_accepted_with_it():
    recipe = recipe_from_dict({"training": {"lr_scheduler_type": "reduce_lr_on_plateau", "eval_steps": 5}})
    assert training_arguments(recipe, has_eval=True, use_cpu=True)["eval_strategy"] == "steps"


def _declared_fields(cls: type, prefix: str = "") -> list[dataclasses.Field]:
    """Every user-facing field of CLS and of its sections, in declaration order, with dotted names."""
    found = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("loader"):
            continue
        found.append((prefix + f.name, f))
        hint = typing.get_type_hints(cls)[f.name]
        inner = [a for a in (typing.get_args(hint) or (hint,)) if dataclasses.is_dataclass(a)]
        if inner:
            found += _declared_fields(inner[0], f"{prefix}{f.name}.")
    return found


def test_fields_lists_every_field_with_its_help(capsys):
    declared = _declared_fields(Recipe)
    assert all(f.metadata.get("help", "").strip() for _, f in declared)
    assert cli.main(["fields"]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.splitlines() if line and not line.startswith(" ")]
    assert listed == [name for name, _ in declared]
    assert [row[0] for row in field_docs()] == listed and all(row[3] for row in field_docs())
    assert cli.main(["fields", "lora"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if not line.startswith(" ")]
    assert listed == [name for name, _ in declared if name.split(".")[0] == "lora"]


def test_resolved_recipe_round_trips(tmp_path):
    recipe = recipe_from_dict({"loss": {"type": ["sigmoid", "sft"], "weights": [1.0, 0.2]}, "lora": None})
    again = load_recipe(write(tmp_path / "resolved.yaml", recipe_to_yaml(recipe)))
    again.recipe_dir = recipe.recipe_dir
    assert again == recipe


@pytest.mark.parametrize("name", ["dpo-lora.yaml", "ipo-lora.yaml"])
def test_real_recipes_load_and_validate(name):
    recipe = load_recipe(ROOT / "recipes" / "mistral-plus" / name)
    assert recipe.model.name_or_path == "mistralai/Mistral-7B-v0.1"
    assert recipe.model.dtype == "bfloat16" and recipe.lora is not None
    assert recipe.loss.type == (["sigmoid"] if name.startswith("dpo") else ["ipo"])
    assert recipe.training.packing and recipe.training.prefix_sharing
    # its data recipe validates too, without touching the network
    from basealign.data_prep.recipe import load_recipe as load_data_recipe

    data_recipe = Path(recipe.recipe_dir) / recipe.data.pairs
    assert data_recipe.is_file()
    sources = load_data_recipe(data_recipe)["sources"]
    assert {s["label"] for s in sources} == {"harmless", "helpful"}


def test_quickstart_recipe_validates():
    recipe = load_recipe(ROOT / "recipes" / "quickstart.yaml")
    assert recipe.model.name_or_path == "builtin:tiny-mistral"
