"""One preference step, read top to bottom: a batch in; loss sums, counts and metric sums out.

    policy log-prob sums     model(batch) with the fused log-prob forward, summed per response
    reference sums           cached in the batch, or the frozen copy, or the adapter disabled
    per-pair losses          the loss family (losses.py), one value per pair per loss type
    sums and counts          summed over this micro-batch; nothing is averaged here

The objective of an optimizer step is a mean over *all* its pairs, however they are cut
into micro-batches and ranks, so a micro-batch cannot average by itself: the Trainer adds
the counts of every micro-batch on every rank first and calls `objective` with the totals.
`score`, the reference cache, the Trainer and benchmarks/dpo_step.py all call this module;
nothing else computes log-prob sums.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from basealign.config import LossConfig
from basealign.fastpath.logprobs import sequence_sums
from basealign.fastpath.packing import PreferenceBatch
from basealign.models.loading import reference_context
from basealign.training.losses import CHOSEN_TOKENS, LOSS_UNITS, PAIRS, PreferenceLogps, per_pair_losses, per_pair_metrics


def sequence_logps(model, batch: PreferenceBatch) -> torch.Tensor:
    """[2B] log-prob sums: chosen of every pair, then rejected."""
    token_logps = model(**batch.model_inputs())
    return sequence_sums(token_logps, batch.targets, 2 * batch.num_pairs)


def reference_logps(model, ref_model, batch: PreferenceBatch) -> torch.Tensor:
    """[2B] reference sums: precomputed, else the frozen copy, else the policy with its adapter off."""
    if batch.ref_logps is not None:
        return batch.ref_logps
    with torch.no_grad():
        if ref_model is not None:
            return sequence_logps(ref_model, batch)
        with reference_context(model):
            return sequence_logps(model, batch)


def preference_logps(model, ref_model, batch: PreferenceBatch) -> PreferenceLogps:
    """Policy and reference sums of a batch, split into the per-pair form the losses take."""
    policy = sequence_logps(model, batch)
    ref = reference_logps(model, ref_model, batch)
    n, lengths = batch.num_pairs, batch.response_lengths
    return PreferenceLogps(policy[:n], policy[n:], ref[:n], ref[n:], lengths[:n], lengths[n:])


@dataclass
class StepSums:
    """What one micro-batch contributes to its optimizer step (or eval pass)."""

    loss_sums: dict[str, torch.Tensor]  # loss type -> sum over this batch's units (with grad)
    counts: dict[str, torch.Tensor]  # PAIRS and CHOSEN_TOKENS in this batch (float, for all-reduce)
    metric_sums: dict[str, torch.Tensor]  # metric -> sum over pairs (detached)


def preference_step(model, ref_model, batch: PreferenceBatch, loss: LossConfig) -> StepSums:
    logps = preference_logps(model, ref_model, batch)
    # A filler micro-batch (weight 0) keeps ranks in step but contributes nothing.
    weight = batch.weight
    loss_sums = {name: weight * per_pair_losses(logps, name, loss.beta, loss.label_smoothing).sum() for name in loss.type}
    counts = {
        PAIRS: logps.policy_chosen.new_tensor(weight * batch.num_pairs),
        CHOSEN_TOKENS: logps.policy_chosen.new_tensor(weight * batch.chosen_tokens),
    }
    metric_sums = {name: weight * values.sum() for name, values in per_pair_metrics(logps, loss.beta).items()}
    return StepSums(loss_sums, counts, metric_sums)


def objective(sums: StepSums, loss: LossConfig, totals: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """sum_k weight_k * loss_sum_k / total count of loss k's unit (TOTALS: the whole step's,
    over all micro-batches and ranks; default this batch's own counts, i.e. its mean)."""
    totals = totals if totals is not None else sums.counts
    weights = loss.weights if loss.weights is not None else [1.0] * len(loss.type)
    value = 0.0
    for name, weight in zip(loss.type, weights, strict=True):
        loss_sum = sums.loss_sums[name]
        value = value + weight * loss_sum / totals[LOSS_UNITS[name]].to(loss_sum.dtype).clamp(min=1)
    return value


def mean_metrics(sums: StepSums) -> dict[str, float]:
    """Per-pair means of one batch's metrics (for a single batch, e.g. the TRL cross-check)."""
    pairs = sums.counts[PAIRS].clamp(min=1)
    return {name: (value / pairs).item() for name, value in sums.metric_sums.items()}
