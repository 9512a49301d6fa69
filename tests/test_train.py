"""Training end to end on the builtin tiny model: quickstart, references, resume, caching."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from basealign import cli
from basealign.config import recipe_from_dict
from basealign.training.run import run
from conftest import small_recipe

ROOT = Path(__file__).resolve().parents[1]


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_quickstart_recipe_runs_a_few_steps(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the recipe's data path is relative to the repo root, as in the README
    out = tmp_path / "qs"
    code = cli.main(["train", "recipes/quickstart.yaml", f"output_dir={out}", "training.max_steps=3"])
    assert code == 0
    lines = [m for m in metrics(out) if "loss" in m]
    assert [m["step"] for m in lines] == [1, 2, 3]
    required = {"step", "loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                "logps/chosen", "logps/rejected", "learning_rate", "tokens_per_second"}
    assert required <= lines[0].keys()
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "recipe.yaml",
                 "report.md", "report.png", "data_stats.json", "eval_results.json"):
        assert (out / name).is_file(), name
    assert "max_steps: 3" in (out / "recipe.yaml").read_text()  # the resolved recipe, overrides included
    # the adapter loads again onto the saved base model
    from peft import AutoPeftModelForCausalLM

    AutoPeftModelForCausalLM.from_pretrained(out)


def _policy_and_ref(model_dir: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir)


def test_lora_reference_is_the_base_model(tmp_path):
    """Inside reference_context the LoRA policy gives exactly the base model's log-probs."""
    from basealign.config import LoraConfig, ModelConfig
    from basealign.models.loading import apply_lora, load_model, reference_context
    from basealign.fastpath.packing import collate_packed
    from basealign.models.tiny import materialize_builtin
    from basealign.training.step import sequence_logps
    from conftest import random_records

    path = str(materialize_builtin("builtin:tiny-mistral", tmp_path / "base"))
    base = load_model(ModelConfig(), path)
    policy = apply_lora(load_model(ModelConfig(), path), LoraConfig(r=4, alpha=8, dropout=0.0))
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    batch = collate_packed(random_records(5, seed=4))
    with torch.no_grad():
        want = sequence_logps(base, batch)
        got_policy = sequence_logps(policy, batch)
        with reference_context(policy):
            got_ref = sequence_logps(policy, batch)
    assert (got_policy - want).abs().max() > 1e-3
    torch.testing.assert_close(got_ref, want, rtol=0, atol=0)


def test_full_finetune_keeps_reference_frozen(tmp_path, pairs_folder, monkeypatch):
    from basealign.training import trainer as trainer_module

    seen = {}
    original = trainer_module.PreferenceTrainer.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen["trainer"] = self
        seen["ref_before"] = {k: v.clone() for k, v in self.ref_model.state_dict().items()}
        seen["policy_before"] = {k: v.clone() for k, v in self.model.state_dict().items()}

    monkeypatch.setattr(trainer_module.PreferenceTrainer, "__init__", spy)
    run(recipe_from_dict(small_recipe(pairs_folder, tmp_path / "full", lora=None, training={"max_steps": 3})))
    trainer = seen["trainer"]
    assert all(not p.requires_grad for p in trainer.ref_model.parameters())
    for key, value in trainer.ref_model.state_dict().items():
        assert torch.equal(value, seen["ref_before"][key]), key
    changed = [k for k, v in trainer.model.state_dict().items() if not torch.equal(v, seen["policy_before"][k])]
    assert changed, "the policy must have trained"
    assert (tmp_path / "full" / "model.safetensors").is_file()


class Interrupt(Exception):
    pass


