"""Packer: token records to batches, packed (fast path) or padded (reference path).

A record is one pair {prompt_ids, chosen_ids, rejected_ids}. Batches are groups of whole
pairs under a token budget; the same groups serve both paths, so the padded path is an
exact reference for the packed one.

Packed, prefix-shared row (one flat row, batch size 1):

    pair 0: P0 C0 R0 | pair 1: P1 C1 R1 | ... | optional pad to a multiple

Position ids of R continue from the end of P. Log-prob targets are gathered by explicit
predecessor index: the first chosen token and the first rejected token are both predicted
from the hidden state of the last prompt token (DESIGN.md, "The packed, prefix-shared
layout"). Without prefix sharing each pair is laid out as two documents `P C` and `P R`.

The attention backend only sees the `AttentionLayout`: documents as varlen query/key
streams, plus per-token (document, branch) ids for mask-based backends.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

PROMPT, CHOSEN, REJECTED = 0, 1, 2


def pair_length(record: dict, prefix_sharing: bool = True) -> int:
    """Tokens a pair takes in a packed row."""
    p, c, r = len(record["prompt_ids"]), len(record["chosen_ids"]), len(record["rejected_ids"])
    return p + c + r if prefix_sharing else 2 * p + c + r


def padded_length(record: dict) -> int:
    """The longer of a pair's two rows (P C and P R) in a padded batch."""
    return len(record["prompt_ids"]) + max(len(record["chosen_ids"]), len(record["rejected_ids"]))


def group_by_token_budget(records: list[dict], budget: int, seed: int | None, prefix_sharing: bool = True,
                          padded: bool = False) -> list[list[int]]:
    """Indices of records grouped into batches of at most `budget` tokens the model runs on.

    Packed (default), a batch costs the sum of its pairs' packed lengths; PADDED, it costs
    its padded tensor, 2 x pairs x longest row. Records are shuffled with `seed` (None keeps
    the order), then filled greedily; a pair is never split. Truncation keeps every pair
    under 2 x max_length and the recipe check keeps budget >= 2 x max_length, so a pair
    always fits; one that does not (direct API use) gets a batch of its own rather than
    being dropped.
    """
    order = list(range(len(records)))
    if seed is not None:
        random.Random(seed).shuffle(order)
    groups: list[list[int]] = []
    current: list[int] = []
    used = longest = 0
    for index in order:
        if padded:
            row = max(longest, padded_length(records[index]))
            cost = 2 * (len(current) + 1) * row
        else:
            cost = used + pair_length(records[index], prefix_sharing)
        if current and cost > budget:
            groups.append(current)
            current, used, longest = [], 0, 0
            cost = 2 * padded_length(records[index]) if padded else pair_length(records[index], prefix_sharing)
        current.append(index)
        used, longest = cost, max(longest, padded_length(records[index]))
    if current:
        groups.append(current)
    return groups


@dataclass
class AttentionLayout:
    """What an attention backend needs to know about a packed row, and nothing else."""

    doc_ids: torch.Tensor  # [T] attention document of each token
    branch: torch.Tensor  # [T] PROMPT / CHOSEN / REJECTED; rejected never attends to chosen
    positions: torch.Tensor  # [T] position within its own sequence (P C or P R): sliding windows count these
    cu_seqlens_q: torch.Tensor  # [D+1] int32, query stream = tokens in row order
    cu_seqlens_k: torch.Tensor  # [D+1] int32, key stream = tokens gathered by kv_index
    max_seqlen_q: int
    max_seqlen_k: int
    kv_index: torch.Tensor | None  # [Tk] token index of each key; None when keys = tokens
    backend: str = "sdpa"
    cache: dict = field(default_factory=dict, repr=False)  # per-forward masks, built once for all layers

    def to(self, device) -> "AttentionLayout":
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return AttentionLayout(
            move(self.doc_ids), move(self.branch), move(self.positions), move(self.cu_seqlens_q), move(self.cu_seqlens_k),
            self.max_seqlen_q, self.max_seqlen_k, move(self.kv_index), self.backend,
        )


