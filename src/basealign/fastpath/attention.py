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
"""

from __future__ import annotations

import functools
import importlib.util
import inspect

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


def flash_attn_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def torch_varlen_available() -> bool:
    return importlib.util.find_spec("torch.nn.attention.varlen") is not None


def choose_backend(requested: str, device: torch.device, dtype: torch.dtype) -> tuple[str, str]:
    """(backend, why) for a recipe's `model.attn_implementation`."""
    half = dtype in (torch.float16, torch.bfloat16)
    if requested != "auto":
        if requested in ("flash", "torch_varlen") and device.type != "cuda":
            raise ValueError(f"attn_implementation '{requested}' needs a CUDA device; use 'sdpa' or 'auto' on {device.type}")
        if requested == "flash" and not flash_attn_available():
            raise ValueError("attn_implementation 'flash' needs the flash-attn package (pip install flash-attn)")
        if requested in ("flash", "torch_varlen") and not half:
            raise ValueError(f"attn_implementation '{requested}' needs bfloat16 or float16 weights")
        return requested, "set by the recipe"
    if device.type != "cuda":
        return "sdpa", f"{device.type} device: SDPA with an explicit prefix-sharing mask"
    if not half:
        return "flex", "CUDA with float32 weights: flash kernels need fp16/bf16, FlexAttention does not"
    if flash_attn_available():
        return "flash", "CUDA with the flash-attn package installed"
    if torch_varlen_available():
        return "torch_varlen", "CUDA without flash-attn: PyTorch's own varlen flash kernels"
    return "flex", "CUDA without flash-attn or torch varlen: FlexAttention block mask"


def packed_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """transformers attention signature: q [B, H, T, D], k/v [B, Hkv, T, D] -> ([B, T, H, D], None)."""
    layout: AttentionLayout | None = kwargs.get("packed_layout")
    if layout is None:
        return _plain_causal(query, key, value, attention_mask, dropout, scaling)
    if dropout:
        raise ValueError("attention dropout is not supported on the packed path; set it to 0 in the model config")
    if query.shape[0] != 1:
        raise ValueError("a packed row has batch size 1")
    backend = layout.backend
    softcap = kwargs.get("softcap")  # Gemma-2 style logit soft-capping
    if softcap is not None and backend == "torch_varlen":
        raise ValueError("this model soft-caps attention logits, which torch varlen does not support; use flash or flex")
    if backend == "sdpa":
        out = _sdpa_masked(query, key, value, layout, scaling, softcap)
    elif backend == "flex":
        out = _flex(query, key, value, layout, scaling, softcap)
    else:
        # varlen kernels take [T, H, D]
        q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))
        if layout.kv_index is not None:
            k, v = k.index_select(0, layout.kv_index), v.index_select(0, layout.kv_index)
        if backend == "flash":
            out = _flash(q, k, v, layout, scaling, softcap)
        elif backend == "torch_varlen":
            out = _torch_varlen(q, k, v, layout, scaling)
        elif backend == "varlen_cpu":
            out = _varlen_cpu(q, k, v, layout, scaling, softcap)
        else:
            raise ValueError(f"unknown attention backend {backend!r}; known: {', '.join(BACKENDS)}")
        return out.unsqueeze(0), None
    return out.transpose(1, 2).contiguous(), None


def _repeat_kv(t: torch.Tensor, n_rep: int) -> torch.Tensor:
    return t if n_rep == 1 else t.repeat_interleave(n_rep, dim=-3)


