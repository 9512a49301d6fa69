"""`basealign train RECIPE --check`: validate a recipe and its data and print what training would do.

Everything a run checks before it trains is checked here too (the output folder, the
pairs, the tokenizer and chat template, the model's config and LoRA targets (`check_model`,
which a run calls too), the attention backend), but nothing is trained, no weights are loaded (the model is built on the meta
device to count its parameters) and nothing is written to the run folder: a data recipe
is prepared into a temporary folder.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

from basealign.config import Recipe
from basealign.errors import BasealignError

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f} GiB"


def check_model(recipe: Recipe, model_path: str):
    """The model's architecture without weights (parameters on the meta device), after checking
    that lora.target_modules names some of its modules (peft's own error is a traceback)."""
    import re

    import torch
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(model_path, revision=recipe.model.revision)
    except (OSError, ValueError) as err:
        raise BasealignError(f"cannot read the model config of {model_path}: {str(err).splitlines()[0]}") from None
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config)
    targets = recipe.lora.target_modules if recipe.lora is not None else "all-linear"
    if targets == "all-linear":
        return model
    names = [name for name, _ in model.named_modules() if name]
    if isinstance(targets, str):  # peft reads a string as a regular expression over full names
        matched = any(re.fullmatch(targets, name) for name in names)
    else:
        matched = any(name == t or name.endswith(f".{t}") for name in names for t in targets)
    if not matched:
        linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise BasealignError(f"lora.target_modules: {targets} matches no module of the model "
                             f"(its linear layers: {', '.join(linear)}; or all-linear)")
    return model


def plan(recipe: Recipe, resume: bool = False, overwrite: bool = False) -> str:
    """The plan of a run as printable lines; raises BasealignError for anything a run would refuse."""
    import torch
    from accelerate import PartialState

    from basealign.data_prep.prepare import resolve_pairs
    from basealign.fastpath import attention
    from basealign.fastpath.packing import pair_length
    from basealign.hub.reach import require_hub_repo
    from basealign.models.loading import DTYPES, load_tokenizer, resolve_model_path
    from basealign.training.run import load_tokenized
    from basealign.training.trainer import micro_batches_for_training
    from basealign.training.run_folder import RunFolder

    state = PartialState(cpu=not torch.cuda.is_available())  # as TrainingRun: torchrun on CPU too
    training, data = recipe.training, recipe.data
    checkpoint = RunFolder(Path(recipe.output_dir)).claim(recipe, resume, overwrite)
    lines = [f"basealign train --check: {recipe.output_dir}" + (f" (resuming {Path(checkpoint).name})" if checkpoint else "")]
    with tempfile.TemporaryDirectory(prefix="basealign-check-") as tmp:
        search = [recipe.recipe_dir] if recipe.recipe_dir else []
        pairs_dir = resolve_pairs(data.pairs, Path(tmp) / "data", search)
        model_path = resolve_model_path(recipe.model.name_or_path, Path(tmp))
        require_hub_repo(model_path, recipe.model.revision)
        tokenizer = load_tokenizer(model_path, recipe.model.chat_template, recipe.model.revision)
        splits = load_tokenized(recipe, pairs_dir, tokenizer, verbose=False)
        model = check_model(recipe, model_path)
    lines.append(f"  pairs: {data.pairs}")
    lines += [f"  {line}" for line in splits.summary]

    # The same micro-batches the run will cut (per-epoch regrouping, padded sizing, fillers).
    shared = training.prefix_sharing or not training.packing
    micro_batches = micro_batches_for_training(
        splits.train, training.max_tokens_per_batch, training.seed, shared, state.num_processes,
        training.gradient_accumulation_steps, training.num_epochs, training.max_steps, not training.packing,
    )
    tokens = sum(pair_length(r, shared) for r in splits.train)
    per_rank = len(micro_batches) // state.num_processes
    steps = math.ceil(per_rank / training.gradient_accumulation_steps)
    total = training.max_steps if training.max_steps > 0 else math.ceil(steps * training.num_epochs)
    lines.append(f"  per epoch: {tokens} tokens in micro-batches of <= {training.max_tokens_per_batch} tokens: "
                 f"{micro_batches.filler_note(state.num_processes)}; {steps} optimizer steps "
                 f"({state.num_processes} x {training.gradient_accumulation_steps} accumulation); {total} steps in all")

    dtype = DTYPES[recipe.model.dtype]
    try:
        backend, why = attention.choose_backend(recipe.model.attn_implementation, state.device, dtype, model.config)
    except ValueError as err:
        raise BasealignError(f"model.attn_implementation: {err}") from None
    lines.append(f"  device {state.device}, attention backend {backend} ({why})")

    n_params = sum(p.numel() for p in model.parameters())
    weights = n_params * BYTES[recipe.model.dtype]
    if recipe.lora is not None:
        need = f"LoRA: the frozen weights once (the reference is the same model with the adapter off), ~{_gib(weights)}"
    else:  # policy + frozen reference copy + gradients in the model dtype, Adam's two float32 moments
        need = f"full fine-tune: weights, reference copy, gradients and Adam states, ~{_gib(n_params * (3 * BYTES[recipe.model.dtype] + 8))}"
    lines.append(f"  model: {recipe.model.name_or_path}, {n_params / 1e6:.1f}M parameters x {recipe.model.dtype} = "
                 f"{_gib(weights)}; {need}, plus activations")
    lines.append("  nothing trained, nothing written")
    return "\n".join(lines)
