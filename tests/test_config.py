"""Recipes: typed validation, extends, command-line overrides, the real recipes."""

from __future__ import annotations

from pathlib import Path

import pytest

from basealign.config import load_recipe, recipe_from_dict, recipe_to_yaml
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
