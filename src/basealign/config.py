"""Training recipes: YAML (omegaconf) in, a typed and validated `Recipe` out.

Every field is declared once, below, with its help text (`basealign fields` prints them). A
recipe may `extends: other.yaml` (path relative to the recipe), and any field can be
overridden as `section.field=value`. omegaconf's structured config merges the YAML onto the
defaults and converts types; an unknown key fails naming its section and the closest valid
key, a wrong type names the field and the expected type. Values transformers' Trainer would
reject fail here too, naming the recipe field, before any work starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import textwrap
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from basealign.errors import BasealignError

LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust", "sft")
# TRL users say `dpo` for the sigmoid loss; the recipe keeps one name per loss.
LOSS_ALIASES = {"dpo": "sigmoid"}


@dataclass
class ModelConfig:
    name_or_path: str = field(
        default="builtin:tiny-mistral",
        metadata={"help": "The base model: a hub id, a local folder, or builtin:tiny-mistral (also builtin:tiny-llama, "
                          "builtin:tiny-qwen2: tiny random models built from a config, no download)."},
    )
    dtype: Literal["float32", "bfloat16", "float16"] = field(
        default="float32",
        metadata={"help": "Weight dtype of the policy and the reference. bfloat16 or float16 also turn on the "
                          "Trainer's mixed precision; the flash and torch_varlen attention backends need one of them."},
    )
    attn_implementation: Literal["auto", "flash", "torch_varlen", "flex", "sdpa"] = field(
        default="auto",
        metadata={"help": "Attention backend of the packed, prefix-shared layout. auto: flash with the flash-attn "
                          "package on CUDA, else torch_varlen, else flex; sdpa on CPU. `basealign doctor` shows the "
                          "choice and why."},
    )
    chat_template: str | None = field(
        default="hh",
        metadata={"help": "How conversations become text: a template name (hh: \\n\\nHuman: ... \\n\\nAssistant: ..., "
                          "each assistant turn ending with EOS; chatml), a Jinja string, or null to keep the "
                          "tokenizer's own. Base models ship none, hence the default."},
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata={"help": "Recompute activations in the backward pass: less memory, about a third more compute."},
    )
    revision: str | None = field(
        default=None,
        metadata={"help": "Hub revision (branch, tag or commit) of name_or_path; null: the default branch."},
    )


@dataclass
class LoraConfig:
    r: int = field(default=16, metadata={"help": "LoRA rank, >= 1."})
    alpha: int = field(
        default=32, metadata={"help": "LoRA scaling numerator (the update is scaled by alpha / r), > 0."}
    )
    dropout: float = field(
        default=0.05,
        metadata={"help": "Dropout on the LoRA input, in [0, 1); in effect only with training.disable_dropout: false."},
    )
    target_modules: Union[str, list[str]] = field(
        default="all-linear",
        metadata={"help": "Modules that get adapters: a list of module names (e.g. [q_proj, v_proj]), or all-linear "
                          "(every linear layer but the output head)."},
    )


@dataclass
class DataConfig:
    pairs: str = field(
        default="recipes/data/quickstart.yaml",
        metadata={"help": "A prepared pairs folder (train.parquet, test.parquet), or a data recipe YAML that is "
                          "prepared into OUTPUT_DIR/data first. Relative paths resolve against the recipe's folder."},
    )
    max_length: int = field(
        default=2048,
        metadata={"help": "Tokens allowed for each of prompt+chosen and prompt+rejected, >= 2. Responses are cut at "
                          "their end; pairs that cannot fit are dropped and counted by reason in the log."},
    )
    max_prompt_length: int | None = field(
        default=None,
        metadata={"help": "When a pair exceeds max_length, cut its prompt to this many tokens, keeping the end; "
                          "in [1, max_length). null: prompts are never cut, and a pair whose prompt fills "
                          "max_length is dropped."},
    )
    eval_split: str | None = field(
        default="test",
        metadata={"help": "Split of the pairs folder evaluated every training.eval_steps (and at the end); "
                          "null: no evaluation."},
    )


@dataclass
class LossConfig:
    type: list[str] = field(
        default_factory=lambda: ["sigmoid"],
        metadata={"help": "Loss or losses, summed with `weights`: sigmoid (DPO; `dpo` is an alias), ipo "
                          "(length-normalized, as TRL), hinge, robust (label-smoothed DPO), sft (NLL of chosen). "
                          "A single name is a one-element list."},
    )
    weights: list[float] | None = field(
        default=None,
        metadata={"help": "One weight per entry of `type`; null: 1.0 each."},
    )
    beta: float = field(
        default=0.1,
        metadata={"help": "Strength of the tie to the reference (DPO's beta; IPO's tau), > 0. Rewards are "
                          "beta * (policy - reference) log-probs."},
    )
    label_smoothing: float = field(
        default=0.0,
        metadata={"help": "Assumed rate of flipped preference labels, in [0, 0.5); used by the robust loss."},
    )


@dataclass
class TrainingConfig:
    learning_rate: float = field(default=5.0e-6, metadata={"help": "Peak learning rate of AdamW, > 0."})
    lr_scheduler_type: str = field(
        default="linear",
        metadata={"help": "Learning-rate schedule after warm-up: a transformers SchedulerType (linear, cosine, "
                          "constant, ...); reduce_lr_on_plateau and greedy need evaluation (eval_steps)."},
    )
    warmup_ratio: float = field(
        default=0.0,
        metadata={"help": "Fraction of all optimizer steps spent warming the learning rate up from 0, in [0, 1)."},
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW decoupled weight decay, >= 0."})
    max_grad_norm: float = field(
        default=1.0, metadata={"help": "Clip the global gradient norm to this, >= 0; 0 turns clipping off."}
    )
    max_tokens_per_batch: int = field(
        default=16384,
        metadata={"help": "Token budget of one micro-batch (one packed row), >= 2 x data.max_length so every pair "
                          "fits. The number of pairs per micro-batch follows from it."},
    )
    gradient_accumulation_steps: int = field(
        default=1,
        metadata={"help": "Micro-batches per optimizer step, >= 1. The step's loss is the mean over all its pairs, "
                          "however they are cut."},
    )
    num_epochs: float = field(
        default=1.0, metadata={"help": "Passes over the training pairs, > 0; ignored when max_steps > 0."}
    )
    max_steps: int = field(
        default=-1, metadata={"help": "Optimizer steps to train for, > 0; -1: as many as num_epochs gives."}
    )
    packing: bool = field(
        default=True,
        metadata={"help": "Pack many pairs into one row (the fast path); false runs the padded reference path on "
                          "the same batches."},
    )
    prefix_sharing: bool = field(
        default=True,
        metadata={"help": "Lay each packed pair out as prompt|chosen|rejected, the prompt computed once; "
                          "needs packing (turned off without it)."},
    )
    pad_to_multiple_of: int | None = field(
        default=None,
        metadata={"help": "Pad each row to a multiple of this many tokens (some kernels like 8 or 64), >= 1; "
                          "null: no padding."},
    )
    disable_dropout: bool = field(
        default=True,
        metadata={"help": "Turn dropout off in the policy and the reference (as TRL's disable_dropout): the "
                          "reference must be deterministic and the policy's log-probs comparable with it. Also turns "
                          "lora.dropout off."},
    )
    precompute_ref_logps: bool = field(
        default=False,
        metadata={"help": "Run the reference once before training and cache its log-probs in ref_cache_dir, "
                          "so training holds no reference forward (and, for a full fine-tune, no second copy)."},
    )
    ref_cache_dir: str | None = field(
        default=None,
        metadata={"help": "Folder of the reference log-prob cache, keyed by the pairs' token ids and the model; "
                          "null: ~/.cache/basealign/ref_logps."},
    )
    logging_steps: int = field(
        default=1, metadata={"help": "Log metrics (metrics.jsonl, report_to) every this many optimizer steps, > 0."}
    )
    save_steps: int = field(default=500, metadata={"help": "Save a checkpoint every this many optimizer steps, > 0."})
    save_total_limit: int | None = field(
        default=2, metadata={"help": "Keep at most this many checkpoints, >= 1, deleting the oldest; null: keep all."}
    )
    eval_steps: int | None = field(
        default=None,
        metadata={"help": "Evaluate on data.eval_split every this many optimizer steps, > 0; null: only at the end."},
    )
    seed: int = field(
        default=42, metadata={"help": "Seed of LoRA init, pair order and micro-batch grouping; same seed, same run."}
    )
    report_to: list[str] = field(
        default_factory=list,
        metadata={"help": "Installed transformers integrations to log to (tensorboard, wandb, ...); "
                          "[]: metrics.jsonl and report.md only."},
    )
    dataloader_num_workers: int = field(
        default=0, metadata={"help": "Worker processes loading micro-batches, >= 0; 0: in the training process."}
    )


@dataclass
class HubConfig:
    push: bool = field(default=False, metadata={"help": "Push the run to the Hub when training ends (needs repo_id)."})
    repo_id: str | None = field(default=None, metadata={"help": "Hub repository OWNER/NAME to push to."})
    private: bool = field(default=True, metadata={"help": "Create the Hub repository as private."})
    license: str = field(default="apache-2.0", metadata={"help": "License id written to the model card."})


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
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "The base model and how it runs."})
    lora: LoraConfig | None = field(
        default_factory=LoraConfig,
        metadata={"help": "LoRA adapter; the reference is the base model with the adapter off. null: full "
                          "fine-tune with a frozen copy as reference."},
    )
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "Preference pairs and their lengths."})
    loss: LossConfig = field(default_factory=LossConfig, metadata={"help": "The preference loss family."})
    training: TrainingConfig = field(
        default_factory=TrainingConfig, metadata={"help": "Optimizer, schedule, batching, logging, checkpoints."}
    )
    output_dir: str = field(
        default="runs/default",
        metadata={"help": "Run folder: adapter or model, tokenizer, checkpoints, metrics.jsonl, report, recipe.yaml."},
    )
    hub: HubConfig = field(default_factory=HubConfig, metadata={"help": "Publishing to the Hugging Face Hub."})
    eval: EvalConfig | None = field(default=None, metadata={
        "help": "`basealign eval` settings; with this section the evaluation also runs when training ends. "
                "null: no eval stage."})
    recipe_dir: str | None = field(
        default=None,
        # Set by the loader, not by a recipe: `fields` does not list it and a recipe may not set it.
        metadata={"loader": True, "help": "Folder the recipe file was read from; relative data paths resolve here."},
    )


# ---------------------------------------------------------------- loading


def load_recipe(path: str | Path, overrides: typing.Sequence[str] = ()) -> Recipe:
    """Read a recipe file (following `extends`), apply overrides, validate, return a Recipe."""
    raw = _read_with_extends(Path(path), seen=())
    raw = apply_overrides(raw, overrides)
    recipe = recipe_from_dict(raw)
    recipe.recipe_dir = str(Path(path).resolve().parent)
    return recipe


def recipe_from_dict(raw: dict[str, Any]) -> Recipe:
    """RAW merged onto the defaults by omegaconf's structured config, then checked as a whole."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException, ValidationError

    raw = _shape(raw, Recipe, "recipe")
    try:
        recipe = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Recipe), raw))
    except ValidationError as err:
        raise BasealignError(_type_error(err.full_key, raw)) from None
    except OmegaConfBaseException as err:
        raise BasealignError(f"{err.full_key or 'recipe'}: {str(err).splitlines()[0]}") from None
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


