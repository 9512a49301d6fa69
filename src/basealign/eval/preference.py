"""Preference metrics on held-out pairs: per pair exactly what `basealign score` writes, then
aggregated overall, by label and by source.

The log-prob sums come from score.py's `score_records` (and so from the training step's
`sequence_logps`); this module only adds them up. A full fine-tune has no adapter to
switch off, so its reference sums are the same function run on the base model.
"""

from __future__ import annotations

from collections import defaultdict

from basealign.config import Recipe
from basealign.score import pair_line, score_records, tokenize_split

KEYS = ("pairs", "reward_accuracy", "margin", "chosen_logratio", "rejected_logratio")


def pair_lines(model, ref_model, rows: list[dict], split: str, tokenizer, recipe: Recipe, backend: str, device,
               has_adapter: bool) -> tuple[list[dict], dict]:
    """(one `score` line per kept pair, the tokenization's drop counts). The reference is MODEL's
    adapter switched off (HAS_ADAPTER), else REF_MODEL, else none."""
    part = tokenize_split(split, rows, tokenizer, recipe)
    training = recipe.training
    batching = dict(packing=True, prefix_sharing=training.prefix_sharing, budget=training.max_tokens_per_batch,
                    backend=backend, pad_token_id=tokenizer.pad_token_id,
                    pad_to_multiple_of=training.pad_to_multiple_of, device=device)
    values = score_records(model, part.records, has_reference=has_adapter, **batching) if part.records else []
    if ref_model is not None and not has_adapter and part.records:
        ref = score_records(ref_model, part.records, has_reference=False, **batching)
        values = [(pc, pr, rc, rr) for (pc, pr, _, _), (rc, rr, _, _) in zip(values, ref)]
    if has_adapter:
        reference = "base model (adapter disabled)"
    else:
        reference = "base model" if ref_model is not None else None
    lines = [pair_line(split, rows[r["index"]], r, v, recipe.loss.beta, reference) for r, v in zip(part.records, values)]
    return lines, {"dropped": dict(part.dropped), "truncated": part.truncated}


def summarize(lines: list[dict]) -> dict:
    """{overall, by_label: {label: ...}, by_source: {source: ...}}, each with KEYS."""
    by_label, by_source = defaultdict(list), defaultdict(list)
    for line in lines:
        by_label[str(line["label"])].append(line)
        by_source[str(line["source"])].append(line)
    return {
        "overall": _stats(lines),
        "by_label": {k: _stats(v) for k, v in sorted(by_label.items())},
        "by_source": {k: _stats(v) for k, v in sorted(by_source.items())},
    }


def _stats(lines: list[dict]) -> dict:
    n = len(lines)
    if not n:
        return dict.fromkeys(KEYS) | {"pairs": 0}
    with_ref = lines[0]["reference"] is not None
    return {
        "pairs": n,
        "reward_accuracy": sum(1 for l in lines if l["margin"] > 0) / n,
        "margin": sum(l["margin"] for l in lines) / n,
        "chosen_logratio": sum(l["chosen_logps"] - l["ref_chosen_logps"] for l in lines) / n if with_ref else None,
        "rejected_logratio": sum(l["rejected_logps"] - l["ref_rejected_logps"] for l in lines) / n if with_ref else None,
    }
