"""Every family basealign accepts, against transformers itself.

Oracle: for each pair, `model(input_ids=P+C).logits.float().log_softmax(-1)` gathered on the
chosen tokens, and the same for `P R` -- one unpadded sequence per call, transformers' own
eager attention (which applies soft-capping and sliding windows) and the model's own
final-logit processing. It shares no code with basealign.

Values are driven where they matter: the output head is scaled so logits reach tens (then
Gemma's final soft-capping at 30 and Cohere's / Granite's logit scales change every
log-prob), and sliding windows of 8 are far shorter than the pairs (up to 60 tokens).
Tolerance: 1e-5 relative on per-sequence log-prob sums (fp32); LoRA gradients
max |g - g_oracle| <= 1e-5 * max |g_oracle| per adapter tensor.
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch

from basealign.fastpath import attention
from basealign.fastpath.logprobs import LogitProcessing, enable_logprob_forward, logit_processing
from basealign.fastpath.packing import collate_packed, collate_padded
from basealign.training.step import sequence_logps
from conftest import assert_same_adapter_gradients, random_records, with_seeded_lora

RTOL = 1e-5
WINDOW = 8
HEAD_SCALE = 150.0  # random-init logits are ~0.2; this puts them in the tens
COMMON = dict(vocab_size=260, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2)


def _config(family: str):
    import transformers as tf

    gemma = dict(COMMON, head_dim=8, query_pre_attn_scalar=8)
    return {
        "llama": lambda: tf.LlamaConfig(**COMMON),
        "mistral-window": lambda: tf.MistralConfig(**COMMON, sliding_window=WINDOW),
        "qwen2-window": lambda: tf.Qwen2Config(**COMMON, use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1),
        "qwen3": lambda: tf.Qwen3Config(**COMMON, head_dim=8),
        "gemma": lambda: tf.GemmaConfig(**gemma),
        "gemma2": lambda: tf.Gemma2Config(**gemma, sliding_window=WINDOW, attn_logit_softcapping=1.0,
                                          final_logit_softcapping=30.0),
        "gemma3": lambda: tf.Gemma3TextConfig(**gemma, sliding_window=WINDOW, final_logit_softcapping=30.0,
                                              layer_types=["sliding_attention", "full_attention"]),
        "phi3": lambda: tf.Phi3Config(**COMMON, sliding_window=WINDOW),
        "olmo2": lambda: tf.Olmo2Config(**COMMON),
        "cohere": lambda: tf.CohereConfig(**COMMON, logit_scale=0.5),
        "cohere2-window": lambda: tf.Cohere2Config(**COMMON, logit_scale=0.5, sliding_window=WINDOW,
                                                   layer_types=["sliding_attention", "full_attention"]),
        "granite": lambda: tf.GraniteConfig(**COMMON, logits_scaling=4.0, embedding_multiplier=2.0,
                                            residual_multiplier=0.5, attention_multiplier=0.2),
    }[family]()


FAMILIES = ("llama", "mistral-window", "qwen2-window", "qwen3", "gemma", "gemma2", "gemma3", "phi3", "olmo2", "cohere",
            "cohere2-window", "granite")
PROCESSED = {"gemma2", "gemma3", "cohere", "cohere2-window", "granite"}  # final-logit processing matters
WINDOWED = {"mistral-window", "qwen2-window", "gemma2", "gemma3", "phi3", "cohere2-window"}


@functools.cache
def _base(family: str):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(100 + FAMILIES.index(family))
    model = AutoModelForCausalLM.from_config(_config(family), dtype=torch.float32)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(HEAD_SCALE)  # tied heads scale the embeddings too; norms absorb it
    return model.eval()


def _records():
    return random_records(6, seed=31, prompt=(1, 40), response=(1, 20))


def _transformers_model(family: str):
    model = copy.deepcopy(_base(family))
    model.set_attn_implementation("eager")  # the one transformers attention with soft-capping and windows everywhere
    return model


def _fast_model(family: str):
    model = copy.deepcopy(_base(family))
    model.set_attn_implementation(attention.register())
    enable_logprob_forward(model)
    return model


def transformers_logps(model, records) -> torch.Tensor:
    """[2B]: chosen sums of every pair, then rejected, one unpadded forward per sequence."""
    sums = []
    for response in ("chosen_ids", "rejected_ids"):
        for rec in records:
            ids = torch.tensor([rec["prompt_ids"] + rec[response]])
            logp = model(input_ids=ids).logits.float().log_softmax(-1)[0]
            p = len(rec["prompt_ids"])
            targets = ids[0, p:]
            sums.append(logp[p - 1 : -1].gather(-1, targets[:, None]).sum())
    return torch.stack(sums)


@functools.cache
def _oracle(family: str) -> torch.Tensor:
    with torch.no_grad():
        return transformers_logps(_transformers_model(family), _records())


def test_the_oracle_is_driven_hard():
    """Logits in the tens, pairs longer than the window: the cases where errors show."""
    records = _records()
    assert max(len(r["prompt_ids"]) + max(len(r["chosen_ids"]), len(r["rejected_ids"])) for r in records) > 4 * WINDOW
    with torch.no_grad():
        logits = _transformers_model("llama")(input_ids=torch.tensor([records[2]["prompt_ids"]])).logits
    assert logits.abs().max() > 20


@pytest.mark.parametrize("backend", ["sdpa", "varlen_cpu", "flex", "padded"])
@pytest.mark.parametrize("family", FAMILIES)
def test_logps_match_transformers(family, backend):
    records = _records()
    batch = collate_padded(records) if backend == "padded" else collate_packed(records, backend=backend)
    with torch.no_grad():
        got = sequence_logps(_fast_model(family), batch)
    torch.testing.assert_close(got, _oracle(family), rtol=RTOL, atol=0)


@pytest.mark.parametrize("family", sorted(PROCESSED))
def test_final_logit_processing_is_what_makes_these_match(family):
    """Without the config's scale / soft-cap the same forward is far off: the oracle has teeth."""
    model = _fast_model(family)
    assert logit_processing(model.config) != LogitProcessing()
    model.config.final_logit_softcapping = None
    for name in ("logit_scale", "logits_scaling"):
        if hasattr(model.config, name):
            setattr(model.config, name, 1.0)
    with torch.no_grad():
        got = sequence_logps(model, collate_packed(_records()))
    assert ((got - _oracle(family)).abs() / _oracle(family).abs()).max() > 1e-2