def _user_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if not f.metadata.get("loader")]


def _options(hint: Any) -> tuple[Any, ...]:
    """The types a hint allows: `int | None` -> (int, NoneType)."""
    return typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else (hint,)


def _section_class(hint: Any) -> type | None:
    """The dataclass of a section's type hint (`LoraConfig | None` included), else None."""
    return next((o for o in _options(hint) if dataclasses.is_dataclass(o)), None)


def _shape(raw: Any, cls: type, where: str) -> dict[str, Any]:
    """RAW checked and shaped for omegaconf's merge, for the rules omegaconf cannot express.

    Unknown keys fail here so the message names the section and the closest key (omegaconf would
    also accept the loader's own `recipe_dir`). A scalar where a list is expected is a one-element
    list (`type: ipo` means `type: [ipo]`). A bool takes only true/false: omegaconf reads 3, 'yes'
    and 'on' as true. Lists of scalars hold no lists: omegaconf does not check nested elements.
    """
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BasealignError(f"{where} must be a mapping, got {_type_name(raw)}")
    fields = [f.name for f in _user_fields(cls)]
    hints = typing.get_type_hints(cls)
    shaped = {}
    for key, value in raw.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(fields)}"
            raise BasealignError(f"unknown key '{key}' in section '{where}'{hint}")
        name = key if cls is Recipe else f"{where}.{key}"
        section = _section_class(hints[key])
        if section is not None and value is not None:
            value = _shape(value, section, name)
        elif hints[key] is bool and not isinstance(value, bool):
            raise BasealignError(f"{name}: expected bool (true/false), got {_type_name(value)} {value!r}")
        elif _list_item(hints[key]) is not None:
            if isinstance(value, (str, int, float)) and not isinstance(value, bool) and str not in _options(hints[key]):
                value = [value]
            if isinstance(value, list) and any(isinstance(v, (list, dict)) for v in value):
                raise BasealignError(f"{name}: expected {_hint_name(hints[key])}, got {value!r}")
        shaped[key] = value
    return shaped