@dataclass
class LogprobTargets:
    """Which hidden state predicts which token, and which sequence the token belongs to."""

    source_index: torch.Tensor  # [N] flat index into [batch * seq] hidden states
    target_ids: torch.Tensor  # [N]
    sequence_index: torch.Tensor  # [N] in [0, 2B): chosen of pair i is i, rejected is B + i

    def to(self, device) -> "LogprobTargets":
        return LogprobTargets(*(t.to(device, non_blocking=True) for t in (self.source_index, self.target_ids, self.sequence_index)))


@dataclass
class PreferenceBatch:
    """One micro-batch of pairs, packed or padded; the loss sees only per-sequence sums."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor | None
    attention_mask: torch.Tensor | None  # padded path only
    layout: AttentionLayout | None  # packed path only
    targets: LogprobTargets
    num_pairs: int
    response_lengths: torch.Tensor  # [2B] chosen lengths then rejected lengths
    real_tokens: int  # tokens that carry data (no padding)
    processed_tokens: int  # tokens the model runs on
    chosen_tokens: int  # chosen response tokens, counted here on the host (sft's denominator)
    ref_logps: torch.Tensor | None = None  # [2B] precomputed reference sums
    weight: float = 1.0  # 0 for a filler micro-batch that only keeps ranks in step

    def to(self, device) -> "PreferenceBatch":
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return PreferenceBatch(
            move(self.input_ids), move(self.position_ids), move(self.attention_mask),
            None if self.layout is None else self.layout.to(device), self.targets.to(device),
            self.num_pairs, move(self.response_lengths), self.real_tokens, self.processed_tokens, self.chosen_tokens,
            move(self.ref_logps), self.weight,
        )

    def model_inputs(self) -> dict:
        inputs = {"input_ids": self.input_ids, "logprob_targets": self.targets}
        if self.layout is not None:
            inputs["position_ids"] = self.position_ids
            inputs["packed_layout"] = self.layout
        else:
            inputs["attention_mask"] = self.attention_mask
        return inputs


def _ref_logps(records: list[dict]) -> torch.Tensor | None:
    if not records or "ref_chosen_logps" not in records[0]:
        return None
    chosen = [r["ref_chosen_logps"] for r in records]
    rejected = [r["ref_rejected_logps"] for r in records]
    return torch.tensor(chosen + rejected, dtype=torch.float32)


def collate_packed(records: list[dict], prefix_sharing: bool = True, pad_to_multiple_of: int | None = None,
                   pad_token_id: int = 0, backend: str = "sdpa") -> PreferenceBatch:
    """Lay the pairs out in one flat row (see module docstring)."""
    n_pairs = len(records)
    ids: list[int] = []
    positions: list[int] = []
    doc_ids: list[int] = []
    branch: list[int] = []
    cu_q, cu_k = [0], [0]
    kv_index: list[int] = []
    source, target, sequence = [], [], []
    doc = 0

    def add_doc(q_tokens: range, k_tokens: list[int]) -> None:
        cu_q.append(cu_q[-1] + len(q_tokens))
        cu_k.append(cu_k[-1] + len(k_tokens))
        kv_index.extend(k_tokens)

    for i, rec in enumerate(records):
        P, C, R = rec["prompt_ids"], rec["chosen_ids"], rec["rejected_ids"]
        p, c, r = len(P), len(C), len(R)
        start = len(ids)
        if prefix_sharing:
            ids += P + C + R
            positions += list(range(p + c)) + list(range(p, p + r))
            doc_ids += [doc] * (p + c + r)
            branch += [PROMPT] * p + [CHOSEN] * c + [REJECTED] * r
            prompt = list(range(start, start + p))
            chosen = list(range(start + p, start + p + c))
            rejected = list(range(start + p + c, start + p + c + r))
            add_doc(range(p + c), prompt + chosen)  # P C, causal
            add_doc(range(r), prompt + rejected)  # R queries against P R, bottom-right causal
            doc += 1
            rejected_first_source = start + p - 1
        else:
            ids += P + C + P + R
            positions += list(range(p + c)) + list(range(p + r))
            doc_ids += [doc] * (p + c) + [doc + 1] * (p + r)
            branch += [PROMPT] * p + [CHOSEN] * c + [PROMPT] * p + [REJECTED] * r
            first = list(range(start, start + p + c))
            second = list(range(start + p + c, start + 2 * p + c + r))
            add_doc(range(p + c), first)
            add_doc(range(p + r), second)
            doc += 2
            rejected = second[p:]
            rejected_first_source = start + p + c + p - 1
        # chosen token j is predicted from the token before it; the first from the last prompt token
        source += [start + p - 1 + j for j in range(c)]
        target += C
        sequence += [i] * c
        source += [rejected_first_source] + rejected[:-1]
        target += R
        sequence += [n_pairs + i] * r

    real = len(ids)
    if pad_to_multiple_of and real % pad_to_multiple_of:
        n_pad = pad_to_multiple_of - real % pad_to_multiple_of
        pad_positions = list(range(real, real + n_pad))
        ids += [pad_token_id] * n_pad
        positions += list(range(n_pad))
        doc_ids += [doc] * n_pad  # padding is a document of its own; nothing reads it
        branch += [PROMPT] * n_pad
        add_doc(range(n_pad), pad_positions)
    q_lens = [b - a for a, b in zip(cu_q, cu_q[1:])]
    k_lens = [b - a for a, b in zip(cu_k, cu_k[1:])]
    identity_keys = kv_index == list(range(len(ids)))
    layout = AttentionLayout(
        doc_ids=torch.tensor(doc_ids),
        branch=torch.tensor(branch),
        positions=torch.tensor(positions),
        cu_seqlens_q=torch.tensor(cu_q, dtype=torch.int32),
        cu_seqlens_k=torch.tensor(cu_k, dtype=torch.int32),
        max_seqlen_q=max(q_lens),
        max_seqlen_k=max(k_lens),
        kv_index=None if identity_keys else torch.tensor(kv_index),
        backend=backend,
    )
    lengths = [len(r["chosen_ids"]) for r in records] + [len(r["rejected_ids"]) for r in records]
    return PreferenceBatch(
        input_ids=torch.tensor([ids]),
        position_ids=torch.tensor([positions]),
        attention_mask=None,
        layout=layout,
        targets=LogprobTargets(torch.tensor(source), torch.tensor(target), torch.tensor(sequence)),
        num_pairs=n_pairs,
        response_lengths=torch.tensor(lengths),
        chosen_tokens=sum(lengths[:n_pairs]),
        real_tokens=real,
        processed_tokens=len(ids),
        ref_logps=_ref_logps(records),
    )


def collate_padded(records: list[dict], pad_token_id: int = 0, pad_to_multiple_of: int | None = None) -> PreferenceBatch:
    """The reference layout: rows `P C` for every pair, then rows `P R`, right-padded."""
    n_pairs = len(records)
    rows = [r["prompt_ids"] + r["chosen_ids"] for r in records] + [r["prompt_ids"] + r["rejected_ids"] for r in records]
    prompt_lens = [len(r["prompt_ids"]) for r in records] * 2
    width = max(len(row) for row in rows)
    if pad_to_multiple_of and width % pad_to_multiple_of:
        width += pad_to_multiple_of - width % pad_to_multiple_of
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    source, target, sequence = [], [], []
    for b, (row, p) in enumerate(zip(rows, prompt_lens)):
        input_ids[b, : len(row)] = torch.tensor(row)
        attention_mask[b, : len(row)] = 1
        source += [b * width + t - 1 for t in range(p, len(row))]
        target += row[p:]
        sequence += [b] * (len(row) - p)
    lengths = [len(r["chosen_ids"]) for r in records] + [len(r["rejected_ids"]) for r in records]
    return PreferenceBatch(
        input_ids=input_ids,
        position_ids=None,
        attention_mask=attention_mask,
        layout=None,
        targets=LogprobTargets(torch.tensor(source), torch.tensor(target), torch.tensor(sequence)),
        num_pairs=n_pairs,
        response_lengths=torch.tensor(lengths),
        chosen_tokens=sum(lengths[:n_pairs]),
        real_tokens=sum(len(r) for r in rows),
        processed_tokens=input_ids.numel(),
        ref_logps=_ref_logps(records),
    )
