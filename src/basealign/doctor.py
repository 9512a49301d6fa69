"""`basealign doctor`: versions, the device, and which attention / log-prob path would run.

Nothing here loads a model or touches the network; every probe that can fail says so in
its line instead of raising.
"""

from __future__ import annotations

import importlib
import platform

import torch

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


def doctor() -> str:
    """A multi-line report; the CLI prints it."""
    device, cuda_line = _device()
    lines = [
        "basealign doctor",
        f"  basealign      {_version('basealign')}",
        f"  python         {platform.python_version()} ({platform.system()} {platform.machine()})",
        f"  torch          {torch.__version__} (CUDA {torch.version.cuda or 'none'})",
        f"  transformers   {_version('transformers')}",
        f"  trl            {_version('trl')}",
        f"  peft           {_version('peft')}",
        f"  flash-attn     {_version('flash-attn') if attention.flash_attn_available() else 'not installed'}",
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
    return "\n".join(lines)