def _plain_causal(query, key, value, attention_mask, dropout, scaling):
    n_rep = query.shape[1] // key.shape[1]
    key, value = _repeat_kv(key, n_rep), _repeat_kv(value, n_rep)
    if isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 4:
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling)
    else:
        out = F.scaled_dot_product_attention(query, key, value, is_causal=query.shape[2] > 1, dropout_p=dropout, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


def allowed(layout: AttentionLayout, q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
    """The layout's mask rule: same document, causal, and rejected never sees chosen."""
    same_doc = layout.doc_ids[q_idx] == layout.doc_ids[kv_idx]
    causal = kv_idx <= q_idx
    crosses = (layout.branch[q_idx] == REJECTED) & (layout.branch[kv_idx] == CHOSEN)
    return same_doc & causal & ~crosses


def _attend(query, key, value, mask, scaling, softcap):
    """SDPA, or the same computation written out when logits are soft-capped."""
    if softcap is None:
        return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = torch.tanh(query @ key.transpose(-1, -2) * (scale / softcap)) * softcap
    scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(-1, dtype=torch.float32).to(query.dtype) @ value


def document_blocks(layout: AttentionLayout) -> list[tuple[int, int, torch.Tensor]]:
    """(start, end, [L, L] mask) per document: tokens never attend across documents, so
    SDPA over each block does the [T, T] masked computation without its T^2 cost."""
    if "blocks" not in layout.cache:
        d = layout.doc_ids
        starts = [0] + (torch.nonzero(d[1:] != d[:-1]).flatten() + 1).tolist()
        bounds = list(zip(starts, starts[1:] + [d.numel()]))
        blocks = []
        for a, b in bounds:
            t = torch.arange(a, b, device=d.device)
            blocks.append((a, b, allowed(layout, t[:, None], t[None, :])))
        layout.cache["blocks"] = blocks
    return layout.cache["blocks"]


def _sdpa_masked(query, key, value, layout, scaling, softcap=None):
    n_rep = query.shape[1] // key.shape[1]
    key, value = _repeat_kv(key, n_rep), _repeat_kv(value, n_rep)
    outs = [
        _attend(query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], mask, scaling, softcap)
        for a, b, mask in document_blocks(layout)
    ]
    return torch.cat(outs, dim=2)


def _flex(query, key, value, layout, scaling, softcap=None):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    if "block_mask" not in layout.cache:
        def mask_mod(b, h, q_idx, kv_idx):
            return allowed(layout, q_idx, kv_idx)

        T = query.shape[2]
        layout.cache["block_mask"] = create_block_mask(mask_mod, None, None, T, T, device=query.device.type)
    block_mask = layout.cache["block_mask"]
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


def _flash(q, k, v, layout, scaling, softcap=None):
    from flash_attn import flash_attn_varlen_func

    return flash_attn_varlen_func(
        q, k, v, layout.cu_seqlens_q, layout.cu_seqlens_k, layout.max_seqlen_q, layout.max_seqlen_k,
        softmax_scale=scaling, causal=True,  # flash-attn >= 2.1 aligns causal bottom-right
        softcap=softcap or 0.0,
    )


@functools.cache
def _varlen_attn_params() -> frozenset[str]:
    # read once: the attention function runs for every layer of every forward
    from torch.nn.attention.varlen import varlen_attn

    return frozenset(inspect.signature(varlen_attn).parameters)


def _torch_varlen(q, k, v, layout, scaling):
    from torch.nn.attention.varlen import varlen_attn

    params = _varlen_attn_params()
    # torch >= 2.12 spells causal as window_size=(-1, 0); earlier releases as is_causal=True.
    # Either way it runs the flash kernel, whose causal mask is aligned bottom-right when a
    # document has fewer queries than keys (R against P R).
    causal = {"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True}
    if q.shape[1] != k.shape[1]:
        if "enable_gqa" in params:
            causal["enable_gqa"] = True
        else:
            k, v = (t.repeat_interleave(q.shape[1] // k.shape[1], dim=1) for t in (k, v))
    return varlen_attn(
        q, k, v, layout.cu_seqlens_q, layout.cu_seqlens_k, layout.max_seqlen_q, layout.max_seqlen_k,
        scale=scaling, **causal,
    )


def _varlen_cpu(q, k, v, layout, scaling, softcap=None):
    """Varlen semantics with SDPA, one document at a time (bottom-right causal)."""
    n_rep = q.shape[1] // k.shape[1]
    outs = []
    cq, ck = layout.cu_seqlens_q.tolist(), layout.cu_seqlens_k.tolist()
    for (q0, q1), (k0, k1) in zip(zip(cq, cq[1:]), zip(ck, ck[1:])):
        qd, kd, vd = q[q0:q1].transpose(0, 1), k[k0:k1].transpose(0, 1), v[k0:k1].transpose(0, 1)
        lq, lk = q1 - q0, k1 - k0
        mask = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril(diagonal=lk - lq)
        od = _attend(qd, _repeat_kv(kd, n_rep), _repeat_kv(vd, n_rep), mask, scaling, softcap)
        outs.append(od.transpose(0, 1))
    return torch.cat(outs, dim=0)
