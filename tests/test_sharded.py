"""The fused log-prob head under FSDP2 (torch's own `fully_shard`, 2 processes, gloo on CPU).

Oracle: the same model unsharded in this process; FSDP2 averages gradients over ranks, so
the sharded gradients must equal the mean of the per-rank batches' unsharded gradients.
The head is its own FSDP unit, the case where reading `lm_head.weight` outside the head's
forward meets a sharded DTensor.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import failure_lines, random_records

WORLD = 2


def _model():
    from basealign.fastpath import attention
    from basealign.fastpath.logprobs import enable_logprob_forward
    from basealign.models.tiny import build_tiny_model

    model = build_tiny_model("tiny-llama", seed=0)
    model.config._attn_implementation = attention.register()
    enable_logprob_forward(model)
    return model


def _batch(rank: int):
    from basealign.fastpath.packing import collate_packed

    return collate_packed(random_records(5, seed=100 + rank))


def _loss(model, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    from basealign.training.step import sequence_logps

    logps = sequence_logps(model, _batch(rank))
    weights = torch.linspace(-1.0, 1.0, logps.numel())  # every sequence matters, with both signs
    return logps, (logps * weights).sum()


def _fsdp_worker(rank: int, init_file: str, out: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        model = _model()
        mesh = init_device_mesh("cpu", (WORLD,))
        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model.lm_head, mesh=mesh)
        fully_shard(model, mesh=mesh)
        logps, loss = _loss(model, rank)
        loss.backward()
        grads = {name: p.grad.full_tensor() for name, p in model.named_parameters()}
        torch.save({"logps": logps.detach(), "grads": grads}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_fused_head_under_fsdp2_matches_unsharded(tmp_path):
    out = str(tmp_path / "result")
    mp.spawn(_fsdp_worker, args=(str(tmp_path / "init"), out), nprocs=WORLD, join=True)

    model = _model()
    want_logps = []
    for rank in range(WORLD):
        logps, loss = _loss(model, rank)
        (loss / WORLD).backward()  # FSDP2 averages over ranks
        want_logps.append(logps.detach())
    want = {name: p.grad for name, p in model.named_parameters()}

    results = [torch.load(f"{out}.{rank}") for rank in range(WORLD)]
    for rank, result in enumerate(results):
        torch.testing.assert_close(result["logps"], want_logps[rank], rtol=1e-5, atol=1e-5)
    got = results[0]["grads"]
    assert got.keys() == want.keys()
    assert want["lm_head.weight"].abs().max() > 0
    for name, grad in want.items():
        error = ((got[name] - grad).abs().max() / grad.abs().max().clamp(min=1e-12)).item()
        assert error < 1e-5, (name, error)


def _train(tmp_path, name: str, extra_env: dict, overrides: tuple[str, ...] = ()) -> "Path":
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "model: {name_or_path: 'builtin:tiny-mistral'}\n"
        "lora: {r: 4, alpha: 8, dropout: 0.0}\n"
        f"data: {{pairs: {root / 'recipes/data/quickstart.yaml'}, max_length: 256}}\n"
        "training: {learning_rate: 2.0e-3, max_tokens_per_batch: 600, max_steps: 1, max_grad_norm: 0.0,\n"
        "           logging_steps: 1, save_steps: 1000, seed: 3}\n"
    )
    out = tmp_path / name
    env = {**os.environ, "OMP_NUM_THREADS": "1", **extra_env}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
         "-m", "basealign.cli", "train", str(recipe), f"output_dir={out}", *overrides],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, failure_lines(done.stderr)
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[0])["step"] == 1
    return out


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_deepspeed_zero3_equals_ddp(tmp_path, lora):
    """ZeRO-3 (DeepSpeed's CPU accelerator, gloo) against DDP on the same micro-batches: the
    same adapter (LoRA) or model (full fine-tune: weights loaded partitioned, the reference
    loaded again and sharded) after one step. Clipping is off: DeepSpeed sums the gradient
    norm in its own order, and Adam's first step (about lr * sign(g)) would turn that 1e-7
    into 1e-5."""
    pytest.importorskip("deepspeed")
    from safetensors.torch import load_file

    overrides = () if lora else ("lora=null", "training.learning_rate=1e-4")
    zero3 = _train(tmp_path, "zero3", {"DS_ACCELERATOR": "cpu", "ACCELERATE_USE_DEEPSPEED": "true",
                                       "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3", "ACCELERATE_DEEPSPEED_ZERO3_INIT": "true",
                                       "ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL": "true"}, overrides)
    ddp = _train(tmp_path, "ddp", {}, overrides)
    assert torch.load(zero3 / "training_args.bin", weights_only=False).deepspeed_plugin.zero_stage == 3
    weights = "adapter_model.safetensors" if lora else "model.safetensors"
    a, b = load_file(zero3 / weights), load_file(ddp / weights)
    assert a.keys() == b.keys() and a
    for key in a:
        error = ((a[key] - b[key]).abs().max() / b[key].abs().max().clamp(min=1e-12)).item()
        assert error < 1e-5, (key, error)
