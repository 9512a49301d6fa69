"""Preference metrics on held-out pairs: per pair exactly what `basealign score` writes, then
aggregated overall, by label and by source.

The log-prob sums come from score.py's `score_records` (and so from the training step's
`sequence_logps`), with `score`'s reference: a LoRA run's adapter switched off, a full
fine-tune's base model. This module only adds them up.
"""

from __future__ import annotations

from collections import defaultdict

from basealign.config import Recipe
from basealign.score import pair_line, reference_name, score_records, tokenize_split

KEYS = ("pairs", "reward_accuracy", "margin", "chosen_logratio", "rejected_logratio")


def pair_lines(model, ref_model, rows: list[dict], split: str, tokenizer, recipe: Recipe, backend: str,
               device) -> tuple[list[dict], dict]:
    """(one `score` line per kept pair, the tokenization's drop counts). REF_MODEL as `score_records`
    takes it: MODEL itself for a LoRA run (its adapter off), the base model of a full fine-tune."""
    part = tokenize_split(split, rows, tokenizer, recipe)
    training = recipe.training
    values = score_records(
        model, part.records, ref_model=ref_model, packing=training.packing, prefix_sharing=training.prefix_sharing,
        budget=training.max_tokens_per_batch, backend=backend, pad_token_id=tokenizer.pad_token_id,
        pad_to_multiple_of=training.pad_to_multiple_of, device=device,
    ) if part.records else []
    reference = reference_name(model, ref_model, recipe)
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
