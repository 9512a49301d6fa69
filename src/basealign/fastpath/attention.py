"""Attention for the packed, prefix-shared layout, registered with transformers.

One attention function, `basealign`, is registered through `AttentionInterface`. When the
forward kwargs carry a `packed_layout` (an AttentionLayout), it runs that layout's backend:

  flash         flash-attn's `flash_attn_varlen_func` (CUDA, fp16/bf16)
  torch_varlen  `torch.nn.attention.varlen.varlen_attn`, PyTorch's own flash kernels (CUDA)
  flex          FlexAttention with a block mask built from the layout
  sdpa          SDPA with an explicit boolean mask: the reference (any device); run one
                document block at a time, since documents never attend to each other
  varlen_cpu    the varlen streams run document by document with SDPA; tests use it to
                check the cu_seqlens / kv_index construction the CUDA kernels consume

Without a layout it is plain causal SDPA, which is exact for right-padded rows (the
padded reference path) because real tokens never look right. transformers builds no
mask for a custom attention name, so no [T, T] mask is made for packed rows.

The varlen backends see each pair as two documents: `P C` (causal) and `R` queries
against `P R` keys (causal aligned bottom-right, i.e. R's first query sees all of P).

Sliding windows (the `sliding_window` kwarg transformers passes to a sliding layer) count
positions within a branch, as transformers does for `P C` and `P R` on their own: a token
at position p sees keys at positions > p - window. Mask backends add that to the rule; the
varlen kernels get `window_size=(window - 1, 0)`, which bottom-right alignment turns into the
same band because a document's key index equals its position.

`packed_support(config)` says, from a model's config and class alone, whether this layout
is exact for it: every token mixer must be attention that goes through this function.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import re

import torch
import torch.nn.functional as F

from basealign.fastpath.packing import CHOSEN, REJECTED, AttentionLayout

ATTENTION_NAME = "basealign"
BACKENDS = ("flash", "torch_varlen", "flex", "sdpa", "varlen_cpu")


def register() -> str:
    """Register the attention function with transformers (idempotent); returns its name."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, packed_attention)
    return ATTENTION_NAME


def flash_attn_status() -> tuple[bool, str]:
    """(usable, why): installed is not enough, a flash-attn built for another torch fails on import."""
    try:
        importlib.import_module("flash_attn").flash_attn_varlen_func  # noqa: B018 - the import is the probe
    except ModuleNotFoundError as err:
        if err.name == "flash_attn":
            return False, "the flash-attn package is not installed"
        return False, f"flash-attn is installed but does not import ({_first_line(err)})"
    except (ImportError, OSError, AttributeError) as err:
        return False, f"flash-attn is installed but does not import ({_first_line(err)})"
    return True, "flash-attn imports"


