"""Training recipes: YAML (omegaconf) in, a typed and validated `Recipe` out.

A recipe may `extends: other.yaml` (path relative to the recipe), and any field can be
overridden as `section.field=value`. Validation walks the dataclasses below: an unknown
key fails naming its section and the closest valid key; a wrong type names the field and
the expected type.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from basealign.errors import BasealignError

LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust", "sft")
ATTN_IMPLEMENTATIONS = ("auto", "flash", "torch_varlen", "flex", "sdpa")


@dataclass
class ModelConfig:
    name_or_path: str = "builtin:tiny-mistral"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    attn_implementation: Literal["auto", "flash", "torch_varlen", "flex", "sdpa"] = "auto"
    # A template name from basealign.models.chat_templates, a Jinja string, or null to keep the
    # tokenizer's own (base models have none, so the default is the HH transcript format).
    chat_template: str | None = "hh"
    gradient_checkpointing: bool = False
    revision: str | None = None


@dataclass
class LoraConfig:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: Union[str, list[str]] = "all-linear"


@dataclass
class DataConfig:
    # A prepared pairs folder (train.parquet, test.parquet) or a data recipe YAML.
    pairs: str = "recipes/data/quickstart.yaml"
    max_length: int = 2048
    # When a pair exceeds max_length, cut its prompt to this many tokens (keeping the end);
    # null: prompts are never cut, and a pair whose prompt fills max_length is dropped.
    max_prompt_length: int | None = None
    eval_split: str | None = "test"


@dataclass
class LossConfig:
    type: list[str] = field(default_factory=lambda: ["sigmoid"])
    weights: list[float] | None = None
    beta: float = 0.1
    label_smoothing: float = 0.0


@dataclass
class TrainingConfig:
    learning_rate: float = 5.0e-6
    lr_scheduler_type: str = "linear"
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_tokens_per_batch: int = 16384
    gradient_accumulation_steps: int = 1
    num_epochs: float = 1.0
    max_steps: int = -1
    packing: bool = True
    prefix_sharing: bool = True
    # Pad packed rows to a multiple of this many tokens (some kernels like 8 or 64).
    pad_to_multiple_of: int | None = None
    precompute_ref_logps: bool = False
    ref_cache_dir: str | None = None
    logging_steps: int = 1
    save_steps: int = 500
    save_total_limit: int | None = 2
    eval_steps: int | None = None
    seed: int = 42
    report_to: list[str] = field(default_factory=list)
    dataloader_num_workers: int = 0


@dataclass
class HubConfig:
    push: bool = False
    repo_id: str | None = None
    private: bool = True
    license: str = "apache-2.0"


@dataclass
class EvalConfig:
    """`basealign eval`, and the eval stage at the end of training when a recipe has this section."""

    pairs: str | None = field(default=None, metadata={
        "help": "Held-out pairs folder (or data recipe); null: the run's own pairs (RUN/data, else data.pairs)."})
    split: str = field(default="test", metadata={"help": "Split of the pairs folder to evaluate on."})
    prompts: str | None = field(default=None, metadata={
        "help": "JSON-lines file of prompts to generate for ({'prompt': text or message list, 'label', 'source'}); "
                "null: the prompts of the held-out pairs."})
    limit: int | None = field(default=None, metadata={"help": "Evaluate only the first N pairs and N prompts."})
    max_new_tokens: int = field(default=128, metadata={"help": "Longest answer generated, in tokens."})
    temperature: float = field(default=0.0, metadata={"help": "Sampling temperature; 0 is greedy decoding."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass (with temperature > 0)."})
    seed: int = field(default=0, metadata={"help": "Seed of sampling and of the bootstrap intervals."})
    batch_size: int = field(default=8, metadata={"help": "Prompts per generate call (and per judge call)."})
    judges: list[str] = field(default_factory=list, metadata={
        "help": "Sequence-classification judges as NAME=PATH (higher is better) or NAME=PATH:lower (a cost model); "
                "NAME is the label whose prompts it judges, e.g. helpful=..., harmless=..."})
    tasks: list[str] = field(default_factory=list, metadata={
        "help": "lm-evaluation-harness tasks for base vs aligned; 'paper' is the paper's suite; empty: skipped."})
    task_paths: list[str] = field(default_factory=list, metadata={
        "help": "Folders of extra lm-eval task YAMLs (the harness's include_path)."})
    task_limit: int | None = field(default=None, metadata={"help": "lm-eval: only the first N documents per task."})
    step_generations: int = field(default=0, metadata={
        "help": "During training: at each eval step, write N held-out prompts' answers (policy vs reference) to "
                "RUN/eval/generations_step<k>.jsonl; report.md shows the last ones."})


@dataclass
class Recipe:
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig | None = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    output_dir: str = "runs/default"
    hub: HubConfig = field(default_factory=HubConfig)
    eval: EvalConfig | None = None
    # Folder the recipe file was read from; relative data paths resolve against it.
    recipe_dir: str | None = None


# ---------------------------------------------------------------- loading


def load_recipe(path: str | Path, overrides: typing.Sequence[str] = ()) -> Recipe:
    """Read a recipe file (following `extends`), apply overrides, validate, return a Recipe."""
    raw = _read_with_extends(Path(path), seen=())
    raw = apply_overrides(raw, overrides)
    recipe = recipe_from_dict(raw)
    recipe.recipe_dir = str(Path(path).resolve().parent)
    return recipe


def recipe_from_dict(raw: dict[str, Any]) -> Recipe:
    recipe = _build(Recipe, raw, where="recipe")
    _check_semantics(recipe)
    return recipe


def recipe_to_yaml(recipe: Recipe) -> str:
    from omegaconf import OmegaConf

    data = dataclasses.asdict(recipe)
    data.pop("recipe_dir", None)
    return OmegaConf.to_yaml(OmegaConf.create(data))


def _read_with_extends(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException
    import yaml

    if not path.is_file():
        raise BasealignError(f"recipe file not found: {path}")
    if path.resolve() in seen:
        raise BasealignError(f"recipe {path} extends itself (cycle through {', '.join(map(str, seen))})")
    try:
        conf = OmegaConf.load(path)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise BasealignError(f"YAML syntax error in {path}{where}: {problem}") from None
    except OmegaConfBaseException as err:
        raise BasealignError(f"cannot read recipe {path}: {str(err).splitlines()[0]}") from None
    try:
        data = OmegaConf.to_container(conf, resolve=True)
    except OmegaConfBaseException as err:
        raise BasealignError(f"cannot resolve recipe {path}: {str(err).splitlines()[0]}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise BasealignError(f"recipe {path} must be a mapping of sections, got {type(data).__name__}")
    base = data.pop("extends", None)
    if base is None:
        return data
    base_path = (path.parent / str(base)).resolve()
    merged = OmegaConf.merge(OmegaConf.create(_read_with_extends(base_path, seen + (path.resolve(),))), OmegaConf.create(data))
    return OmegaConf.to_container(merged, resolve=True)


def apply_overrides(raw: dict[str, Any], overrides: typing.Sequence[str]) -> dict[str, Any]:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if not overrides:
        return raw
    for item in overrides:
        if "=" not in item:
            raise BasealignError(f"override {item!r} is not of the form section.field=value")
    try:
        dotlist = OmegaConf.from_dotlist(list(overrides))
        merged = OmegaConf.merge(OmegaConf.create(raw), dotlist)
        return OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as err:
        raise BasealignError(f"bad override: {str(err).splitlines()[0]}") from None


# ---------------------------------------------------------------- validation


def _build(cls: type, raw: Any, where: str):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise BasealignError(f"{where} must be a mapping, got {_type_name(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "recipe_dir"}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(fields)}"
            raise BasealignError(f"unknown key '{key}' in section '{where}'{hint}")
    values = {}
    for name, value in raw.items():
        values[name] = _coerce(value, hints[name], f"{where}.{name}" if where != "recipe" else name)
    return cls(**values)


def _coerce(value: Any, hint: Any, where: str):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own error is the precise one
            return _coerce(value, options[0], where)
        # A string or a list (lora.target_modules): keep whichever type matches, in order.
        for option in options:
            try:
                return _coerce(value, option, where)
            except BasealignError:
                continue
        raise BasealignError(f"{where}: expected {_hint_name(hint)}, got {_type_name(value)} {value!r}")
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise BasealignError(f"{where}: expected one of {choices}, got {value!r}")
        return value
    if origin is list:
        (item_hint,) = args
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]  # `type: ipo` is shorthand for `type: [ipo]`
        if not isinstance(value, list):
            raise BasealignError(f"{where}: expected {_hint_name(hint)}, got {_type_name(value)}")
        return [_coerce(v, item_hint, f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise BasealignError(f"{where}: expected bool (true/false), got {_type_name(value)} {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise BasealignError(f"{where}: expected int, got {_type_name(value)} {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise BasealignError(f"{where}: expected float, got {_type_name(value)} {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise BasealignError(f"{where}: expected str, got {_type_name(value)} {value!r}")
    raise TypeError(f"unsupported type {hint} at {where}")  # a schema bug, not user input


def _type_name(value: Any) -> str:
    return {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "mapping"}.get(
        type(value), type(value).__name__
    )


def _hint_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_hint_name(a) for a in typing.get_args(hint))
    if origin is list:
        return f"list of {_hint_name(typing.get_args(hint)[0])}"
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", str(hint))


def _check_semantics(recipe: Recipe) -> None:
    loss = recipe.loss
    for name in loss.type:
        if name not in LOSS_TYPES:
            close = difflib.get_close_matches(name, LOSS_TYPES, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise BasealignError(f"loss.type: unknown loss '{name}' (known: {', '.join(LOSS_TYPES)}){hint}")
    if not loss.type:
        raise BasealignError("loss.type: give at least one loss")
    if loss.weights is not None and len(loss.weights) != len(loss.type):
        raise BasealignError(
            f"loss.weights: {len(loss.weights)} weights for {len(loss.type)} losses; give one weight per loss"
        )
    if loss.beta <= 0:
        raise BasealignError(f"loss.beta must be > 0, got {loss.beta}")
    if not 0.0 <= loss.label_smoothing < 0.5:
        raise BasealignError(f"loss.label_smoothing must be in [0, 0.5), got {loss.label_smoothing}")
    data, training = recipe.data, recipe.training
    if data.max_length < 2:
        raise BasealignError(f"data.max_length must be >= 2, got {data.max_length}")
    if data.max_prompt_length is not None and not 1 <= data.max_prompt_length < data.max_length:
        raise BasealignError("data.max_prompt_length must be >= 1 and below data.max_length")
    # After truncation P+C and P+R are each <= max_length, so a packed pair (P C R, or
    # P C P R unshared) is < 2 x max_length: with this, no micro-batch exceeds the budget.
    if training.max_tokens_per_batch < 2 * data.max_length:
        raise BasealignError(
            f"training.max_tokens_per_batch ({training.max_tokens_per_batch}) must be >= 2 x data.max_length "
            f"({2 * data.max_length}) so every pair fits a micro-batch"
        )
    if training.learning_rate <= 0:
        raise BasealignError(f"training.learning_rate must be > 0, got {training.learning_rate}")
    if training.gradient_accumulation_steps < 1:
        raise BasealignError("training.gradient_accumulation_steps must be >= 1")
    if recipe.lora is not None and (recipe.lora.r < 1 or recipe.lora.alpha <= 0):
        raise BasealignError("lora.r must be >= 1 and lora.alpha > 0")
    if training.prefix_sharing and not training.packing:
        # Prefix sharing is a property of the packed layout; the padded path runs P+C and P+R.
        training.prefix_sharing = False
    if recipe.hub.push and not recipe.hub.repo_id:
        raise BasealignError("hub.push is true but hub.repo_id is not set")


# ---------------------------------------------------------------- TrainingArguments


def training_arguments(recipe: Recipe, has_eval: bool, use_cpu: bool) -> dict[str, Any]:
    """The recipe's `training` section as keyword arguments of transformers' TrainingArguments."""
    training = recipe.training
    half = {"bfloat16": {"bf16": True}, "float16": {"fp16": True}}.get(recipe.model.dtype, {})
    return dict(
        output_dir=recipe.output_dir,
        per_device_train_batch_size=1,  # a dataset item is a whole micro-batch
        per_device_eval_batch_size=1,
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        learning_rate=training.learning_rate,
        lr_scheduler_type=training.lr_scheduler_type,
        # transformers 5 reads a warmup_steps float in [0, 1) as a ratio of the total steps; the
        # recipe check keeps warmup_ratio in [0, 1) so it is never taken as a step count
        warmup_steps=training.warmup_ratio,
        weight_decay=training.weight_decay,
        max_grad_norm=training.max_grad_norm,
        num_train_epochs=training.num_epochs,
        max_steps=training.max_steps,
        logging_steps=training.logging_steps,
        save_steps=training.save_steps,
        save_total_limit=training.save_total_limit,
        eval_strategy="steps" if (training.eval_steps and has_eval) else "no",
        eval_steps=training.eval_steps,
        seed=training.seed,
        data_seed=training.seed,
        report_to=training.report_to or "none",
        remove_unused_columns=False,
        dataloader_num_workers=training.dataloader_num_workers,
        use_cpu=use_cpu,
        **half,
    )
