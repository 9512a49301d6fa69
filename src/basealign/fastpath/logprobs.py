"""Fused log-probs: per-token log-probs of response tokens without [tokens, vocab] logits.

The projection through the LM head runs in tiles with an online logsumexp, forward and
backward, using TRL's maintained `ChunkedLogProbFunction` (Triton on CUDA, torch ops
elsewhere). If that import ever moves, a checkpointed chunked fallback keeps the same
contract. Only the hidden states that predict a response token are projected.

The logits get the model's own final processing, read from its config as TRL's
`add_fused_lm_head` does: a scale (Cohere's `logit_scale` multiplies, Granite's
`logits_scaling` divides), then soft-capping `cap * tanh(z / cap)` (Gemma-2/3's
`final_logit_softcapping`). Every implementation applies the same `LogitProcessing`.

`enable_logprob_forward(model)` wraps one model *instance*'s forward (no class is patched)
so `model(..., logprob_targets=targets)` returns those per-token log-probs; the call goes
through PEFT and DDP wrappers like any forward, and without the keyword the original
forward runs unchanged (generation, saving).
"""

from __future__ import annotations

import types
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from basealign.errors import BasealignError
from basealign.fastpath.packing import LogprobTargets

VOCAB_CHUNK = 4096  # vocabulary columns per projection tile
TOKEN_CHUNK = 1024  # tokens per tile in the fallback

try:  # the maintained implementation
    from trl.kernels.chunked_logprob import ChunkedLogProbFunction as _TrlChunkedLogProb
except ImportError:  # pragma: no cover - depends on the installed trl
    _TrlChunkedLogProb = None


@dataclass(frozen=True)
class LogitProcessing:
    """What a model does to `hidden @ W.T + b` before its softmax: scale, then soft-cap."""

    scale: float = 1.0
    softcap: float | None = None

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if self.scale != 1.0:
            logits = logits * self.scale
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


def logit_processing(config) -> LogitProcessing:
    """The final-logit processing of a transformers config (its text config for multimodal ones)."""
    text = config.get_text_config()
    scale = getattr(text, "logit_scale", None)  # Cohere: logits * logit_scale (None on MPT: unscaled)
    for multiplier in ("output_multiplier", "lm_head_multiplier"):  # Muse Glimmer, Falcon-H1 multiply
        if scale is None:
            scale = getattr(text, multiplier, None)
    if scale is None and getattr(text, "logits_scaling", None) is not None:
        # Granite and MiniCPM3 divide by logits_scaling; HyperCLOVA X multiplies (as TRL reads it)
        scale = text.logits_scaling if text.model_type == "hyperclovax" else 1.0 / text.logits_scaling
    return LogitProcessing(1.0 if scale is None else float(scale), getattr(text, "final_logit_softcapping", None))


def token_logprobs(hidden: torch.Tensor, lm_head: torch.nn.Module, targets: torch.Tensor, implementation: str = "auto",
                   processing: LogitProcessing = LogitProcessing()) -> torch.Tensor:
    """log softmax(processing(hidden @ W.T + b))[targets] for hidden [N, H], targets [N] -> [N] (float32)."""
    weight, bias = lm_head.weight, getattr(lm_head, "bias", None)
    if implementation == "auto":
        implementation = "trl" if _TrlChunkedLogProb is not None else "chunked"
    if implementation == "trl":
        logprobs, *_ = _TrlChunkedLogProb.apply(
            hidden, weight, bias, targets, 1.0, VOCAB_CHUNK, processing.softcap, processing.scale, ()
        )
        return logprobs
    if implementation == "chunked":
        return _chunked_checkpointed(hidden, weight, bias, targets, processing)
    if implementation == "dense":  # materializes the logits; the oracle for tests
        logits = processing.apply(torch.nn.functional.linear(hidden, weight, bias).float())
        return logits.log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1)
    raise ValueError(f"unknown log-prob implementation {implementation!r}")


