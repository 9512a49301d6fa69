"""The packed, prefix-shared fast path equals the padded, unshared forward.

Oracle: a plain transformers forward (SDPA attention, padded rows P+C and P+R, full
logits, log_softmax) written independently of basealign's packer and log-prob code.
Tolerance: 1e-5 relative on per-pair log-prob sums (fp32), and for LoRA gradients
max |g_fast - g_oracle| <= 1e-5 * max |g_oracle| per parameter tensor.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from basealign.fastpath import attention
from basealign.fastpath.logprobs import enable_logprob_forward, token_logprobs
from basealign.models.loading import reference_context
from basealign.fastpath.packing import collate_packed, collate_padded, group_by_token_budget, pair_length
from basealign.models.tiny import build_tiny_model
from basealign.training.step import sequence_logps
from conftest import assert_same_adapter_gradients, random_records, with_seeded_lora

FAMILIES = ("tiny-llama", "tiny-mistral", "tiny-qwen2")
BACKENDS = ("sdpa", "varlen_cpu", "flex")
RTOL = 1e-5


def oracle_logps(model, records) -> torch.Tensor:
    """[2B] sums: chosen of every pair, then rejected, via padded HF forward and full logits."""
    rows = [r["prompt_ids"] + r["chosen_ids"] for r in records] + [r["prompt_ids"] + r["rejected_ids"] for r in records]
    starts = [len(r["prompt_ids"]) for r in records] * 2
    width = max(map(len, rows))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
    logits = model(input_ids=ids, attention_mask=mask).logits.float()
    logp = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    out = []
    for i, row in enumerate(rows):
        out.append(logp[i, starts[i] - 1 : len(row) - 1].sum())
    return torch.stack(out)


def _fast_model(base):
    model = copy.deepcopy(base)
    model.config._attn_implementation = attention.register()
    enable_logprob_forward(model)
    return model


def _oracle_model(base):
    model = copy.deepcopy(base)
    # transformers' SDPA refuses soft-capped logits; its eager attention is the oracle there
    softcap = getattr(model.config, "attn_logit_softcapping", None)
    model.config._attn_implementation = "eager" if softcap else "sdpa"
    return model


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_policy_and_reference_logps_match_padded_oracle(family, backend):
    base = build_tiny_model(family, seed=1)
    records = random_records(9, seed=11, prompt=(1, 60), response=(1, 30))
    fast = with_seeded_lora(_fast_model(base))
    oracle = _oracle_model(base)
    oracle_policy = with_seeded_lora(_oracle_model(base))  # same generator -> same adapter
    batch = collate_packed(records, backend=backend)
    with torch.no_grad():
        got_policy = sequence_logps(fast, batch)
        with reference_context(fast):
            got_ref = sequence_logps(fast, batch)
        want_policy = oracle_logps(oracle_policy, records)
        want_ref = oracle_logps(oracle, records)
    assert (want_policy - want_ref).abs().max() > 1e-2, "adapter must change the log-probs"
    torch.testing.assert_close(got_policy, want_policy, rtol=RTOL, atol=0)
    torch.testing.assert_close(got_ref, want_ref, rtol=RTOL, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_gradients_match_padded_oracle(family):
    base = build_tiny_model(family, seed=2)
    records = random_records(7, seed=5, prompt=(20, 50), response=(1, 10))  # prompts longer than responses
    fast, oracle = with_seeded_lora(_fast_model(base)), with_seeded_lora(_oracle_model(base))
    weights = torch.linspace(-1.0, 1.0, 2 * len(records))  # any differentiable use of every sum

    (sequence_logps(fast, collate_packed(records)) * weights).sum().backward()
    (oracle_logps(oracle, records) * weights).sum().backward()
    assert_same_adapter_gradients(fast, oracle, RTOL)


@pytest.mark.parametrize("prefix_sharing,pad", [(False, None), (True, 64), (False, 16)])
def test_unshared_and_padded_rows_are_exact(prefix_sharing, pad):
    base = build_tiny_model("tiny-mistral", seed=3)
    records = random_records(6, seed=2)
    with torch.no_grad():
        got = sequence_logps(_fast_model(base), collate_packed(records, prefix_sharing=prefix_sharing, pad_to_multiple_of=pad))
        want = oracle_logps(_oracle_model(base), records)
    torch.testing.assert_close(got, want, rtol=RTOL, atol=0)


def test_padded_path_is_exact():
    base = build_tiny_model("tiny-llama", seed=4)
    records = random_records(5, seed=9)
    with torch.no_grad():
        got = sequence_logps(_fast_model(base), collate_padded(records))
        want = oracle_logps(_oracle_model(base), records)
    torch.testing.assert_close(got, want, rtol=RTOL, atol=0)


def test_many_pairs_per_row_over_several_rows():
    base = build_tiny_model("tiny-qwen2", seed=5)
    records = random_records(30, seed=21)
    groups = group_by_token_budget(records, budget=400, seed=0)
    assert len(groups) > 2 and any(len(g) > 3 for g in groups)
    model = _fast_model(base)
    with torch.no_grad():
        want = oracle_logps(_oracle_model(base), records)
        n = len(records)
        for group in groups:
            got = sequence_logps(model, collate_packed([records[i] for i in group]))
            index = torch.tensor(group)
            torch.testing.assert_close(got, torch.cat([want[index], want[n + index]]), rtol=RTOL, atol=0)


def test_packer_never_splits_and_respects_budget():
    records = random_records(50, seed=1)
    budget = 300
    groups = group_by_token_budget(records, budget, seed=3)
    assert sorted(i for g in groups for i in g) == list(range(50))
    for g in groups:
        assert len(g) == 1 or sum(pair_length(records[i]) for i in g) <= budget
    batch = collate_packed([records[i] for i in groups[0]])
    assert batch.processed_tokens == batch.real_tokens == sum(pair_length(records[i]) for i in groups[0])


def test_rejected_positions_continue_from_prompt_and_never_see_chosen():
    rec = {"prompt_ids": [5, 6, 7], "chosen_ids": [8, 9], "rejected_ids": [10, 11, 12]}
    batch = collate_packed([rec])
    assert batch.position_ids[0].tolist() == [0, 1, 2, 3, 4, 3, 4, 5]
    ((start, end, mask),) = attention.document_blocks(batch.layout)  # one pair, one block
    assert (start, end) == (0, 8)
    rejected_rows = mask[5:]
    assert not rejected_rows[:, 3:5].any()  # rejected never attends to chosen
    assert rejected_rows[:, :3].all()  # but always to the whole prompt
    # the first chosen and the first rejected token are both predicted from the last prompt token
    src = batch.targets.source_index.tolist()
    assert src[0] == 2 and src[2] == 2


@pytest.mark.parametrize("implementation", ["trl", "chunked"])
def test_fused_token_logprobs_match_dense(implementation):
    torch.manual_seed(0)
    head = torch.nn.Linear(32, 5000, bias=False)
    hidden = torch.randn(2100, 32, requires_grad=True)
    targets = torch.randint(0, 5000, (2100,))
    got = token_logprobs(hidden, head, targets, implementation)
    hidden2 = hidden.detach().clone().requires_grad_(True)
    want = F.log_softmax(head(hidden2).float(), -1).gather(-1, targets[:, None]).squeeze(-1)
    torch.testing.assert_close(got, want, rtol=RTOL, atol=1e-6)
    g = torch.randn(2100)
    (got * g).sum().backward()
    head_grad = head.weight.grad.clone()
    head.weight.grad = None
    (want * g).sum().backward()
    torch.testing.assert_close(hidden.grad, hidden2.grad, rtol=RTOL, atol=1e-6)
    torch.testing.assert_close(head_grad, head.weight.grad, rtol=RTOL, atol=1e-6)


def _other_family(name: str):
    from transformers import AutoModelForCausalLM, Gemma2Config, GemmaConfig, Qwen3Config

    common = dict(vocab_size=260, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    config = {
        "qwen3": lambda: Qwen3Config(**common),
        "gemma": lambda: GemmaConfig(**common),
        "gemma2-softcap": lambda: Gemma2Config(**common, sliding_window=4096, attn_logit_softcapping=0.05)  # low, so capping changes the result,
    }[name]()
    torch.manual_seed(6)
    return AutoModelForCausalLM.from_config(config)


@pytest.mark.parametrize("family", ["qwen3", "gemma", "gemma2-softcap"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_other_families_through_the_attention_interface(family, backend):
    """No model class is patched, so Qwen3 and Gemma (soft-capped logits too) work as well."""
    base = _other_family(family)
    records = random_records(6, seed=8)
    with torch.no_grad():
        got = sequence_logps(_fast_model(base), collate_packed(records, backend=backend))
        want = oracle_logps(_oracle_model(base), records)
    torch.testing.assert_close(got, want, rtol=RTOL, atol=0)


def _attention_oracle(q, k, v, records, scale, softcap):
    """Token by token, from the layout's rules: P,C causal; R sees P and earlier R only."""
    out = torch.zeros_like(q)  # [H, T, D]
    start = 0
    for rec in records:
        p, c, r = len(rec["prompt_ids"]), len(rec["chosen_ids"]), len(rec["rejected_ids"])
        for t in range(start, start + p + c + r):
            if t < start + p + c:
                keys = list(range(start, t + 1))
            else:
                keys = list(range(start, start + p)) + list(range(start + p + c, t + 1))
            scores = q[:, t : t + 1] @ k[:, keys].transpose(-1, -2) * scale
            if softcap is not None:
                scores = torch.tanh(scores / softcap) * softcap
            out[:, t] = (scores.softmax(-1) @ v[:, keys])[:, 0]
        start += p + c + r
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("softcap", [None, 1.0])
def test_attention_backends_match_token_by_token_oracle(backend, softcap):
    records = random_records(4, seed=13, prompt=(1, 12), response=(1, 8))
    batch = collate_packed(records, backend=backend)
    T, H, D = batch.processed_tokens, 2, 8
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, H, T, D, generator=gen) * 3 for _ in range(3))  # large scores, so capping bites
    got, _ = attention.packed_attention(None, q, k, v, None, scaling=D**-0.5, packed_layout=batch.layout, softcap=softcap)
    want = _attention_oracle(q[0], k[0], v[0], records, D**-0.5, softcap).transpose(0, 1)
    torch.testing.assert_close(got[0], want, rtol=RTOL, atol=1e-5)  # inputs of magnitude ~3
    if softcap is not None:
        uncapped = _attention_oracle(q[0], k[0], v[0], records, D**-0.5, None).transpose(0, 1)
        assert (uncapped - want).abs().max() > 1e-2


