"""Oracle: every loss equals TRL's DPOTrainer loss and reward metrics on the same model and batch.

TRL consumes its own padded batch (DataCollatorForPreference) through its own forward; we
consume the packed, prefix-shared batch of the same pairs. fp32, tolerance 1e-5.
"""

from __future__ import annotations

import copy

import pytest
import torch
from datasets import Dataset

from basealign.fastpath import attention
from basealign.fastpath.logprobs import enable_logprob_forward
from basealign.fastpath.packing import collate_packed
from basealign.models.tiny import build_tiny_model
from basealign.config import LossConfig
from basealign.training.step import mean_metrics, objective, preference_step
from conftest import random_records

TOL = 1e-5
METRICS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected")


def _policy_and_reference():
    ref = build_tiny_model("tiny-mistral", seed=0)
    policy = copy.deepcopy(ref)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # move the policy away from the reference so rewards are O(1)
        for p in policy.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return policy, ref


def _trl_loss(policy, ref, records, tokenizer, loss_type, weights, beta, label_smoothing):
    from trl import DPOConfig, DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    dummy = Dataset.from_list(
        [{"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "hello"}],
          "rejected": [{"role": "assistant", "content": "no"}]}] * 2
    )
    config = DPOConfig(
        output_dir="unused", loss_type=loss_type, loss_weights=weights, beta=beta, label_smoothing=label_smoothing,
        report_to="none", use_cpu=True, bf16=False, max_length=None, per_device_train_batch_size=len(records),  # fp32: DPOConfig defaults to bf16 autocast
    )
    p, r = copy.deepcopy(policy), copy.deepcopy(ref)
    p.config._attn_implementation = r.config._attn_implementation = "sdpa"
    trainer = DPOTrainer(model=p, ref_model=r, args=config, train_dataset=dummy, processing_class=tokenizer)
    inputs = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)(copy.deepcopy(records))
    trainer.model.train()
    loss = trainer._compute_loss(trainer.model, inputs, False)
    metrics = {k: trainer._metrics["train"][k][-1] for k in METRICS}
    return loss.item(), metrics


def _our_loss(policy, ref, records, loss_type, weights, beta, label_smoothing):
    name = attention.register()
    p, r = copy.deepcopy(policy), copy.deepcopy(ref)
    for model in (p, r):
        model.config._attn_implementation = name
        enable_logprob_forward(model)
    p.train()
    config = LossConfig(type=loss_type, weights=weights, beta=beta, label_smoothing=label_smoothing)
    sums = preference_step(p, r, collate_packed(records), config)  # the reference runs without grad
    return objective(sums, config).item(), mean_metrics(sums)


CASES = [
    (["sigmoid"], None, 0.1, 0.0),
    (["ipo"], None, 0.1, 0.0),
    (["hinge"], None, 0.3, 0.0),
    (["robust"], None, 0.1, 0.2),
    (["sft"], None, 0.1, 0.0),
    (["sigmoid", "sft"], [1.0, 0.5], 0.2, 0.0),
]


@pytest.mark.parametrize("loss_type,weights,beta,label_smoothing", CASES, ids=lambda v: str(v))
def test_loss_and_metrics_match_trl(tokenizer, loss_type, weights, beta, label_smoothing):
    policy, ref = _policy_and_reference()
    records = random_records(6, seed=3)
    trl_loss, trl_metrics = _trl_loss(policy, ref, records, tokenizer, loss_type, weights, beta, label_smoothing)
    our_loss, our_metrics = _our_loss(policy, ref, records, loss_type, weights, beta, label_smoothing)
    assert abs(trl_metrics["rewards/margins"]) > 1e-2, "the policy must differ from the reference for a real check"
    assert our_loss == pytest.approx(trl_loss, rel=TOL, abs=TOL)
    for key in METRICS:
        assert our_metrics[key] == pytest.approx(trl_metrics[key], rel=TOL, abs=TOL), key
