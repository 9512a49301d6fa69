"""The objective of a step is the mean over all its pairs, however they are cut.

Oracles: one micro-batch holding every pair (the plain pair mean) for accumulation over
uneven micro-batches; `basealign score`'s per-pair margins for the logged eval accuracy;
a single-process run for a two-process one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from basealign.config import LossConfig, recipe_from_dict
from basealign.training.trainer import MicroBatch, MicroBatches, PreferenceCollator, PreferenceTrainer
from conftest import failure_lines, random_records, small_recipe, toy_rows, write_pairs_folder

ROOT = Path(__file__).resolve().parents[1]


def _lora_policy():
    from peft import LoraConfig, get_peft_model

    from basealign.fastpath import attention
    from basealign.fastpath.logprobs import enable_logprob_forward
    from basealign.models.tiny import build_tiny_model

    base = build_tiny_model("tiny-mistral", seed=0)
    base.config._attn_implementation = attention.register()
    enable_logprob_forward(base)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear",
                                            task_type="CAUSAL_LM"))
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():  # a policy that differs from its reference, so every loss has a gradient
        for name, param in model.named_parameters():
            if "lora_" in name:  # A too: peft draws it from the global RNG
                param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
    return model


def _step(tmp_path, loss: LossConfig, groups: list[list[dict]]):
    """One optimizer step's loss and gradients through the Trainer's own training_step."""
    from transformers import TrainingArguments

    model = _lora_policy()
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none",
                             gradient_accumulation_steps=len(groups), per_device_train_batch_size=1)
    trainer = PreferenceTrainer(model=model, args=args, loss_config=loss,
                                data_collator=PreferenceCollator(True, True, 0, "sdpa"))
    samples = [trainer.data_collator([MicroBatch(group, 1.0)]) for group in groups]
    totals = trainer._get_num_items_in_batch(samples, torch.device("cpu"))
    model.zero_grad()
    loss_value = sum(trainer.training_step(model, sample, totals).item() for sample in samples)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss_value, grads


@pytest.mark.parametrize("types,weights", [(["sigmoid"], None), (["ipo"], None), (["sigmoid", "sft"], [1.0, 0.5])],
                         ids=["sigmoid", "ipo", "sigmoid+sft"])
def test_uneven_micro_batches_under_accumulation_equal_one_batch_of_all_pairs(tmp_path, types, weights):
    records = random_records(4, seed=11, prompt=(3, 8), response=(2, 6))
    records[0]["chosen_ids"] = records[0]["chosen_ids"] * 12  # one long pair, three short ones
    records[0]["rejected_ids"] = records[0]["rejected_ids"] * 9
    loss = LossConfig(type=types, weights=weights, beta=0.2)
    split_loss, split_grads = _step(tmp_path / "split", loss, [records[:1], records[1:]])
    whole_loss, whole_grads = _step(tmp_path / "whole", loss, [records])
    assert split_loss == pytest.approx(whole_loss, rel=1e-6)
    assert split_grads.keys() == whole_grads.keys() and whole_grads
    for name, grad in whole_grads.items():
        scale = grad.abs().max().clamp(min=1e-12)
        assert ((split_grads[name] - grad).abs().max() / scale).item() < 1e-6, name

    # The old weighting (each micro-batch's own mean, micro-batches averaged) is measurably
    # different on these pairs, so the equality above is not an accident of the data.
    from basealign.training.step import objective, preference_step

    model = _lora_policy()
    means = [objective(preference_step(model, None, PreferenceCollator(True, True, 0, "sdpa")([MicroBatch(g, 1.0)])["batch"], loss), loss).item()
             for g in (records[:1], records[1:])]
    assert abs(sum(means) / 2 - whole_loss) > 1e-3 * abs(whole_loss)


def test_epochs_regroup_every_pair_once_and_fill_with_zero_weight():
    records = random_records(40, seed=5)
    data = MicroBatches(records, budget=160, seed=3, shared_lengths=True, num_processes=2, epochs=3)
    assert len(data) % 2 == 0
    groupings = []
    for epoch in range(3):
        data.set_epoch(epoch)
        items = [data[i] for i in range(len(data))]
        real = [item for item in items if item.weight == 1.0]
        fillers = [item for item in items if item.weight == 0.0]
        assert len(real) + len(fillers) == len(data)
        seen = sorted(id(r) for item in real for r in item.records)
        assert seen == sorted(id(r) for r in records), "every pair exactly once per epoch"
        groupings.append([[id(r) for r in item.records] for item in real])
    assert groupings[0] != groupings[1] != groupings[2], "regrouped from seed + epoch"
    data.set_epoch(1)
    assert [[id(r) for r in data[i].records] for i in range(len(groupings[1]))] == groupings[1], "reproducible (resume)"


def _varied_pairs_folder(folder: Path) -> Path:
    rows = toy_rows(16)
    test = toy_rows(7, seed=2)
    for i, row in enumerate(test):  # lengths that cut the eval split into uneven micro-batches
        row["chosen"] = row["chosen"] + " More detail." * (i * 3)
    return write_pairs_folder(folder, rows, test)


def test_logged_eval_accuracy_equals_score_per_pair_accuracy(tmp_path):
    from basealign import cli
    from basealign.fastpath.packing import group_by_token_budget
    from basealign.training.run import run

    pairs = _varied_pairs_folder(tmp_path / "pairs")
    out = tmp_path / "run"
    recipe = small_recipe(pairs, out, training={"max_tokens_per_batch": 512, "max_steps": 3})
    training_run = run(recipe_from_dict(recipe))
    assert training_run == out
    scores = tmp_path / "scores.jsonl"
    assert cli.main(["score", str(out), "--pairs", str(pairs), "--out", str(scores)]) == 0
    test_lines = [json.loads(line) for line in scores.read_text().splitlines() if json.loads(line)["split"] == "test"]
    per_pair = sum(line["margin"] > 0 for line in test_lines) / len(test_lines)
    logged = json.loads((out / "eval_results.json").read_text())
    assert logged["eval/rewards/accuracies"] == pytest.approx(per_pair, abs=1e-12)
    assert logged["eval/pairs"] == len(test_lines)
    assert "eval_samples_per_second" not in logged and logged["eval/pairs_per_second"] > 0
    summary = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if "train_runtime" in line]
    assert "train_samples_per_second" not in summary[-1]  # it counted micro-batches
    pairs_trained = summary[-1]["train_pairs_per_second"] * summary[-1]["train_runtime"]
    assert 3 <= round(pairs_trained) <= 3 * 16 and abs(pairs_trained - round(pairs_trained)) < 0.05
    mean_margin = sum(line["margin"] for line in test_lines) / len(test_lines)
    assert logged["eval/rewards/margins"] == pytest.approx(mean_margin, rel=1e-5, abs=1e-6)

    # the eval split really was cut unevenly (else a mean of batch means would agree too)
    from basealign.models.loading import load_tokenizer
    from basealign.models.tokenize_pairs import tokenize_pairs
    from basealign.data_prep.prepare import load_pairs

    tokenizer = load_tokenizer(str(out), None)
    records = tokenize_pairs(load_pairs(pairs, "test"), tokenizer, 256).records
    sizes = {len(g) for g in group_by_token_budget(records, 512, None)}
    assert len(sizes) > 1


def _cli(args: list[str], nproc: int, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if nproc == 1:
        cmd = [sys.executable, "-m", "basealign.cli", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "basealign.cli", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_two_processes_equal_one_process_with_accumulation(tmp_path):
    """torchrun --nproc_per_node 2 (gloo, CPU) takes micro-batches 2k and 2k+1 in step k, as one
    process with accumulation 2 does: same adapter, same logged numbers, files written once.
    Both start from a data recipe that is not prepared yet."""
    from safetensors.torch import load_file

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "model: {name_or_path: 'builtin:tiny-mistral'}\n"
        "lora: {r: 4, alpha: 8, dropout: 0.0}\n"
        f"data: {{pairs: {ROOT / 'recipes/data/quickstart.yaml'}, max_length: 256}}\n"
        "loss: {type: [sigmoid, sft], weights: [1.0, 0.1], beta: 0.1}\n"
        "training: {learning_rate: 2.0e-3, max_tokens_per_batch: 600, max_steps: 6, logging_steps: 2,\n"
        "           eval_steps: 3, save_steps: 1000, seed: 3}\n"
    )
    one = _cli(["train", str(recipe), f"output_dir={tmp_path / 'one'}", "training.gradient_accumulation_steps=2"], 1, tmp_path)
    assert one.returncode == 0, failure_lines(one.stderr)
    two = _cli(["train", str(recipe), f"output_dir={tmp_path / 'two'}"], 2, tmp_path)
    assert two.returncode == 0, failure_lines(two.stderr)

    a = load_file(tmp_path / "one" / "adapter_model.safetensors")
    b = load_file(tmp_path / "two" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert ((a[key] - b[key]).abs().max() / a[key].abs().max().clamp(min=1e-12)).item() <= 1e-6, key

    def lines(run):
        return [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]

    want, got = lines("one"), lines("two")
    assert [m["step"] for m in got] == [m["step"] for m in want]  # one line per logging step: written once
    skip = ("tokens_per_second", "grad_norm")  # throughput differs; grad_norm is checked through the adapter
    for w, g in zip(want, got):
        for key, value in w.items():
            if isinstance(value, float) and key not in skip and "runtime" not in key and "per_second" not in key:
                assert g[key] == pytest.approx(value, rel=1e-6, abs=1e-9), (w["step"], key)
    assert "loss/sft" in want[0] and "loss/sigmoid" in want[0]
    # rank 1 prints nothing of its own: one "saved to" line, one prepared data folder
    assert two.stdout.count("basealign: saved to") == 1
    assert two.stdout.count("pairs kept") == one.stdout.count("pairs kept") == 2  # train, test: once each
    assert not list((tmp_path / "two").glob(".*.tmp")) and not list((tmp_path / "two" / "data").glob(".*.tmp"))


def test_dropout_is_off_by_default_and_kept_on_request(tmp_path, pairs_folder):
    from basealign.training.run import TrainingRun

    def dropouts(disable: bool) -> list[float]:
        recipe = recipe_from_dict({
            "model": {"name_or_path": "builtin:tiny-mistral"},
            "lora": {"r": 4, "alpha": 8, "dropout": 0.1},
            "data": {"pairs": str(pairs_folder), "max_length": 256},
            "training": {"max_tokens_per_batch": 700, "disable_dropout": disable},
            "output_dir": str(tmp_path / f"d{disable}"),
        })
        training_run = TrainingRun(recipe)
        training_run._setup_output()
        training_run._setup_data()
        training_run._setup_model()
        return [m.p for m in training_run.model.modules() if isinstance(m, torch.nn.Dropout)]

    assert dropouts(True) and all(p == 0.0 for p in dropouts(True))
    assert any(p == 0.1 for p in dropouts(False))


@pytest.mark.parametrize("name,kind", [("ddp", "MULTI_GPU"), ("fsdp2", "FSDP"), ("zero3", "DEEPSPEED")])
def test_shipped_accelerate_configs_load(name, kind):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ROOT / "recipes" / "accelerate" / f"{name}.yaml"))
    assert str(config.distributed_type).endswith(kind)
    if name == "fsdp2":
        assert config.fsdp_config["fsdp_version"] == 2
        assert config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # a loadable adapter at the end
    if name == "zero3":
        assert config.deepspeed_config["zero_stage"] == 3


def test_a_save_that_leaves_no_adapter_is_an_error_not_saved(tmp_path, pairs_folder, monkeypatch, capsys):
    """As FSDP's SHARDED_STATE_DICT does: the run must not print "saved to" without a model."""
    from basealign import cli
    from transformers import Trainer

    real_save = Trainer.save_model

    def sharded_save(self, output_dir=None, *args, **kwargs):
        real_save(self, output_dir, *args, **kwargs)
        if output_dir == str(tmp_path / "run"):  # the final save, not a checkpoint: shards only
            (tmp_path / "run" / "adapter_model.safetensors").unlink()

    monkeypatch.setattr(Trainer, "save_model", sharded_save)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"data: {{pairs: {pairs_folder}, max_length: 256}}\nlora: {{r: 4, alpha: 8}}\n"
                      f"training: {{max_steps: 1, max_tokens_per_batch: 700}}\noutput_dir: {tmp_path / 'run'}\n")
    assert cli.main(["train", str(recipe)]) == 2
    err = capsys.readouterr()
    assert "holds no adapter_model.safetensors" in err.err and "saved to" not in err.out