def _first_line(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def torch_varlen_available() -> bool:
    return importlib.util.find_spec("torch.nn.attention.varlen") is not None


def model_windows(config) -> set[int]:
    """The sliding windows a config's layers use (empty: full attention everywhere)."""
    window = getattr(config, "sliding_window", None)
    if not window or getattr(config, "use_sliding_window", True) is False:
        return set()
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and "sliding_attention" not in layer_types:
        return set()
    return {window}


def _torch_varlen_gap(config) -> str | None:
    """What a model needs that torch varlen cannot do, or None."""
    if config is None:
        return None
    if getattr(config, "attn_logit_softcapping", None) is not None:
        return "the model soft-caps attention logits, which torch varlen does not support"
    if model_windows(config) and "window_size" not in _varlen_attn_params():
        return "the model has sliding windows, which this torch's varlen_attn (no window_size) cannot apply"
    return None


def choose_backend(requested: str, device: torch.device, dtype: torch.dtype, config=None) -> tuple[str, str]:
    """(backend, why) for a recipe's `model.attn_implementation` (CONFIG: the model's, when known)."""
    half = dtype in (torch.float16, torch.bfloat16)
    if requested != "auto":
        if requested in ("flash", "torch_varlen") and device.type != "cuda":
            raise ValueError(f"attn_implementation '{requested}' needs a CUDA device; use 'sdpa' or 'auto' on {device.type}")
        if requested == "flash":
            ok, why = flash_attn_status()
            if not ok:
                raise ValueError(f"attn_implementation 'flash' needs a working flash-attn: {why}")
        if requested in ("flash", "torch_varlen") and not half:
            raise ValueError(f"attn_implementation '{requested}' needs bfloat16 or float16 weights")
        if requested == "torch_varlen" and _torch_varlen_gap(config):
            raise ValueError(f"attn_implementation 'torch_varlen': {_torch_varlen_gap(config)}; use flash or flex")
        return requested, "set by the recipe"
    if device.type != "cuda":
        return "sdpa", f"{device.type} device: SDPA with an explicit prefix-sharing mask"
    if not half:
        return "flex", "CUDA with float32 weights: flash kernels need fp16/bf16, FlexAttention does not"
    flash_ok, flash_why = flash_attn_status()
    if flash_ok:
        return "flash", "CUDA with the flash-attn package installed"
    gap = _torch_varlen_gap(config)
    if torch_varlen_available() and gap is None:
        return "torch_varlen", f"CUDA, {flash_why}: PyTorch's own varlen flash kernels"
    why = gap or "torch varlen is not available"
    return "flex", f"CUDA, {flash_why}, and {why}: FlexAttention block mask"


# Layer kinds the packed layout runs exactly; anything else in a config's layer list
# (conv, linear_attention, mamba, recurrent, chunked_attention, ...) mixes tokens another way.
EXACT_LAYER_KINDS = {"full_attention", "sliding_attention"}
_LAYER_LISTS = ("layer_types", "layers_block_type", "block_types")
# Config fields of token mixers that are not attention (state-space, convolution, linear
# attention, RWKV): such a mixer would carry state across the pairs of a packed row.
_MIXER_FIELD = re.compile(
    r"^(mamba|ssm|conv|linear_conv|linear_attn|linear_num|time_step)_|"
    r"^(state_size|ssm_state_size|conv_kernel|conv1d_width|conv_L_cache|attn_layer_period|attn_layer_indices|"
    r"hybrid_override_pattern|rescale_every|chunkwise_kernel)$"
)


def packed_support(config, model_class=None, modules=None) -> tuple[bool, str]:
    """(exact, why) for the packed layout on a model, from its config, and its class and
    modules when known (a skeleton on the meta device will do)."""
    text = config.get_text_config()
    if getattr(text, "is_encoder_decoder", False):
        return False, "an encoder-decoder model"
    kinds = set()
    for name in _LAYER_LISTS:
        value = getattr(text, name, None)
        if isinstance(value, (list, tuple)):
            kinds |= {str(kind) for kind in value}
    others = sorted(kinds - EXACT_LAYER_KINDS)
    if others:
        return False, f"it has layers of kind {', '.join(others)}, which the packed layout cannot keep apart per pair"
    mixers = sorted(k for k, v in text.to_dict().items() if _MIXER_FIELD.match(k) and v is not None and v is not False)
    if mixers:
        return False, f"its config describes a non-attention token mixer ({', '.join(mixers[:3])})"
    if getattr(text, "attention_chunk_size", None):
        return False, "chunked attention (attention_chunk_size)"
    if getattr(text, "use_bidirectional_attention", False):
        return False, "bidirectional attention"
    if getattr(text, "alibi", False) or getattr(text, "use_alibi", False):
        return False, "ALiBi position biases"
    if model_class is not None and not getattr(model_class, "_supports_attention_backend", False):
        return False, f"{model_class.__name__} does not run its attention through transformers' AttentionInterface"
    sinks = next((type(m).__name__ for m in modules or () if isinstance(getattr(m, "sinks", None), torch.Tensor)), None)
    if sinks:
        return False, f"attention sinks ({sinks}.sinks)"
    how = ["causal"]
    windows = model_windows(text)
    if windows:
        how.append(f"sliding windows of {', '.join(map(str, sorted(windows)))} masked by position within each branch")
    if getattr(text, "attn_logit_softcapping", None) is not None:
        how.append("attention soft-capping")
    return True, "every layer is attention through basealign's registered function: " + ", ".join(how)


def packed_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """transformers attention signature: q [B, H, T, D], k/v [B, Hkv, T, D] -> ([B, T, H, D], None)."""
    layout: AttentionLayout | None = kwargs.get("packed_layout")
    if layout is None:
        return _plain_causal(query, key, value, attention_mask, dropout, scaling, kwargs.get("softcap"),
                             kwargs.get("sliding_window"))
    if dropout:
        raise ValueError("attention dropout is not supported on the packed path; set it to 0 in the model config")
    if query.shape[0] != 1:
        raise ValueError("a packed row has batch size 1")
    if kwargs.get("s_aux") is not None:
        raise ValueError("attention sinks (s_aux) are not supported on the packed path; set training.packing=false")
    backend = layout.backend
    softcap = kwargs.get("softcap")  # Gemma-2 style logit soft-capping
    window = kwargs.get("sliding_window")  # set by transformers on sliding layers only
    if softcap is not None and backend == "torch_varlen":
        raise ValueError("this model soft-caps attention logits, which torch varlen does not support; use flash or flex")
    if backend == "sdpa":
        out = _sdpa_masked(query, key, value, layout, scaling, softcap, window)
    elif backend == "flex":
        out = _flex(query, key, value, layout, scaling, softcap, window)
    else:
        # varlen kernels take [T, H, D]
        q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))
        if layout.kv_index is not None:
            k, v = k.index_select(0, layout.kv_index), v.index_select(0, layout.kv_index)
        if backend == "flash":
            out = _flash(q, k, v, layout, scaling, softcap, window)
        elif backend == "torch_varlen":
            out = _torch_varlen(q, k, v, layout, scaling, window)
        elif backend == "varlen_cpu":
            out = _varlen_cpu(q, k, v, layout, scaling, softcap, window)
        else:
            raise ValueError(f"unknown attention backend {backend!r}; known: {', '.join(BACKENDS)}")
        return out.unsqueeze(0), None
    return out.transpose(1, 2).contiguous(), None