def _list_item(hint: Any) -> Any:
    """The item type of a list-typed hint (`list[float] | None` included), else None."""
    lists = [o for o in _options(hint) if typing.get_origin(o) is list]
    return typing.get_args(lists[0])[0] if lists else None


def _type_error(full_key: str, raw: dict[str, Any]) -> str:
    """One line for an omegaconf ValidationError at FULL_KEY (`training.seed`, `loss.weights[0]`)."""
    path = full_key.split("[")[0].split(".")
    hint, value = Recipe, raw
    for key in path:
        hint = _section_class(hint) or hint
        hint = typing.get_type_hints(hint)[key]
        value = value.get(key) if isinstance(value, dict) else None
    if "[" in full_key:  # a list item: its own value and type
        hint = _list_item(hint)
        value = value[int(full_key.split("[")[1].rstrip("]"))]
    got = "null" if value is None else f"{_type_name(value)} {value!r}"
    if typing.get_origin(hint) is Literal:
        return f"{full_key}: expected one of {', '.join(repr(a) for a in typing.get_args(hint))}, got {got}"
    return f"{full_key}: expected {_hint_name(hint)}, got {got}"


def _type_name(value: Any) -> str:
    return {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "mapping"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def _hint_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_hint_name(a) for a in typing.get_args(hint))
    if origin is list:
        return f"list of {_hint_name(typing.get_args(hint)[0])}"
    if origin is Literal:
        return "|".join(typing.get_args(hint))
    if hint is type(None):
        return "null"
    if dataclasses.is_dataclass(hint):
        return "section"
    return getattr(hint, "__name__", str(hint))


