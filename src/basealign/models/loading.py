"""Model and tokenizer loading: hub id, local folder, or a builtin tiny model; LoRA; reference.

LoRA runs use the base model with the adapter disabled as the reference (no second copy
of the weights). Full fine-tuning keeps a frozen copy made before training starts.

Setup checks refuse, with one line and the way out, what would otherwise train silently
wrong or crash later: a model the packed layout is not exact for, an adapter on the
output head, and float16 full fine-tuning.
"""

from __future__ import annotations

import contextlib
import copy
import os
from pathlib import Path

import torch

from basealign.fastpath import attention
from basealign.models.chat_templates import resolve_template
from basealign.config import LoraConfig, ModelConfig
from basealign.errors import BasealignError
from basealign.fastpath.logprobs import check_output_head, enable_logprob_forward
from basealign.models.tiny import BUILTIN_PREFIX, materialize_builtin

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def looks_local(spec: str) -> bool:
    """A path rather than a hub id: explicit path syntax, an existing path, or OWNER/NAME
    whose OWNER is a local folder (a mistyped run directory must not turn into a download)."""
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1 or (os.sep != "/" and os.sep in spec):
        return True
    path = Path(spec)
    return path.exists() or (spec.count("/") == 1 and path.parent.is_dir())


def resolve_model_path(name_or_path: str, output_dir: Path | None) -> str:
    """A builtin name is materialized (under OUTPUT_DIR/base_model); local paths must exist."""
    if name_or_path.startswith(BUILTIN_PREFIX):
        target = (output_dir or Path("runs/builtin")) / "base_model"
        try:
            return str(materialize_builtin(name_or_path, target).resolve())
        except ValueError as err:
            raise BasealignError(f"model.name_or_path: {err}") from None
    if looks_local(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.exists():
            raise BasealignError(f"model.name_or_path: model path does not exist: {name_or_path}")
        if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
            raise BasealignError(f"model.name_or_path: {name_or_path} has no config.json (not a model folder)")
        return str(path.resolve())
    return name_or_path  # a hub id


def lora_run_base_model(run: Path, declared: str | None, recipe_name: str | None) -> str:
    """Where a LoRA run's base model is: adapter_config's path (DECLARED), RUN/base_model,
    else the recipe's model or DECLARED when it is an existing folder or a hub id."""
    for folder in (Path(declared).expanduser() if declared else None, run / "base_model"):
        if folder is not None and (folder / "config.json").is_file():
            return str(folder)
    for candidate in (recipe_name, declared):
        if not candidate or candidate.startswith(BUILTIN_PREFIX):
            continue
        if not looks_local(candidate):
            return candidate  # a hub id
        if (Path(candidate).expanduser() / "config.json").is_file():
            return str(Path(candidate).expanduser())
    raise BasealignError(
        f"cannot find the base model of {run}: {declared or recipe_name or 'unknown'} is neither a model folder "
        f"nor a hub id, and {run / 'base_model'} does not exist; pass model.name_or_path=PATH"
    )


def load_tokenizer(path: str, chat_template: str | None, revision: str | None = None):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
    except OSError as err:
        raise BasealignError(f"cannot load tokenizer from {path}: {str(err).splitlines()[0]}") from None
    tokenizer.chat_template = resolve_template(chat_template, tokenizer)
    if tokenizer.pad_token_id is None:
        # Base models often have no pad token; padding is masked out, any id works.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(config: ModelConfig, path: str, device: torch.device | None = None):
    """The causal LM with basealign's attention registered and the log-prob forward enabled."""
    from transformers import AutoModelForCausalLM

    name = attention.register()
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=DTYPES[config.dtype], attn_implementation=name, revision=config.revision
        )
    except OSError as err:
        raise BasealignError(f"cannot load model from {path}: {str(err).splitlines()[0]}") from None
    if device is not None:
        model.to(device)
    enable_logprob_forward(model)
    return model


def check_packed_support(model, packing: bool) -> None:
    """With packing on, refuse a model whose token mixing the packed layout cannot reproduce
    (decided from its config and class: attention.packed_support)."""
    if not packing:
        return
    exact, why = attention.packed_support(model.config, type(model), model.modules())
    if not exact:
        raise BasealignError(
            f"model type {model.config.model_type}: the packed path is not exact for it ({why}); set training.packing=false"
        )


def check_training_dtype(model: ModelConfig, lora: LoraConfig | None) -> None:
    """A full fine-tune in float16 would hold float16 master weights, which the fp16
    GradScaler refuses to unscale ("Attempting to unscale FP16 gradients")."""
    if lora is None and model.dtype == "float16":
        raise BasealignError(
            "model.dtype=float16 with lora: null (full fine-tune) is not supported: float16 weights cannot be "
            "updated through the fp16 grad scaler; use model.dtype=bfloat16 (or float32), or a LoRA adapter"
        )


def apply_lora(model, lora: LoraConfig, gradient_checkpointing: bool = False):
    from peft import LoraConfig as PeftLoraConfig, get_peft_model

    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    peft_config = PeftLoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules, task_type="CAUSAL_LM"
    )
    peft_model = get_peft_model(model, peft_config)
    check_output_head(peft_model)
    return peft_model


def is_peft(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def frozen(model):
    """MODEL in eval mode with no parameter requiring grad: a reference."""
    model.requires_grad_(False)
    return model.eval()


def frozen_copy(model):
    # Not trl.create_reference_model: same result, but in trl 1.16 a deprecated shim over trl.experimental.
    return frozen(copy.deepcopy(model))


@contextlib.contextmanager
def reference_context(model):
    """Inside: `model` computes the reference (adapter disabled) for a LoRA model. MODEL may
    be wrapped for DDP/FSDP/DeepSpeed; the adapter switch is on the PeftModel inside."""
    from accelerate.utils import extract_model_from_parallel

    inner = extract_model_from_parallel(model)
    if is_peft(inner):
        with inner.disable_adapter():
            yield
    else:
        yield