def _setup_data_worker(rank: int, world: int, port: int, base: str, rounds: int) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"})
    from basealign.training.run import TrainingRun

    for i in range(rounds):
        recipe = recipe_from_dict({
            "model": {"name_or_path": "builtin:tiny-mistral"},
            "data": {"pairs": str(ROOT / "recipes/data/quickstart.yaml"), "max_length": 256},
            "training": {"max_tokens_per_batch": 600},
            "output_dir": f"{base}/round{i}",
        })
        training_run = TrainingRun(recipe)  # its own process state, as under torchrun
        assert training_run.state.num_processes == world and training_run.state.process_index == rank
        training_run._setup_output()
        training_run._setup_data()  # raises (and fails the spawn) on a half-written or doubly prepared folder
        assert len(training_run.splits.train) > 50
        training_run.state.wait_for_everyone()
    training_run.state.destroy_process_group()


def test_two_ranks_on_an_unprepared_data_recipe_never_fail(tmp_path):
    import socket
    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_setup_data_worker, args=(2, port, str(tmp_path), 6), nprocs=2, join=True)
    for i in range(6):
        assert (tmp_path / f"round{i}" / "data" / "train.parquet").is_file()


def test_eval_section_inputs_are_checked_before_training(tmp_path, pairs_folder, capsys):
    """A judge path with a typo must not cost a whole training run."""
    from basealign import cli

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"data: {{pairs: {pairs_folder}, max_length: 256}}\nlora: {{r: 4, alpha: 8}}\n"
                      f"training: {{max_steps: 1, max_tokens_per_batch: 700}}\noutput_dir: {tmp_path / 'run'}\n"
                      f"eval: {{judges: ['helpful={tmp_path / 'no-such-judge'}']}}\n")
    assert cli.main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such-judge" in err[0] and "no such model folder" in err[0]
    assert not (tmp_path / "run").exists()  # nothing was started
