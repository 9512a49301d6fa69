"""Precomputed reference log-probs, cached on disk by the content of the data and the weights.

With `training.precompute_ref_logps: true` the reference runs once over the data before
training (fast path, no grad) and training never runs it again. The key covers the token
ids of every pair, the content of the reference weights, their dtype and the layout
options; it is stored inside the cache file and checked on load, so a renamed or
colliding file is never taken for another model's numbers. One process computes and
writes (atomically); the others read the finished file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import torch
from tqdm.auto import tqdm

from basealign.fastpath.packing import collate_packed, collate_padded, group_by_token_budget
from basealign.files import write_atomic
from basealign.training.step import reference_logps

DEFAULT_CACHE = Path.home() / ".cache" / "basealign" / "ref_logps"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


def data_fingerprint(records: list[dict]) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps([r["prompt_ids"], r["chosen_ids"], r["rejected_ids"]]).encode())
    return h.hexdigest()


def weights_fingerprint(path: str, dtype: str, revision: str | None = None) -> str:
    """A hash of the reference weights' content (and config, dtype).

    A hub snapshot's weight files are links to blobs named by their sha256, so the link
    names stand for the content at no cost; a plain local file is hashed whole (about
    10 s per 14 GB), since two models can share any prefix (a base and a merged model).
    """
    h = hashlib.sha256(f"{dtype}|{revision}".encode())
    folder = Path(path)
    if not folder.exists():
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(path, revision=revision, local_files_only=True))
        except Exception:  # noqa: BLE001 - not in the local cache: the loaded model came from elsewhere
            from basealign.errors import BasealignError

            raise BasealignError(
                f"training.precompute_ref_logps: cannot fingerprint {path}: its files are not in the local Hub cache"
            ) from None
    for file in sorted(folder.iterdir()):
        if file.suffix not in WEIGHT_SUFFIXES and file.name != "config.json":
            continue
        h.update(file.name.encode())
        if file.is_symlink() and len(Path(os.readlink(file)).name) == 64:
            h.update(Path(os.readlink(file)).name.encode())  # the blob's own sha256
            continue
        with file.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 24), b""):
                h.update(chunk)
    return h.hexdigest()


def cache_key(weights_fp: str, records: list[dict], budget: int, backend: str, packing: bool = True) -> str:
    layout = f"{budget}|{backend}|{'packed' if packing else 'padded'}"
    return hashlib.sha256(f"{weights_fp}|{data_fingerprint(records)}|{layout}".encode()).hexdigest()


def attach_reference_logps(records, model, ref_model, weights_fp: str, budget: int, backend: str,
                           cache_dir: str | Path | None = None, device=None, compute: bool = True,
                           packing: bool = True) -> Path:
    """Adds ref_chosen_logps / ref_rejected_logps to each record; returns the cache file.
    With COMPUTE false (a non-main process) the file must already be there. PACKING false
    computes them on the padded path, as training then does (models the packed path cannot
    run exactly)."""
    cache_dir = Path(cache_dir) if cache_dir else DEFAULT_CACHE
    key = cache_key(weights_fp, records, budget, backend, packing)
    cache_file = cache_dir / f"{key[:24]}.pt"
    values = _load(cache_file, key, len(records))
    if values is None:
        if not compute:
            from basealign.errors import BasealignError

            raise BasealignError(f"reference log-probs missing from {cache_file} after the main process wrote them")
        values = _compute(records, model, ref_model, budget, backend, device, packing)
        cache_dir.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save({"key": key, "values": values}, buffer)
        write_atomic(cache_file, buffer.getvalue())
    for record, (chosen, rejected) in zip(records, values.tolist()):
        record["ref_chosen_logps"], record["ref_rejected_logps"] = chosen, rejected
    return cache_file


def _load(cache_file: Path, key: str, n: int) -> torch.Tensor | None:
    if not cache_file.is_file():
        return None
    try:
        saved = torch.load(cache_file)
    except Exception:  # noqa: BLE001 - a damaged file is recomputed, not trusted
        return None
    if not isinstance(saved, dict) or saved.get("key") != key or saved["values"].shape != (n, 2):
        return None
    return saved["values"]


def _compute(records, model, ref_model, budget: int, backend: str, device, packing: bool) -> torch.Tensor:
    values = torch.empty(len(records), 2, dtype=torch.float64)
    groups = group_by_token_budget(records, budget, seed=None, padded=not packing)
    was_training = model.training
    model.eval()
    for group in tqdm(groups, desc="reference log-probs", unit="batch"):
        chunk = [records[i] for i in group]
        batch = collate_packed(chunk, backend=backend) if packing else collate_padded(chunk)
        if device is not None:
            batch = batch.to(device)
        sums = reference_logps(model, ref_model, batch).double().cpu()
        n = len(group)
        values[group, 0], values[group, 1] = sums[:n], sums[n:]
    model.train(was_training)
    return values
