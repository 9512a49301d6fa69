"""Precomputed reference log-probs, cached on disk by data and model fingerprint.

With `training.precompute_ref_logps: true` the reference runs once over the data before
training (fast path, no grad) and training never runs it again. The cache key covers the
token ids of every pair, the reference weights (modeling.model_fingerprint) and the layout
options, so a change to any of them misses the cache.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from tqdm.auto import tqdm

from basealign.fastpath.packing import collate_packed, group_by_token_budget
from basealign.training.step import reference_logps

DEFAULT_CACHE = Path.home() / ".cache" / "basealign" / "ref_logps"


def data_fingerprint(records: list[dict]) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps([r["prompt_ids"], r["chosen_ids"], r["rejected_ids"]]).encode())
    return h.hexdigest()[:16]


def attach_reference_logps(records, model, ref_model, model_fp: str, budget: int, backend: str,
                           cache_dir: str | Path | None = None, device=None) -> Path:
    """Adds ref_chosen_logps / ref_rejected_logps to each record; returns the cache file."""
    cache_dir = Path(cache_dir) if cache_dir else DEFAULT_CACHE
    cache_file = cache_dir / f"{model_fp}-{data_fingerprint(records)}.pt"
    if cache_file.exists():
        values = torch.load(cache_file)
    else:
        values = torch.empty(len(records), 2, dtype=torch.float64)
        groups = group_by_token_budget(records, budget, seed=None)
        was_training = model.training
        model.eval()
        for group in tqdm(groups, desc="reference log-probs", unit="batch"):
            batch = collate_packed([records[i] for i in group], backend=backend)
            if device is not None:
                batch = batch.to(device)
            sums = reference_logps(model, ref_model, batch).double().cpu()
            n = len(group)
            values[group, 0], values[group, 1] = sums[:n], sums[n:]
        model.train(was_training)
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp")
        torch.save(values, tmp)
        tmp.replace(cache_file)
    for record, (chosen, rejected) in zip(records, values.tolist()):
        record["ref_chosen_logps"], record["ref_rejected_logps"] = chosen, rejected
    return cache_file