def _reference_varlen_kernel(q, k, v, cu_q, cu_k, max_q, max_k, scale, causal, softcap=None):
    """What flash-attn's and torch's varlen kernels compute (bottom-right causal), in SDPA."""
    assert causal and q.dtype == k.dtype and cu_q.dtype == cu_k.dtype == torch.int32
    lq = (cu_q[1:] - cu_q[:-1]).tolist()
    lk = (cu_k[1:] - cu_k[:-1]).tolist()
    assert max(lq) == max_q and max(lk) == max_k and len(lq) == len(lk)
    k, v = (t.repeat_interleave(q.shape[1] // k.shape[1], dim=1) for t in (k, v))
    outs = []
    for (q0, n_q), (k0, n_k) in zip(zip(cu_q.tolist(), lq), zip(cu_k.tolist(), lk)):
        qd, kd, vd = (t.transpose(0, 1) for t in (q[q0 : q0 + n_q], k[k0 : k0 + n_k], v[k0 : k0 + n_k]))
        mask = torch.ones(n_q, n_k, dtype=torch.bool).tril(diagonal=n_k - n_q)
        scores = qd @ kd.transpose(-1, -2) * scale
        if softcap:
            scores = torch.tanh(scores / softcap) * softcap
        outs.append((scores.masked_fill(~mask, float("-inf")).softmax(-1) @ vd).transpose(0, 1))
    return torch.cat(outs)


@pytest.mark.parametrize("backend", ["torch_varlen", "flash"])
def test_cuda_backend_plumbing_with_stand_in_kernels(backend, monkeypatch):
    """The CUDA kernels cannot run here; stand-ins with their documented semantics check that
    basealign hands them the right streams, lengths, scale and causal flag."""
    import sys
    import types

    calls = []
    if backend == "torch_varlen":
        import torch.nn.attention.varlen as varlen_module

        def varlen_attn(q, k, v, cu_seq_q, cu_seq_k, max_q, max_k, *, scale=None, window_size=(-1, -1), enable_gqa=False, **_):
            calls.append(window_size)
            assert enable_gqa == (q.shape[1] != k.shape[1])
            return _reference_varlen_kernel(q, k, v, cu_seq_q, cu_seq_k, max_q, max_k, scale, window_size == (-1, 0))

        monkeypatch.setattr(varlen_module, "varlen_attn", varlen_attn)
    else:
        def flash_attn_varlen_func(q, k, v, cu_q, cu_k, max_q, max_k, softmax_scale=None, causal=False, softcap=0.0, **_):
            calls.append(causal)
            return _reference_varlen_kernel(q, k, v, cu_q, cu_k, max_q, max_k, softmax_scale, causal, softcap)

        monkeypatch.setitem(sys.modules, "flash_attn", types.SimpleNamespace(flash_attn_varlen_func=flash_attn_varlen_func))
    base = build_tiny_model("tiny-mistral", seed=12)
    records = random_records(7, seed=17)
    with torch.no_grad():
        got = sequence_logps(_fast_model(base), collate_packed(records, backend=backend))
        want = oracle_logps(_oracle_model(base), records)
    assert calls, "the stand-in kernel must have been called"
    torch.testing.assert_close(got, want, rtol=RTOL, atol=0)
