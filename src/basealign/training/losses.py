"""Preference losses on per-pair log-prob sums, with TRL's names and meaning.

The loss never sees masks or vocabularies: it gets, per pair, the policy and reference
log-prob sums of the chosen and rejected responses and their token counts, and returns
one value per pair. Averaging is not done here: the step sums, the Trainer divides once by
the global count (DESIGN.md, "the objective of one optimizer step").

  sigmoid  DPO: -log sigmoid(beta * margin)
  ipo      IPO, length-normalized as TRL does: (margin_per_token - 1/(2 beta))^2
  hinge    relu(1 - beta * margin)
  robust   label-smoothed DPO, unbiased for flip rate label_smoothing (Chowdhury et al.)
  sft      NLL of the chosen tokens: per pair the NLL sum; its unit is the chosen token,
           so the mean is over all chosen tokens of the step, as TRL's sft term

where margin = (pi_c - ref_c) - (pi_r - ref_r). A list of losses is a weighted sum
(weights default to 1.0 each). Rewards are beta * (pi - ref), as TRL logs them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# What each loss is averaged over: pairs, or (sft) chosen response tokens.
PAIRS, CHOSEN_TOKENS = "pairs", "chosen_tokens"
LOSS_UNITS = {"sigmoid": PAIRS, "ipo": PAIRS, "hinge": PAIRS, "robust": PAIRS, "sft": CHOSEN_TOKENS}


@dataclass
class PreferenceLogps:
    policy_chosen: torch.Tensor  # [B]
    policy_rejected: torch.Tensor
    ref_chosen: torch.Tensor
    ref_rejected: torch.Tensor
    chosen_lengths: torch.Tensor  # [B] response tokens
    rejected_lengths: torch.Tensor


def per_pair_losses(logps: PreferenceLogps, loss_type: str, beta: float = 0.1, label_smoothing: float = 0.0) -> torch.Tensor:
    """[B] losses of one type; for sft, each pair's chosen NLL sum (unit: chosen tokens)."""
    chosen_logratios = logps.policy_chosen - logps.ref_chosen
    rejected_logratios = logps.policy_rejected - logps.ref_rejected
    margin = chosen_logratios - rejected_logratios
    if loss_type == "sigmoid":
        return -F.logsigmoid(beta * margin)
    if loss_type == "hinge":
        return torch.relu(1 - beta * margin)
    if loss_type == "ipo":
        per_token_margin = (chosen_logratios / logps.chosen_lengths.clamp(min=1)
                            - rejected_logratios / logps.rejected_lengths.clamp(min=1))
        return (per_token_margin - 1 / (2 * beta)) ** 2
    if loss_type == "robust":
        clean = -(1 - label_smoothing) * F.logsigmoid(beta * margin)
        flipped = -label_smoothing * F.logsigmoid(-beta * margin)
        return (clean - flipped) / (1 - 2 * label_smoothing)
    if loss_type == "sft":
        return -logps.policy_chosen
    raise ValueError(f"unknown loss type {loss_type!r}")


# The logged per-pair metrics, TRL's names, in a fixed order (ranks all-reduce them as a vector).
METRIC_NAMES = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected")


def per_pair_metrics(logps: PreferenceLogps, beta: float) -> dict[str, torch.Tensor]:
    """[B] values per logged metric (METRIC_NAMES), detached; the caller sums them."""
    chosen_rewards = beta * (logps.policy_chosen - logps.ref_chosen).detach()
    rejected_rewards = beta * (logps.policy_rejected - logps.ref_rejected).detach()
    return dict(zip(METRIC_NAMES, (
        chosen_rewards,
        rejected_rewards,
        (chosen_rewards > rejected_rewards).to(chosen_rewards.dtype),
        chosen_rewards - rejected_rewards,
        logps.policy_chosen.detach(),
        logps.policy_rejected.detach(),
    ), strict=True))
