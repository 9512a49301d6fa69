"""`basealign doctor`: versions, the device, and which attention / log-prob path would run.

Nothing here loads weights; every probe that can fail says so in its line instead of
raising. With `--model`, the model's config alone (a local folder, a builtin:tiny-* name, or
a hub id, which reads config.json from the Hub) says whether the packed path is exact for
it and which backend and final-logit processing would run.
"""

from __future__ import annotations

import importlib
import platform
from pathlib import Path

import torch

from basealign.errors import BasealignError
from basealign.fastpath import attention, logprobs


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def _importable(module: str, name: str | None = None) -> tuple[bool, str]:
    try:
        mod = importlib.import_module(module)
        if name is not None:
            getattr(mod, name)
    except Exception as err:  # noqa: BLE001 - any failure means "not usable here"
        return False, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}".rstrip(": ")
    return True, ""


def _yes(ok: bool, why: str) -> str:
    return "yes" if ok else f"no ({why})" if why else "no"


def _device() -> tuple[torch.device, str]:
    if not torch.cuda.is_available():
        built = torch.version.cuda
        why = f"torch built with CUDA {built}, but no GPU is visible" if built else "torch built without CUDA"
        return torch.device("cpu"), f"no ({why})"
    index = torch.cuda.current_device()
    name = torch.cuda.get_device_name(index)
    major, minor = torch.cuda.get_device_capability(index)
    memory = torch.cuda.get_device_properties(index).total_memory / 2**30
    bf16 = "bf16 supported" if torch.cuda.is_bf16_supported() else "no bf16"
    count = torch.cuda.device_count()
    extra = f", {count} devices" if count > 1 else ""
    return torch.device("cuda", index), f"yes: {name} (compute capability {major}.{minor}, {memory:.0f} GiB, {bf16}{extra})"


def _flash_line() -> str:
    if _version("flash-attn") == "not installed":
        return "not installed"
    ok, why = attention.flash_attn_status()
    return _version("flash-attn") + ("" if ok else f" -- unusable: {why}")


def _logprob_path(device: torch.device) -> str:
    if logprobs._TrlChunkedLogProb is None:
        return ("checkpointed chunked fallback (basealign.fastpath.logprobs): trl.kernels.chunked_logprob is not importable "
                f"in trl {_version('trl')}")
    module = importlib.import_module(logprobs._TrlChunkedLogProb.__module__)
    use_triton = getattr(module, "_use_triton", None)
    triton_ok = bool(use_triton(device)) if callable(use_triton) else False
    if triton_ok:
        how = "Triton kernels"
    elif device.type == "cuda":
        how = "torch ops (Triton is not available)"
    else:
        how = f"torch ops on {device.type}"
    return f"TRL ChunkedLogProbFunction with {how} (vocab chunk {logprobs.VOCAB_CHUNK})"


def model_config(name_or_path: str):
    """A model's config without its weights: builtin:tiny-*, a local folder, or a hub id."""
    from transformers import AutoConfig

    from basealign.models.loading import looks_local
    from basealign.models.tiny import BUILTIN_PREFIX, tiny_config

    if name_or_path.startswith(BUILTIN_PREFIX):
        try:
            return tiny_config(name_or_path.removeprefix(BUILTIN_PREFIX))
        except ValueError as err:
            raise BasealignError(f"--model: {err}") from None
    if looks_local(name_or_path) and not (Path(name_or_path).expanduser() / "config.json").is_file():
        raise BasealignError(f"--model: {name_or_path} has no config.json (not a model folder)")
    try:
        return AutoConfig.from_pretrained(str(Path(name_or_path).expanduser()) if looks_local(name_or_path) else name_or_path)
    except (OSError, ValueError, KeyError) as err:
        raise BasealignError(f"--model: cannot read the config of {name_or_path}: {str(err).splitlines()[0]}") from None


def model_report(name_or_path: str, device: torch.device) -> list[str]:
    """Lines on one model: packed path exact or not (and why), backend, log-prob processing."""
    from transformers import AutoModelForCausalLM

    config = model_config(name_or_path)
    model_class = AutoModelForCausalLM._model_mapping.get(type(config), None)
    if model_class is None:
        return [f"  model {name_or_path}: {config.model_type} has no causal-LM class in transformers; basealign cannot train it"]
    try:  # a weightless skeleton shows the modules (e.g. attention sinks) the config does not name
        with torch.device("meta"):
            modules = list(AutoModelForCausalLM.from_config(config).modules())
    except Exception:  # noqa: BLE001 - the config-only verdict still stands
        modules = None
    exact, why = attention.packed_support(config, model_class, modules)
    packed = f"exact ({why})" if exact else f"not exact ({why}); train it with training.packing=false"
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    backend, backend_why = attention.choose_backend("auto", device, dtype, config)
    processing = logprobs.logit_processing(config)
    final = [f"scale {processing.scale:g}"] if processing.scale != 1.0 else []
    final += [f"soft-cap {processing.softcap:g}"] if processing.softcap is not None else []
    return [
        f"  model {name_or_path}: {config.model_type} ({model_class.__name__})",
        f"    packed path: {packed}",
        f"    attention backend (auto, {str(dtype).removeprefix('torch.')} on {device.type}): "
        + (f"{backend} ({backend_why})" if exact else "plain causal SDPA on padded rows"),
        f"    final-logit processing in the fused log-probs: {', '.join(final) or 'none'}",
    ]


def doctor(model: str | None = None) -> str:
    """A multi-line report; the CLI prints it. MODEL: also report on that model (config only)."""
    device, cuda_line = _device()
    lines = [
        "basealign doctor",
        f"  basealign      {_version('basealign')}",
        f"  python         {platform.python_version()} ({platform.system()} {platform.machine()})",
        f"  torch          {torch.__version__} (CUDA {torch.version.cuda or 'none'})",
        f"  transformers   {_version('transformers')}",
        f"  trl            {_version('trl')}",
        f"  peft           {_version('peft')}",
        f"  flash-attn     {_flash_line()}",
        f"  triton         {_version('triton')}",
        f"  CUDA available {cuda_line}",
    ]
    varlen_ok, varlen_why = _importable("torch.nn.attention.varlen", "varlen_attn")
    flex_ok, flex_why = _importable("torch.nn.attention.flex_attention", "flex_attention")
    lines += [
        f"  torch.nn.attention.varlen importable: {_yes(varlen_ok, varlen_why)}",
        f"  FlexAttention importable:             {_yes(flex_ok, flex_why)}",
    ]
    try:
        backend, why = attention.choose_backend("auto", device, torch.bfloat16)
        backend_line = f"{backend} ({why})"
    except ValueError as err:  # pragma: no cover - "auto" never raises today
        backend_line = f"none ({err})"
    lines += [
        f"  attention backend (auto, bfloat16 on {device.type}): {backend_line}",
        f"  log-prob path: {_logprob_path(device)}",
    ]
    if model is not None:
        lines += model_report(model, device)
    return "\n".join(lines)