@pytest.mark.parametrize("family", sorted(WINDOWED))
def test_windows_shorter_than_pairs_change_the_result(family):
    """The same model with full attention differs from the oracle: the windows are exercised."""
    model = _transformers_model(family)
    model.config.sliding_window = 10_000
    for layer in model.model.layers:
        if getattr(layer.self_attn, "sliding_window", None):
            layer.self_attn.sliding_window = 10_000
    with torch.no_grad():
        unwindowed = transformers_logps(model, _records())
    assert ((unwindowed - _oracle(family)).abs() / _oracle(family).abs()).max() > 10 * RTOL


@pytest.mark.parametrize("family", ["gemma2", "gemma3", "cohere2-window"])
def test_lora_gradients_match_transformers(family):
    records = random_records(4, seed=5, prompt=(10, 30), response=(1, 12))
    fast, oracle = with_seeded_lora(_fast_model(family)), with_seeded_lora(_transformers_model(family))
    weights = torch.linspace(-1.0, 1.0, 2 * len(records))  # any differentiable use of every sum
    (sequence_logps(fast, collate_packed(records)) * weights).sum().backward()
    (transformers_logps(oracle, records) * weights).sum().backward()
    assert_same_adapter_gradients(fast, oracle, RTOL)


def _flash_semantics_kernel(q, k, v, cu_q, cu_k, scale, window_size, softcap=0.0):
    """What flash-attn's and torch's varlen kernels document: per document, query i (aligned to
    the end of the keys) sees keys i - left .. i + right; -1 means unbounded."""
    left, right = window_size
    k, v = (t.repeat_interleave(q.shape[1] // k.shape[1], dim=1) for t in (k, v))
    outs = []
    for q0, q1, k0, k1 in zip(cu_q.tolist(), cu_q.tolist()[1:], cu_k.tolist(), cu_k.tolist()[1:]):
        i = torch.arange(q1 - q0)[:, None] + (k1 - k0) - (q1 - q0)
        j = torch.arange(k1 - k0)[None, :]
        visible = ((j <= i + right) if right >= 0 else True) & ((j >= i - left) if left >= 0 else True)
        scores = q[q0:q1].transpose(0, 1) @ k[k0:k1].permute(1, 2, 0) * scale
        if softcap:
            scores = torch.tanh(scores / softcap) * softcap
        probs = scores.masked_fill(~visible, float("-inf")).softmax(-1)
        outs.append((probs @ v[k0:k1].transpose(0, 1)).transpose(0, 1))
    return torch.cat(outs)


@pytest.mark.parametrize("backend,family", [("flash", "mistral-window"), ("flash", "gemma2"),
                                            ("torch_varlen", "mistral-window"), ("torch_varlen", "gemma3")])
def test_cuda_kernels_get_the_window_they_need(backend, family, monkeypatch):
    """The CUDA kernels cannot run here: stand-ins with their documented window semantics check
    that basealign hands them window_size = (window - 1, 0), against transformers itself."""
    import sys
    import types

    model, want = _fast_model(family), _oracle(family)  # built before transformers sees the stand-ins
    windows = []
    if backend == "flash":
        def flash_attn_varlen_func(q, k, v, cu_q, cu_k, max_q, max_k, softmax_scale=None, causal=False, softcap=0.0,
                                   window_size=(-1, -1)):
            assert causal
            windows.append(window_size)
            return _flash_semantics_kernel(q, k, v, cu_q, cu_k, softmax_scale, (window_size[0], 0), softcap)

        monkeypatch.setitem(sys.modules, "flash_attn", types.SimpleNamespace(flash_attn_varlen_func=flash_attn_varlen_func))
    else:
        import torch.nn.attention.varlen as varlen_module

        def varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, -1), enable_gqa=False):
            windows.append(window_size)
            return _flash_semantics_kernel(q, k, v, cu_q, cu_k, scale, window_size)

        monkeypatch.setattr(varlen_module, "varlen_attn", varlen_attn)
    with torch.no_grad():
        got = sequence_logps(model, collate_packed(_records(), backend=backend))
    assert (WINDOW - 1, 0) in windows
    torch.testing.assert_close(got, want, rtol=RTOL, atol=0)