def _check_semantics(recipe: Recipe) -> None:
    loss = recipe.loss
    loss.type = [LOSS_ALIASES.get(name, name) for name in loss.type]
    for name in loss.type:
        if name not in LOSS_TYPES:
            _unknown("loss.type", "loss", name, LOSS_TYPES + tuple(LOSS_ALIASES))
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
    if recipe.lora is not None:
        if recipe.lora.r < 1 or recipe.lora.alpha <= 0:
            raise BasealignError("lora.r must be >= 1 and lora.alpha > 0")
        if not 0.0 <= recipe.lora.dropout < 1.0:
            raise BasealignError(f"lora.dropout must be in [0, 1), got {recipe.lora.dropout}")
    _check_training(training)
    if training.prefix_sharing and not training.packing:
        # Prefix sharing is a property of the packed layout; the padded path runs P+C and P+R.
        training.prefix_sharing = False
    if recipe.hub.push and not recipe.hub.repo_id:
        raise BasealignError("hub.push is true but hub.repo_id is not set")
    _check_training_arguments(recipe)


def _unknown(field_name: str, what: str, name: Any, known: typing.Sequence[str]) -> typing.NoReturn:
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise BasealignError(f"{field_name}: unknown {what} '{name}' (known: {', '.join(known)}){hint}")


