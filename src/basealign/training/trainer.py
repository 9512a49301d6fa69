"""The preference Trainer: transformers' Trainer with a pair-weighted loss on packed batches.

transformers/accelerate keep doing what they do well (optimizer, schedule, checkpointing,
resume, report_to integrations, multi-process launch); this module supplies the batches,
the loss scaling and the metrics.

The objective of an optimizer step is the mean over all pairs of that step (DESIGN.md):
before the step's first backward, the Trainer's `num_items_in_batch` hook counts the pairs
(and chosen tokens, for sft) of all its micro-batches on all ranks; each micro-batch's loss
is its *sum* over that global count, times the number of processes to undo the mean over
ranks that DDP, FSDP and DeepSpeed apply to gradients. Logged metrics are sums over the
logging window on all ranks divided by its pair count.

A dataset item is a whole micro-batch (a group of pairs under the token budget), so the
dataloader's batch size is 1. Pairs are regrouped every epoch from seed + epoch; every
epoch has the same number of micro-batches, a multiple of the number of processes, and a
short epoch is topped up with zero-weight fillers instead of repeating pairs.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils.data import Dataset, SequentialSampler
from transformers import Trainer, TrainerCallback

from basealign.config import LossConfig
from basealign.fastpath.packing import PreferenceBatch, collate_packed, collate_padded, group_by_token_budget
from basealign.files import write_atomic
from basealign.training.losses import CHOSEN_TOKENS, LOSS_UNITS, METRIC_NAMES, PAIRS
from basealign.training.step import StepSums, objective, preference_step


class MicroBatch(NamedTuple):
    records: list[dict]
    weight: float  # 1, or 0 for a filler that only keeps the processes in step


class MicroBatches(Dataset):
    """Items are micro-batches: the pairs of one group under the token budget.

    `seed` None keeps one fixed grouping in record order (evaluation); otherwise the
    grouping of epoch e is drawn from seed + e. The length is the same in every epoch
    (the most groups any of `epochs` epochs needs, rounded up to a multiple of
    `num_processes`); the missing items of an epoch are fillers of weight 0.
    """

    def __init__(self, records: list[dict], budget: int, seed: int | None, shared_lengths: bool,
                 num_processes: int = 1, epochs: int = 1, padded: bool = False):
        self.records, self.budget, self.seed, self.shared_lengths = records, budget, seed, shared_lengths
        self.padded = padded  # the padded path's budget counts its padded tensor
        counts = [len(self._grouping(e)) for e in range(max(epochs, 1) if seed is not None else 1)]
        self.real_lengths = counts
        self.length = math.ceil(max(counts) / num_processes) * num_processes
        shortest = min(range(len(records)), key=lambda i: len(records[i]["chosen_ids"]) + len(records[i]["rejected_ids"]))
        self._filler = MicroBatch([records[shortest]], 0.0)
        self.set_epoch(0)

    def _grouping(self, epoch: int) -> list[list[int]]:
        seed = None if self.seed is None else self.seed + epoch
        return group_by_token_budget(self.records, self.budget, seed, self.shared_lengths, self.padded)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.groups = self._grouping(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> MicroBatch:
        if i >= len(self.groups):
            return self._filler
        return MicroBatch([self.records[j] for j in self.groups[i]], 1.0)

    def filler_note(self, num_processes: int) -> str:
        fillers = sorted({self.length - n for n in self.real_lengths})
        note = f"{self.length} micro-batches per epoch on {num_processes} process{'es' if num_processes > 1 else ''}"
        if fillers[-1] == 0:
            return note
        spread = f"{fillers[0]}" if len(fillers) == 1 else f"{fillers[0]}-{fillers[-1]}"
        return f"{note}, {spread} of them zero-weight fillers that keep processes in step (no pair is repeated)"


def planned_epochs(n_groups: int, num_processes: int, accumulation: int, num_epochs: float, max_steps: int) -> int:
    """How many epochs the Trainer will run (its own arithmetic), for micro-batch planning."""
    if max_steps > 0:
        steps_per_epoch = max(math.ceil(math.ceil(n_groups / num_processes) / accumulation), 1)
        return math.ceil(max_steps / steps_per_epoch)
    return math.ceil(num_epochs)


def micro_batches_for_training(records, budget, seed, shared_lengths, num_processes, accumulation, num_epochs, max_steps,
                               padded: bool = False):
    """MicroBatches whose fixed length covers every epoch the Trainer will run. The epoch
    count depends on the length and the length on the epochs; a longer length never needs
    more epochs, so two rounds settle it."""
    epochs = planned_epochs(len(group_by_token_budget(records, budget, seed, shared_lengths, padded)), num_processes,
                            accumulation, num_epochs, max_steps)
    while True:
        dataset = MicroBatches(records, budget, seed, shared_lengths, num_processes, epochs, padded)
        needed = planned_epochs(len(dataset), num_processes, accumulation, num_epochs, max_steps)
        if needed <= epochs:
            return dataset
        epochs = needed


class PreferenceCollator:
    """Turns one micro-batch into a PreferenceBatch, packed or padded."""

    def __init__(self, packing: bool, prefix_sharing: bool, pad_token_id: int, backend: str, pad_to_multiple_of: int | None = None):
        self.packing, self.prefix_sharing = packing, prefix_sharing
        self.pad_token_id, self.backend, self.pad_to_multiple_of = pad_token_id, backend, pad_to_multiple_of

    def __call__(self, items: list[MicroBatch]) -> dict:
        (records, weight), = items  # the dataloader's batch size is 1: one item is a micro-batch
        if self.packing:
            batch = collate_packed(records, self.prefix_sharing, self.pad_to_multiple_of, self.pad_token_id, self.backend)
        else:
            batch = collate_padded(records, self.pad_token_id, self.pad_to_multiple_of)
        batch.weight = weight
        return {"batch": batch}


class Window:
    """Sums over a logging window (train) or an eval pass, reduced over ranks when read."""

    def __init__(self, loss: LossConfig):
        self.loss = loss
        self.clear()

    def clear(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.tokens = 0

    def add(self, step: StepSums) -> None:
        items = {**{f"loss/{k}": v for k, v in step.loss_sums.items()}, **step.counts, **step.metric_sums}
        for key, value in items.items():
            value = value.detach().double()
            self.sums[key] = self.sums[key] + value if key in self.sums else value

    def keys(self) -> list[str]:
        # Fixed order on every rank: the all-reduce adds vectors position by position.
        return [f"loss/{k}" for k in self.loss.type] + [PAIRS, CHOSEN_TOKENS] + list(METRIC_NAMES) + ["tokens"]

    def reduced(self, accelerator, device) -> dict[str, float]:
        """Per-pair means (per-unit for loss terms) over all ranks; `tokens` stays a sum."""
        keys = self.keys()
        vector = torch.tensor([float(self.tokens) if k == "tokens" else float(self.sums.get(k, 0.0)) for k in keys],
                              dtype=torch.float64, device=device)
        if accelerator.num_processes > 1:
            vector = accelerator.reduce(vector, reduction="sum")
        total = dict(zip(keys, vector.tolist()))
        pairs = total[PAIRS]
        out = {"pairs": pairs, "tokens": total["tokens"]}
        if pairs == 0:
            return out
        for key in METRIC_NAMES:
            out[key] = total[key] / pairs
        weights = self.loss.weights if self.loss.weights is not None else [1.0] * len(self.loss.type)
        loss = 0.0
        for name, weight in zip(self.loss.type, weights):
            part = total[f"loss/{name}"] / max(total[LOSS_UNITS[name]], 1.0)
            loss += weight * part
            if len(self.loss.type) > 1:
                out[f"loss/{name}"] = part
        out["loss"] = loss
        return out


class PreferenceTrainer(Trainer):
    def __init__(self, *args, loss_config: LossConfig, ref_model=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_config = loss_config
        self.ref_model = None if ref_model is None else self._prepare_reference(ref_model)
        # compute_loss divides by the step's global pair count itself: no division by the
        # number of accumulation steps, and no loss kwargs for the model
        self.model_accepts_loss_kwargs = False
        self.loss_is_scaled_for_ga = True
        self._windows = {"train": Window(loss_config), "eval": Window(loss_config)}
        self._window_start = time.perf_counter()
        self._pairs_trained = 0.0  # this process, this session: for train_pairs_per_second

    def _prepare_reference(self, ref_model):
        """A full fine-tune's frozen reference, sharded the way the policy is (as TRL does),
        in eval mode: ZeRO-3 or FSDP ranks each hold a shard, not a full copy."""
        from trl.models import prepare_deepspeed, prepare_fsdp

        if self.is_deepspeed_enabled:
            ref_model = prepare_deepspeed(ref_model, self.accelerator)
        elif self.is_fsdp_enabled:
            ref_model = prepare_fsdp(ref_model, self.accelerator)
        else:
            ref_model = ref_model.to(self.args.device)
        return ref_model.eval()

    def _get_train_sampler(self, train_dataset=None):
        # the dataset orders (and regroups) itself per epoch; a fixed order makes resume exact
        return SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)

    def _get_eval_sampler(self, eval_dataset):
        return SequentialSampler(eval_dataset)

    def _run_epoch(self, model, epoch, *args, **kwargs):
        # The only hook that knows the epoch number before the dataloader is iterated (or
        # fast-forwarded on resume); transformers < 6 names it so (pinned in pyproject).
        if hasattr(self.train_dataset, "set_epoch"):
            self.train_dataset.set_epoch(epoch)
        return super()._run_epoch(model, epoch, *args, **kwargs)

    def floating_point_ops(self, inputs) -> int:
        return 0  # no `input_ids` at the top level; throughput is logged as tokens_per_second

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> dict[str, torch.Tensor]:
        """The whole optimizer step's pair and chosen-token counts: all its micro-batches
        here, summed over all processes, before any backward."""
        counts = torch.zeros(2, dtype=torch.float64)
        for inputs in batch_samples:
            batch: PreferenceBatch = inputs["batch"]
            counts[0] += batch.weight * batch.num_pairs
            counts[1] += batch.weight * batch.chosen_tokens
        counts = counts.to(device)
        if self.accelerator.num_processes > 1:
            counts = self.accelerator.reduce(counts, reduction="sum")
        return {PAIRS: counts[0], CHOSEN_TOKENS: counts[1]}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        batch: PreferenceBatch = inputs["batch"].to(self.args.device)
        sums = preference_step(model, self.ref_model, batch, self.loss_config)
        mode = "train" if model.training else "eval"
        self._windows[mode].add(sums)
        if mode == "train":
            self._windows["train"].tokens += batch.real_tokens * batch.weight
            self._pairs_trained += batch.num_pairs * batch.weight
        if num_items_in_batch is None:  # outside the training loop: this batch's own mean
            loss = objective(sums, self.loss_config)
        else:  # sum over the step's global counts; x processes undoes the gradient mean over ranks
            loss = objective(sums, self.loss_config, num_items_in_batch) * self.accelerator.num_processes
        return (loss, None) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # Called on every process at the same points (logging steps, evaluation), so the
        # all-reduce inside `reduced` lines up across ranks.
        if "loss" in logs or "eval_loss" in logs:
            mode = "eval" if "eval_loss" in logs else "train"
            window = self._windows[mode]
            values = window.reduced(self.accelerator, self.args.device)
            window.clear()
            if mode == "eval":
                # the pair mean over the whole eval set, not Trainer's mean of batch means
                logs.update({f"eval_{k}": v for k, v in values.items() if k not in ("tokens", "pairs")})
                logs["eval_pairs"] = values["pairs"]
                if "eval_runtime" in logs:  # Trainer's eval_samples_per_second counts micro-batches
                    logs.pop("eval_samples_per_second", None)
                    logs["eval_pairs_per_second"] = values["pairs"] / max(float(logs["eval_runtime"]), 1e-9)
            else:
                now = time.perf_counter()
                logs.update({k: v for k, v in values.items() if k not in ("loss", "tokens", "pairs")})
                logs["tokens_per_second"] = values["tokens"] / max(now - self._window_start, 1e-9)
                self._window_start = now
        if "train_runtime" in logs:
            # Trainer's train_samples_per_second counts dataset items, i.e. micro-batches
            pairs = torch.tensor([self._pairs_trained], dtype=torch.float64, device=self.args.device)
            if self.accelerator.num_processes > 1:
                pairs = self.accelerator.reduce(pairs, reduction="sum")
            logs.pop("train_samples_per_second", None)
            logs["train_pairs_per_second"] = pairs.item() / max(float(logs["train_runtime"]), 1e-9)
        super().log(logs, start_time)


class MetricsFileCallback(TrainerCallback):
    """Appends one JSON line per logging step to OUTPUT_DIR/metrics.jsonl (main process)."""

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
    write_atomic(path, "".join(json.dumps(record) + "\n" for record in kept))