def _repeat_kv(t: torch.Tensor, n_rep: int) -> torch.Tensor:
    return t if n_rep == 1 else t.repeat_interleave(n_rep, dim=-3)


def _plain_causal(query, key, value, attention_mask, dropout, scaling, softcap=None, window=None):
    """Causal attention on whole rows, with the layer's window and soft-cap. transformers passes
    no mask to a custom attention name; right padding needs none (real tokens never look right)."""
    n_rep = query.shape[1] // key.shape[1]
    key, value = _repeat_kv(key, n_rep), _repeat_kv(value, n_rep)
    mask = _causal_band(query.shape[2], key.shape[2], window, query.device)
    if isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 4:  # a caller's own mask also applies
        mask = mask & (attention_mask if attention_mask.dtype == torch.bool else attention_mask == 0)
    out = _attend(query, key, value, mask, scaling, softcap, dropout)
    return out.transpose(1, 2).contiguous(), None


def _causal_band(n_q: int, n_k: int, window: int | None, device) -> torch.Tensor:
    """[n_q, n_k] causal mask aligned bottom-right (the last query sees every key), within WINDOW."""
    mask = torch.ones(n_q, n_k, dtype=torch.bool, device=device).tril(diagonal=n_k - n_q)
    return mask if window is None else mask.triu(diagonal=n_k - n_q - window + 1)


def mask_rule(layout: AttentionLayout, q_idx: torch.Tensor, kv_idx: torch.Tensor, window: int | None = None) -> torch.Tensor:
    """Whether query q_idx sees key kv_idx: same document, causal, rejected never sees chosen,
    and within a sliding window, fewer than WINDOW positions back in its own branch."""
    same_doc = layout.doc_ids[q_idx] == layout.doc_ids[kv_idx]
    causal = kv_idx <= q_idx
    crosses = (layout.branch[q_idx] == REJECTED) & (layout.branch[kv_idx] == CHOSEN)
    visible = same_doc & causal & ~crosses
    if window is not None:
        visible = visible & (layout.positions[q_idx] - layout.positions[kv_idx] < window)
    return visible


def _attend(query, key, value, mask, scaling, softcap, dropout=0.0):
    """SDPA, or the same computation written out when logits are soft-capped."""
    if softcap is None:
        return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = torch.tanh(query @ key.transpose(-1, -2) * (scale / softcap)) * softcap
    scores = scores.masked_fill(~mask, float("-inf"))
    probs = F.dropout(scores.softmax(-1, dtype=torch.float32).to(query.dtype), dropout)
    return probs @ value


def document_blocks(layout: AttentionLayout, window: int | None = None) -> list[tuple[int, int, torch.Tensor]]:
    """(start, end, [L, L] mask) per document: tokens never attend across documents, so
    SDPA over each block does the [T, T] masked computation without its T^2 cost."""
    if ("blocks", window) not in layout.cache:
        d = layout.doc_ids
        starts = [0] + (torch.nonzero(d[1:] != d[:-1]).flatten() + 1).tolist()
        bounds = list(zip(starts, starts[1:] + [d.numel()]))
        blocks = []
        for a, b in bounds:
            t = torch.arange(a, b, device=d.device)
            blocks.append((a, b, mask_rule(layout, t[:, None], t[None, :], window)))
        layout.cache["blocks", window] = blocks
    return layout.cache["blocks", window]