def _check_training(training: TrainingConfig) -> None:
    """Ranges of the `training` fields; transformers accepts several of these and then misbehaves."""
    positive = {"learning_rate": training.learning_rate, "logging_steps": training.logging_steps,
                "save_steps": training.save_steps, "eval_steps": training.eval_steps,
                "save_total_limit": training.save_total_limit, "pad_to_multiple_of": training.pad_to_multiple_of}
    for name, value in positive.items():
        if value is not None and value <= 0:
            raise BasealignError(f"training.{name} must be > 0, got {value}")
    if training.gradient_accumulation_steps < 1:
        raise BasealignError("training.gradient_accumulation_steps must be >= 1")
    for name in ("weight_decay", "max_grad_norm", "dataloader_num_workers"):
        if getattr(training, name) < 0:
            raise BasealignError(f"training.{name} must be >= 0, got {getattr(training, name)}")
    if not 0.0 <= training.warmup_ratio < 1.0:
        raise BasealignError(f"training.warmup_ratio must be in [0, 1), got {training.warmup_ratio}")
    if training.max_steps == 0 or training.max_steps < -1:
        raise BasealignError(f"training.max_steps must be > 0, or -1 to train for num_epochs; got {training.max_steps}")
    if training.max_steps == -1 and training.num_epochs <= 0:
        raise BasealignError(f"training.num_epochs must be > 0 (or set training.max_steps), got {training.num_epochs}")


# ---------------------------------------------------------------- transformers' TrainingArguments

# TrainingArguments name -> the recipe field it is read from; training_arguments() builds from this
# table, and errors from TrainingArguments are mapped back through it to the field the user wrote.
_FROM_RECIPE = {
    "learning_rate": "training.learning_rate",
    "lr_scheduler_type": "training.lr_scheduler_type",
    # transformers 5 reads a warmup_steps below 1 as a fraction of all steps; warmup_ratio is in [0, 1).
    "warmup_steps": "training.warmup_ratio",
    "weight_decay": "training.weight_decay",
    "max_grad_norm": "training.max_grad_norm",
    "gradient_accumulation_steps": "training.gradient_accumulation_steps",
    "num_train_epochs": "training.num_epochs",
    "max_steps": "training.max_steps",
    "logging_steps": "training.logging_steps",
    "save_steps": "training.save_steps",
    "save_total_limit": "training.save_total_limit",
    "eval_steps": "training.eval_steps",
    "seed": "training.seed",
    "data_seed": "training.seed",
    "dataloader_num_workers": "training.dataloader_num_workers",
}
# ... and those computed from a recipe field.
_DERIVED_FROM = {"eval_strategy": "training.eval_steps", "report_to": "training.report_to",
                 "bf16": "model.dtype", "fp16": "model.dtype"}


