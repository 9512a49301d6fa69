"""The preference Trainer: transformers' Trainer with a pairwise loss on packed batches.

transformers/accelerate keep doing what they do well (optimizer, schedule, checkpointing,
resume, report_to integrations, multi-GPU launch); this module only supplies the batches,
the loss and the metrics. A dataset item is a whole micro-batch (a group of pairs under the
token budget), so the dataloader's batch size is 1 and resume skips whole micro-batches.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.utils.data import Dataset, SequentialSampler
from transformers import Trainer, TrainerCallback

from basealign.config import LossConfig
from basealign.fastpath.packing import PreferenceBatch, collate_packed, collate_padded
from basealign.training.step import mean_metrics, objective, preference_step


class PairGroups(Dataset):
    """Each item is one micro-batch: the records of a group of pairs."""

    def __init__(self, records: list[dict], groups: list[list[int]]):
        self.records, self.groups = records, groups

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> list[dict]:
        return [self.records[j] for j in self.groups[i]]


class PreferenceCollator:
    """Turns one group into a PreferenceBatch, packed or padded."""

    def __init__(self, packing: bool, prefix_sharing: bool, pad_token_id: int, backend: str, pad_to_multiple_of: int | None = None):
        self.packing, self.prefix_sharing = packing, prefix_sharing
        self.pad_token_id, self.backend, self.pad_to_multiple_of = pad_token_id, backend, pad_to_multiple_of

    def __call__(self, items: list[list[dict]]) -> dict:
        records = [r for group in items for r in group]
        if self.packing:
            batch = collate_packed(records, self.prefix_sharing, self.pad_to_multiple_of, self.pad_token_id, self.backend)
        else:
            batch = collate_padded(records, self.pad_token_id, self.pad_to_multiple_of)
        return {"batch": batch}


class PreferenceTrainer(Trainer):
    def __init__(self, *args, loss_config: LossConfig, ref_model=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_config = loss_config
        self.ref_model = ref_model
        if ref_model is not None:
            self.ref_model = ref_model.to(self.args.device)
        # our loss is a per-micro-batch mean: let Trainer divide by accumulation steps
        self.model_accepts_loss_kwargs = False
        self._metrics: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._window_tokens = 0
        self._window_start = time.perf_counter()

    def _get_train_sampler(self, train_dataset=None):
        # groups are already shuffled with the recipe's seed; a fixed order makes resume exact
        return SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)

    def floating_point_ops(self, inputs) -> int:
        return 0  # no `input_ids` at the top level; throughput is logged as tokens_per_second

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        batch: PreferenceBatch = inputs["batch"].to(self.args.device)
        loss, metrics = self._loss_and_metrics(model, batch)
        mode = "train" if model.training else "eval"
        for key, value in metrics.items():
            self._metrics[mode][key].append(value)
        if mode == "train":
            self._window_tokens += batch.real_tokens
        return (loss, None) if return_outputs else loss

    def _loss_and_metrics(self, model, batch: PreferenceBatch):
        sums = preference_step(model, self.ref_model, batch, self.loss_config)
        return objective(sums, self.loss_config), mean_metrics(sums)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "eval" if any(k.startswith("eval_") for k in logs) else "train"
        averaged = {k: sum(v) / len(v) for k, v in self._metrics[mode].items() if v}
        if mode == "eval":
            averaged = {f"eval_{k}": v for k, v in averaged.items()}
        elif "loss" in logs:
            now = time.perf_counter()
            averaged["tokens_per_second"] = self._window_tokens / max(now - self._window_start, 1e-9)
            self._window_tokens, self._window_start = 0, now
        logs.update(averaged)
        self._metrics[mode].clear()
        super().log(logs, start_time)


class MetricsFileCallback(TrainerCallback):
    """Appends one JSON line per logging step to OUTPUT_DIR/metrics.jsonl."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step}
        for key, value in logs.items():
            if key.startswith("eval_"):
                key = "eval/" + key.removeprefix("eval_")
            record[key] = value
        with self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")


def truncate_metrics(path: Path, last_step: int) -> None:
    """On resume, drop lines logged after the checkpoint: they will be logged again."""
    from basealign.report import metrics_lines

    if not Path(path).exists():
        return
    kept = [record for record in metrics_lines(path) if record.get("step", 0) <= last_step]
    Path(path).write_text("".join(json.dumps(record) + "\n" for record in kept))