def test_resume_reproduces_uninterrupted_metrics(tmp_path, pairs_folder, monkeypatch):
    from basealign.training import trainer as trainer_module

    settings = {"training": {"max_steps": 6, "save_steps": 3, "save_total_limit": None}}
    straight = tmp_path / "straight"
    run(recipe_from_dict(small_recipe(pairs_folder, straight, **settings)))

    interrupted = tmp_path / "interrupted"
    original_step = trainer_module.PreferenceTrainer.training_step
    calls = {"n": 0}

    def dying_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # killed mid-way, after checkpoint-3 and a logged step 4
            raise Interrupt
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(trainer_module.PreferenceTrainer, "training_step", dying_step)
    with pytest.raises(Interrupt):
        run(recipe_from_dict(small_recipe(pairs_folder, interrupted, **settings)))
    monkeypatch.setattr(trainer_module.PreferenceTrainer, "training_step", original_step)
    assert [m["step"] for m in metrics(interrupted)] == [1, 2, 3, 4]

    run(recipe_from_dict(small_recipe(pairs_folder, interrupted, **settings)), resume=True)
    want, got = metrics(straight), metrics(interrupted)
    assert [m["step"] for m in got] == [m["step"] for m in want]
    for w, g in zip(want, got):
        for key in ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "learning_rate", "eval/loss"):
            if key in w:
                assert g[key] == pytest.approx(w[key], rel=1e-5, abs=1e-7), (w["step"], key)


def test_precomputed_reference_logps_are_cached_and_equal_live(tmp_path, pairs_folder):
    cache = tmp_path / "cache"
    live = tmp_path / "live"
    run(recipe_from_dict(small_recipe(pairs_folder, live, training={"max_steps": 2})))
    cached = tmp_path / "cached"
    settings = {"training": {"max_steps": 2, "precompute_ref_logps": True, "ref_cache_dir": str(cache)}}
    run(recipe_from_dict(small_recipe(pairs_folder, cached, **settings)))
    files = list(cache.glob("*.pt"))
    assert len(files) == 2  # train and test splits
    stamps = {f: f.stat().st_mtime_ns for f in files}
    for w, g in zip(metrics(live), metrics(cached)):
        for key in ("loss", "rewards/chosen", "rewards/margins"):
            if key in w:  # the cache holds float64 sums, the live reference float32 ones
                assert g[key] == pytest.approx(w[key], rel=1e-5, abs=1e-5)
    run(recipe_from_dict(small_recipe(pairs_folder, tmp_path / "again", **settings)))
    assert {f: f.stat().st_mtime_ns for f in cache.glob("*.pt")} == stamps  # reused, not recomputed


@pytest.mark.parametrize("packing", [True, False])
def test_packed_and_padded_training_agree(tmp_path, pairs_folder, packing):
    # A budget that holds every pair in one micro-batch under both sizings (packed row, padded
    # tensor), so both paths see the same pairs in every step.
    settings = {"max_steps": 3, "max_tokens_per_batch": 40000}
    out = tmp_path / f"p{packing}"
    run(recipe_from_dict(small_recipe(pairs_folder, out, training={**settings, "packing": packing})))
    reference = tmp_path / "reference"
    if not reference.exists():
        run(recipe_from_dict(small_recipe(pairs_folder, reference, training={**settings, "packing": False})))
    want, got = metrics(reference), metrics(out)
    # Step 1 sees identical weights: exact. Later steps drift a little: Adam's first update
    # is about lr * sign(g), so 1e-7 gradient noise on near-zero entries flips whole steps.
    for key in ("loss", "rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected"):
        assert got[0][key] == pytest.approx(want[0][key], rel=1e-5, abs=1e-6), key
    for w, g in zip(want[1:], got[1:]):
        if "loss" in w:
            assert g["loss"] == pytest.approx(w["loss"], rel=1e-2)


def test_periodic_eval_and_gradient_accumulation(tmp_path, pairs_folder):
    out = tmp_path / "eval"
    settings = {"max_steps": 4, "eval_steps": 2, "gradient_accumulation_steps": 2, "max_tokens_per_batch": 512}
    run(recipe_from_dict(small_recipe(pairs_folder, out, training=settings)))
    lines = metrics(out)
    train_steps = [m["step"] for m in lines if "loss" in m]
    eval_steps = [m["step"] for m in lines if "eval/rewards/accuracies" in m]
    assert train_steps == [1, 2, 3, 4]
    assert eval_steps == [2, 4]  # periodic; the last step is evaluated once, not again after training
    last_eval = [m for m in lines if "eval/rewards/accuracies" in m][-1]
    assert json.loads((out / "eval_results.json").read_text())["eval/rewards/accuracies"] == last_eval["eval/rewards/accuracies"]