def call_as_forward(module: torch.nn.Module, fn, *args):
    """Run FN(*ARGS) as MODULE's forward for one call. Sharding wrappers (FSDP2, DeepSpeed
    ZeRO-3) gather a module's weights in its forward hooks and reduce its gradients from
    there; the fused head reads `lm_head.weight` directly, so it must run inside that call."""

    def forward(*call_args):
        del module.forward  # the class's forward again, before anything else can call it
        return fn(*call_args)

    module.forward = forward
    try:
        return module(*args)
    finally:
        module.__dict__.pop("forward", None)  # if the hooks failed before our forward ran


def _tile_logprobs(hidden, weight, bias, targets, processing):
    logits = processing.apply(torch.nn.functional.linear(hidden, weight, bias).float())
    return logits.gather(-1, targets[:, None]).squeeze(-1) - logits.logsumexp(-1)


def _chunked_checkpointed(hidden, weight, bias, targets, processing):
    # Each token tile's logits are recomputed in backward instead of kept: memory is one tile.
    pieces = [
        checkpoint(_tile_logprobs, hidden[i : i + TOKEN_CHUNK], weight, bias, targets[i : i + TOKEN_CHUNK], processing,
                   use_reentrant=False)
        for i in range(0, hidden.shape[0], TOKEN_CHUNK)
    ]
    return torch.cat(pieces) if pieces else hidden.new_zeros(0, dtype=torch.float32)


def sequence_sums(token_logps: torch.Tensor, targets: LogprobTargets, num_sequences: int) -> torch.Tensor:
    """Sum per-token log-probs into [num_sequences] (chosen of pair i at i, rejected at B + i)."""
    out = token_logps.new_zeros(num_sequences)
    return out.index_add(0, targets.sequence_index, token_logps)


def check_output_head(model) -> None:
    """The fused log-probs read the output head's weight directly, so an adapter on it (or on
    the input embeddings it is tied to) would be silently ignored: refuse instead."""
    head = model.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear):
        raise BasealignError(
            f"the output head is wrapped ({type(head).__name__}: lm_head in lora.target_modules or modules_to_save), "
            "which the fused log-probs cannot see; list the modules without lm_head, e.g. lora.target_modules=all-linear"
        )
    tied = getattr(model.config.get_text_config(), "tie_word_embeddings", False)
    embeddings = model.get_input_embeddings()
    if tied and not isinstance(embeddings, torch.nn.Embedding):
        raise BasealignError(
            f"the output head is tied to the input embeddings, which are wrapped ({type(embeddings).__name__}); "
            "leave embed_tokens out of lora.target_modules"
        )


def _backbone_and_head(model):
    check_output_head(model)
    return model.base_model, model.get_output_embeddings()


def enable_logprob_forward(model, implementation: str = "auto") -> None:
    """Wrap `model.forward` (this instance only) to accept `logprob_targets`."""
    if getattr(model, "_basealign_logprobs", None) is not None:
        model._basealign_logprobs = implementation
        return

    def forward(self, *args, logprob_targets: LogprobTargets | None = None, **kwargs):
        if logprob_targets is None:
            # Looked up on the class each call, so copies of the model (the frozen
            # reference of a full fine-tune) run their own weights.
            return type(self).forward(self, *args, **kwargs)
        for unused in ("labels", "output_attentions", "output_hidden_states", "return_dict"):
            kwargs.pop(unused, None)
        kwargs["use_cache"] = False
        from trl.trainer.utils import maybe_gather_lm_head_ctx

        backbone, head = _backbone_and_head(self)
        hidden = backbone(*args, **kwargs).last_hidden_state
        hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, logprob_targets.source_index)
        implementation, processing = self._basealign_logprobs, logit_processing(self.config)

        def fused_head(hidden: torch.Tensor) -> torch.Tensor:
            # Inside the head's forward ZeRO-3's hooks have gathered it already (then TRL's context
            # does nothing); the context covers a head those hooks left partitioned, and TRL's
            # kernel enters it again for its backward.
            with maybe_gather_lm_head_ctx(head.weight, getattr(head, "bias", None)):
                return token_logprobs(hidden.to(head.weight.device), head, logprob_targets.target_ids, implementation,
                                      processing)

        return call_as_forward(head, fused_head, hidden)

    model._basealign_logprobs = implementation
    model.forward = types.MethodType(forward, model)
