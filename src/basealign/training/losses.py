"""Preference losses on per-sequence log-prob sums, with TRL's names and meaning.

The loss never sees masks or vocabularies: it gets, per pair, the policy and reference
log-prob sums of the chosen and rejected responses and their token counts.

  sigmoid  DPO: -log sigmoid(beta * margin)
  ipo      IPO, length-normalized as TRL does: (margin_per_token - 1/(2 beta))^2
  hinge    relu(1 - beta * margin)
  robust   label-smoothed DPO, unbiased for flip rate label_smoothing (Chowdhury et al.)
  sft      NLL of the chosen tokens (mean over all chosen tokens of the batch)

where margin = (pi_c - ref_c) - (pi_r - ref_r). A list of losses is a weighted sum
(weights default to 1.0 each). Rewards are beta * (pi - ref), as TRL logs them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class PreferenceLogps:
    policy_chosen: torch.Tensor  # [B]
    policy_rejected: torch.Tensor
    ref_chosen: torch.Tensor
    ref_rejected: torch.Tensor
    chosen_lengths: torch.Tensor  # [B] response tokens
    rejected_lengths: torch.Tensor


def preference_loss(
    logps: PreferenceLogps,
    loss_types: list[str],
    weights: list[float] | None = None,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """(scalar loss, metrics) for one micro-batch."""
    weights = weights if weights is not None else [1.0] * len(loss_types)
    chosen_logratios = logps.policy_chosen - logps.ref_chosen
    rejected_logratios = logps.policy_rejected - logps.ref_rejected
    margin = chosen_logratios - rejected_logratios
    loss = logps.policy_chosen.new_zeros(())
    for loss_type, weight in zip(loss_types, weights, strict=True):
        if loss_type == "sigmoid":
            per_pair = -F.logsigmoid(beta * margin)
        elif loss_type == "hinge":
            per_pair = torch.relu(1 - beta * margin)
        elif loss_type == "ipo":
            per_token_margin = chosen_logratios / logps.chosen_lengths.clamp(min=1) - rejected_logratios / logps.rejected_lengths.clamp(min=1)
            per_pair = (per_token_margin - 1 / (2 * beta)) ** 2
        elif loss_type == "robust":
            clean = -(1 - label_smoothing) * F.logsigmoid(beta * margin)
            flipped = -label_smoothing * F.logsigmoid(-beta * margin)
            per_pair = (clean - flipped) / (1 - 2 * label_smoothing)
        elif loss_type == "sft":
            per_pair = (-logps.policy_chosen.sum() / logps.chosen_lengths.sum().clamp(min=1)).expand_as(margin)
        else:
            raise ValueError(f"unknown loss type {loss_type!r}")
        loss = loss + weight * per_pair.mean()

    chosen_rewards = beta * chosen_logratios.detach()
    rejected_rewards = beta * rejected_logratios.detach()
    metrics = {
        "rewards/chosen": chosen_rewards.mean().item(),
        "rewards/rejected": rejected_rewards.mean().item(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean().item(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean().item(),
        "logps/chosen": logps.policy_chosen.detach().mean().item(),
        "logps/rejected": logps.policy_rejected.detach().mean().item(),
    }
    return loss, metrics