def training_arguments(recipe: Recipe, has_eval: bool, use_cpu: bool) -> dict[str, Any]:
    """The keyword arguments of transformers' TrainingArguments for RECIPE: the one place they are mapped."""
    kwargs: dict[str, Any] = {}
    for name, path in _FROM_RECIPE.items():
        section, key = path.split(".")
        kwargs[name] = getattr(getattr(recipe, section), key)
    half = {"bfloat16": {"bf16": True}, "float16": {"fp16": True}}.get(recipe.model.dtype, {})
    return kwargs | half | dict(
        output_dir=recipe.output_dir,
        # A micro-batch is one packed row holding many pairs; its size is max_tokens_per_batch.
        per_device_train_batch_size=1,
        per_device_eval_batch_size=1,
        eval_strategy="steps" if (recipe.training.eval_steps and has_eval) else "no",
        report_to=recipe.training.report_to or "none",
        remove_unused_columns=False,
        use_cpu=use_cpu,
    )


def _check_training_arguments(recipe: Recipe) -> None:
    """Reject now whatever TrainingArguments would reject when the run starts, naming the recipe field."""
    from transformers import SchedulerType, TrainingArguments
    from transformers.integrations import get_available_reporting_integrations
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    training = recipe.training
    schedulers = [s.value for s in SchedulerType]
    if training.lr_scheduler_type not in schedulers:
        _unknown("training.lr_scheduler_type", "scheduler", training.lr_scheduler_type, schedulers)
    installed = get_available_reporting_integrations()
    for name in training.report_to:
        if name in ("all", "none") or name in installed:
            continue
        if name in INTEGRATION_TO_CALLBACK:
            raise BasealignError(
                f"training.report_to: '{name}' is not installed (installed: {', '.join(installed) or 'none'})"
            )
        _unknown("training.report_to", "integration", name, list(INTEGRATION_TO_CALLBACK))

    class Unplaced(TrainingArguments):
        # TrainingArguments.__post_init__ ends by setting up the device and, under `accelerate
        # launch`, the process group; a recipe check must leave that to the run itself.
        @property
        def _setup_devices(self):
            return None

    try:
        # On CPU so that the check does not depend on this machine's GPU (bf16 support).
        Unplaced(**training_arguments(recipe, has_eval=recipe.data.eval_split is not None, use_cpu=True))
    except ValueError as err:
        message = str(err).splitlines()[0]
        names = _FROM_RECIPE | _DERIVED_FROM
        found = sorted((message.find(n), n) for n in names if n in message)
        where = names[found[0][1]] if found else "training"
        raise BasealignError(f"{where}: {message} (transformers' TrainingArguments)") from None


# ---------------------------------------------------------------- `basealign fields`


def field_docs(section: str | None = None) -> list[tuple[str, str, str, str]]:
    """(dotted name, type, default, help) of every recipe field, or of one SECTION's."""
    sections = [f.name for f in _user_fields(Recipe) if _section_class(typing.get_type_hints(Recipe)[f.name])]
    if section is not None and section not in sections:
        _unknown("SECTION", "section", section, sections)
    rows = []
    for top in _user_fields(Recipe):
        if section is not None and top.name != section:
            continue
        rows.append(_field_doc(top, Recipe, top.name))
        inner = _section_class(typing.get_type_hints(Recipe)[top.name])
        if inner is not None:
            rows += [_field_doc(f, inner, f"{top.name}.{f.name}") for f in _user_fields(inner)]
    return rows


def _field_doc(f: dataclasses.Field, owner: type, name: str) -> tuple[str, str, str, str]:
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return name, _hint_name(typing.get_type_hints(owner)[f.name]), _yaml_text(default), f.metadata["help"]


def _yaml_text(value: Any) -> str:
    """VALUE as a recipe would spell it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(map(_yaml_text, value)) + "]"
    if dataclasses.is_dataclass(value):
        return "{...}"
    return str(value)


def fields_text(section: str | None = None, width: int = 100) -> str:
    """`field_docs` as aligned columns, one field a line; the help wraps under its own column."""
    rows = field_docs(section)
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    indent = sum(widths) + 6
    lines = []
    for row in rows:
        head = "  ".join(text.ljust(w) for text, w in zip(row, widths)) + "  "
        help_lines = textwrap.wrap(row[3], max(40, width - indent))
        lines.append(head + help_lines[0])
        lines += [" " * indent + text for text in help_lines[1:]]
    return "\n".join(lines)