def _sdpa_masked(query, key, value, layout, scaling, softcap=None, window=None):
    n_rep = query.shape[1] // key.shape[1]
    key, value = _repeat_kv(key, n_rep), _repeat_kv(value, n_rep)
    outs = [
        _attend(query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], mask, scaling, softcap)
        for a, b, mask in document_blocks(layout, window)
    ]
    return torch.cat(outs, dim=2)


def _flex(query, key, value, layout, scaling, softcap=None, window=None):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    if ("block_mask", window) not in layout.cache:
        def mask_mod(b, h, q_idx, kv_idx):
            return mask_rule(layout, q_idx, kv_idx, window)

        T = query.shape[2]
        layout.cache["block_mask", window] = create_block_mask(mask_mod, None, None, T, T, device=query.device.type)
    block_mask = layout.cache["block_mask", window]
    n_rep = query.shape[1] // key.shape[1]
    score_mod = _softcap_score_mod(softcap) if softcap is not None else None
    fn = _compiled_flex() if query.is_cuda else flex_attention
    return fn(query, key, value, score_mod=score_mod, block_mask=block_mask, scale=scaling, enable_gqa=n_rep > 1)


def _softcap_score_mod(softcap: float):
    def score_mod(score, b, h, q_idx, kv_idx):
        return torch.tanh(score / softcap) * softcap

    return score_mod


_COMPILED_FLEX = None


def _compiled_flex():
    # FlexAttention is only fast compiled; compile once per process.
    global _COMPILED_FLEX
    if _COMPILED_FLEX is None:
        from torch.nn.attention.flex_attention import flex_attention

        _COMPILED_FLEX = torch.compile(flex_attention, dynamic=True)
    return _COMPILED_FLEX


def _window_size(window: int | None) -> tuple[int, int]:
    # flash semantics: query i sees keys i - left .. i + right; transformers' window W sees W - 1 back
    return (-1, 0) if window is None else (window - 1, 0)


def _flash(q, k, v, layout, scaling, softcap=None, window=None):
    from flash_attn import flash_attn_varlen_func

    return flash_attn_varlen_func(
        q, k, v, layout.cu_seqlens_q, layout.cu_seqlens_k, layout.max_seqlen_q, layout.max_seqlen_k,
        softmax_scale=scaling, causal=True,  # flash-attn >= 2.1 aligns causal bottom-right
        softcap=softcap or 0.0, window_size=_window_size(window),
    )


@functools.cache
def _varlen_attn_params() -> frozenset[str]:
    # read once: the attention function runs for every layer of every forward
    from torch.nn.attention.varlen import varlen_attn

    return frozenset(inspect.signature(varlen_attn).parameters)


def _torch_varlen(q, k, v, layout, scaling, window=None):
    from torch.nn.attention.varlen import varlen_attn

    params = _varlen_attn_params()
    # torch >= 2.12 spells causal as window_size=(-1, 0); earlier releases as is_causal=True.
    # Either way it runs the flash kernel, whose causal mask is aligned bottom-right when a
    # document has fewer queries than keys (R against P R).
    if "window_size" in params:
        causal = {"window_size": _window_size(window)}
    elif window is None:
        causal = {"is_causal": True}
    else:
        raise ValueError("this torch's varlen_attn has no window_size for sliding windows; use flash or flex")
    if q.shape[1] != k.shape[1]:
        if "enable_gqa" in params:
            causal["enable_gqa"] = True
        else:
            k, v = (t.repeat_interleave(q.shape[1] // k.shape[1], dim=1) for t in (k, v))
    return varlen_attn(
        q, k, v, layout.cu_seqlens_q, layout.cu_seqlens_k, layout.max_seqlen_q, layout.max_seqlen_k,
        scale=scaling, **causal,
    )


def _varlen_cpu(q, k, v, layout, scaling, softcap=None, window=None):
    """Varlen semantics with SDPA, one document at a time (bottom-right causal, then the window band)."""
    n_rep = q.shape[1] // k.shape[1]
    outs = []
    cq, ck = layout.cu_seqlens_q.tolist(), layout.cu_seqlens_k.tolist()
    for (q0, q1), (k0, k1) in zip(zip(cq, cq[1:]), zip(ck, ck[1:])):
        qd, kd, vd = q[q0:q1].transpose(0, 1), k[k0:k1].transpose(0, 1), v[k0:k1].transpose(0, 1)
        mask = _causal_band(q1 - q0, k1 - k0, window, q.device)
        od = _attend(qd, _repeat_kv(kd, n_rep), _repeat_kv(vd, n_rep), mask, scaling, softcap)
        outs.append(od.transpose(0, 1))
    return torch.cat(outs, dim=0)
