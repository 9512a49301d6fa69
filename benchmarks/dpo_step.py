"""One DPO training step: basealign's fast path vs its padded path vs TRL's DPOTrainer.

A benchmark, not a test. One step = policy forward + backward, reference forward
(adapter disabled), optimizer step, zero_grad, on one synthetic batch of `--pairs`
preference pairs whose lengths follow an HH-RLHF-like or UltraFeedback-like
distribution. The same pairs (token ids) and the same initial weights (base model and
LoRA adapter) feed all three paths:

  fast    basealign: packed + prefix-shared row (`collate_packed`), basealign attention,
          fused log-probs, `training.step.preference_step`
  padded  basealign: `collate_padded` rows `P C` / `P R` (right-padded), same fused log-probs
  trl     trl.DPOTrainer.training_step on the batch TRL's own `DataCollatorForPreference`
          builds from the same records (TRL 1.x re-tokenizes text datasets in `__init__`,
          so a pre-tokenized dataset cannot be handed to it; the collator is exactly what
          its dataloader feeds `training_step`)

Each path runs in a fresh subprocess of this script (`--path X`) so its peak memory is its
own: on CPU the process's peak RSS (`ru_maxrss`) and its growth over the RSS just before
the first step; on CUDA `torch.cuda.max_memory_allocated` after a reset. After warm-up,
`--repeats` steps are timed and the median is reported. The LoRA weights (A and B) are
overwritten with seeded random values in every path, so the policy differs from the
reference at step 0 and the step-0 losses of the three paths are a real cross-check.

The last stdout line is one JSON object (see `summarize`).

    .venv/bin/python benchmarks/dpo_step.py --device cpu --preset hh
    .venv/bin/python benchmarks/dpo_step.py --device cuda --preset ultrafeedback
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

PRESETS = {
    # medians in tokens; lognormal with sigma, clipped to [lo, hi]
    "hh": {"prompt": (130, 0.6, 8, 768), "response": (60, 0.6, 2, 256)},
    "ultrafeedback": {"prompt": (120, 0.6, 8, 768), "response": (280, 0.5, 8, 1024)},
}
PATHS = ("fast", "padded", "trl")
H100_BF16_DENSE_FLOPS = 989e12
LORA_R, LORA_ALPHA = 16, 32
LR = 1e-5
BETA = 0.1


# ---------------------------------------------------------------- data and model


def make_records(preset: str, pairs: int, vocab_size: int, seed: int) -> list[dict]:
    """Seeded synthetic pairs; token ids avoid the 4 special ids."""
    import random

    rng = random.Random(seed)
    spec = PRESETS[preset]

    def length(kind):
        median, sigma, lo, hi = spec[kind]
        return int(min(hi, max(lo, round(median * math.exp(rng.gauss(0.0, sigma))))))

    def ids(n):
        return [rng.randrange(4, vocab_size) for _ in range(n)]

    return [
        {"prompt_ids": ids(length("prompt")), "chosen_ids": ids(length("response")), "rejected_ids": ids(length("response"))}
        for _ in range(pairs)
    ]


def model_config(size: str):
    from transformers import LlamaConfig, MistralConfig

    if size == "small":  # CPU: small enough for 2 cores, vocab 32000 so the LM head matters
        return LlamaConfig(
            vocab_size=32000, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
            pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
        )
    if size == "tiny":  # smoke runs
        return LlamaConfig(
            vocab_size=32000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
            pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
        )
    if size == "mistral-7b":  # Mistral-7B-v0.1 architecture, random init
        return MistralConfig(
            vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
            num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32768,
            rope_theta=10000.0, rms_norm_eps=1e-5, sliding_window=None,
            pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
        )
    raise ValueError(size)


def build_base(args, attn_implementation: str):
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    config = model_config(args.model_size)
    torch.manual_seed(args.seed)
    with torch.device(args.device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn_implementation)
    model.config.use_cache = False
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return model


def peft_config():
    from peft import LoraConfig

    # dropout 0 so that the three paths compute the same function
    return LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")


def seed_lora(model, seed: int) -> None:
    """Overwrite every LoRA A/B with seeded values (same names -> same values in every path)."""
    import torch

    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if "lora_A" in name or "lora_B" in name:
                std = 0.1 if "lora_A" in name else 0.2
                param.copy_((torch.randn(param.shape, generator=gen) * std).to(param.dtype))


def count_forward_params(model) -> int:
    """Params taking part in the forward matmuls: everything but the input embedding table."""
    emb = model.get_input_embeddings().weight
    return sum(p.numel() for p in model.parameters() if p is not emb)


# ---------------------------------------------------------------- one path per process


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _sync(device):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def run_path(args) -> dict:
    import torch

    torch.manual_seed(args.seed)
    records = make_records(args.preset, args.pairs, model_config(args.model_size).vocab_size, args.seed)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if args.device == "cuda" else None

    if args.path in ("fast", "padded"):
        from peft import get_peft_model

        from basealign.fastpath import attention
        from basealign.fastpath.logprobs import enable_logprob_forward
        from basealign.config import LossConfig
        from basealign.fastpath.packing import collate_packed, collate_padded
        from basealign.training.step import objective, preference_step

        name = attention.register()
        base = build_base(args, name)
        enable_logprob_forward(base)
        model = get_peft_model(base, peft_config())
        seed_lora(model, args.seed)
        model.train()
        n_params = count_forward_params(model)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR)
        dtype = next(model.parameters()).dtype
        backend = args.fast_backend
        if backend == "auto":
            backend, why = attention.choose_backend("auto", torch.device(args.device), dtype)
            print(f"attention backend: {backend} ({why})", file=sys.stderr)
        t0 = time.perf_counter()
        if args.path == "fast":
            batch = collate_packed(records, backend=backend)
        else:
            batch = collate_padded(records, pad_token_id=0)
        collate_s = time.perf_counter() - t0
        batch = batch.to(args.device)

        loss_config = LossConfig(type=["sigmoid"], beta=BETA)

        def step():
            ctx = autocast if autocast is not None else _null()
            with ctx:
                loss = objective(preference_step(model, None, batch, loss_config), loss_config)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss.detach()

        tokens_processed = batch.processed_tokens
    else:
        from datasets import Dataset
        from trl import DPOConfig, DPOTrainer
        from trl.trainer.dpo_trainer import DataCollatorForPreference

        from basealign.models.tiny import byte_level_tokenizer

        base = build_base(args, "sdpa")
        tokenizer = byte_level_tokenizer()  # only for DPOTrainer.__init__; the batch is built from token ids
        config = DPOConfig(
            output_dir=os.path.join(args.tmp_dir, "trl_out"),
            loss_type=["sigmoid"], beta=BETA, learning_rate=LR, report_to="none", max_length=None,
            per_device_train_batch_size=args.pairs, padding_free=False, use_cpu=args.device == "cpu",
            bf16=args.device == "cuda", gradient_checkpointing=args.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False}, lr_scheduler_type="constant",
            warmup_steps=0, weight_decay=0.01, seed=args.seed, save_strategy="no", logging_strategy="no",
            dataset_num_proc=None,
        )
        text = Dataset.from_list([{"prompt": "hello", "chosen": " yes", "rejected": " no"}])
        trainer = DPOTrainer(model=base, args=config, train_dataset=text, processing_class=tokenizer, peft_config=peft_config())
        model = trainer.model
        seed_lora(model, args.seed)
        n_params = count_forward_params(model)
        trainer.create_optimizer()
        trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train() in the real loop
        optimizer = trainer.optimizer
        t0 = time.perf_counter()
        inputs = DataCollatorForPreference(pad_token_id=0)(records)
        collate_s = time.perf_counter() - t0
        tokens_processed = inputs["input_ids"].numel()

        def step():
            loss = trainer.training_step(model, dict(inputs))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss.detach()

    if args.device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    rss_before = _rss_bytes()
    losses, times = [], []
    for i in range(args.warmup + args.repeats):
        _sync(args.device)
        t0 = time.perf_counter()
        loss = step()
        _sync(args.device)
        dt = time.perf_counter() - t0
        losses.append(float(loss))
        if i >= args.warmup:
            times.append(dt)
        print(f"[{args.path}] step {i} {'warm-up' if i < args.warmup else 'timed'} {dt:.3f}s loss {losses[-1]:.6f}", file=sys.stderr)

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
        with profile(activities=activities) as prof:
            step()
        key = "self_cuda_time_total" if args.device == "cuda" else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=args.profile), file=sys.stderr)

    out = {
        "path": args.path,
        "initial_loss": losses[0],
        "losses": losses,
        "step_times_s": times,
        "step_time_s": statistics.median(times),
        "collate_s": collate_s,
        "tokens_processed": tokens_processed,
        "forward_params": n_params,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    if args.device == "cuda":
        out["peak_mem_bytes"] = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        out["peak_mem_bytes"] = peak  # whole-process peak RSS (includes imports + weights)
        out["peak_rss_growth_bytes"] = max(0, peak - rss_before)  # over the RSS just before the first step
    return out


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ---------------------------------------------------------------- driver


def attention_flops(records: list[dict], cfg) -> float:
    """FLOPs of the attention matmuls (QK^T and PV) for one training step, fast-path layout.

    Per layer and per allowed (query, key) pair: QK^T and PV are 2 * head_dim * heads
    multiply-adds each -> 4 * hidden FLOPs forward; backward is 2x -> 12 * hidden per
    allowed pair for a trained forward (the `6N` convention). Allowed pairs per pair of
    the prefix-shared layout: `P C` causal -> (p+c)(p+c+1)/2; `R` against `P R` -> r*p + r(r+1)/2.
    """
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    width = head_dim * cfg.num_attention_heads
    allowed = 0
    for rec in records:
        p, c, r = len(rec["prompt_ids"]), len(rec["chosen_ids"]), len(rec["rejected_ids"])
        allowed += (p + c) * (p + c + 1) // 2 + r * p + r * (r + 1) // 2
    return 12.0 * width * cfg.num_hidden_layers * allowed


def summarize(args, results: dict[str, dict]) -> dict:
    from basealign.fastpath.packing import collate_packed, collate_padded
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    cfg = model_config(args.model_size)
    records = make_records(args.preset, args.pairs, cfg.vocab_size, args.seed)
    packed = collate_packed(records)
    padded = collate_padded(records)
    trl_batch = DataCollatorForPreference(pad_token_id=0)(records)
    real_tokens = packed.real_tokens  # P + C + R per pair, counted once
    trl_real = int(trl_batch["attention_mask"].sum())  # P + C and P + R rows: the prompt twice
    trl_processed = trl_batch["input_ids"].numel()

    out = {
        "preset": args.preset,
        "device": args.device,
        "model": args.model_size,
        "pairs": args.pairs,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "fast_backend": args.fast_backend,
        "real_tokens": real_tokens,
        "real_tokens_unshared": trl_real,
        "response_tokens": int(packed.response_lengths.sum()),
        "tokens_processed_fast": packed.processed_tokens,
        "tokens_processed_padded": padded.processed_tokens,
        "tokens_processed_trl": trl_processed,
        "padding_fraction_padded": 1 - padded.real_tokens / padded.processed_tokens,
        "padding_fraction_trl": 1 - trl_real / trl_processed,
        "padding_fraction_trl_vs_pair_tokens": 1 - real_tokens / trl_processed,
    }
    for path, res in results.items():
        out[f"step_time_{path}_s"] = res["step_time_s"]
        out[f"step_times_{path}_s"] = [round(t, 4) for t in res["step_times_s"]]
        out[f"peak_mem_{path}_bytes"] = res["peak_mem_bytes"]
        if "peak_rss_growth_bytes" in res:
            out[f"peak_rss_growth_{path}_bytes"] = res["peak_rss_growth_bytes"]
        out[f"initial_loss_{path}"] = res["initial_loss"]
        out[f"tokens_per_second_{path}"] = real_tokens / res["step_time_s"]
        out[f"collate_{path}_s"] = res["collate_s"]
    if "fast" in results and "trl" in results:
        out["step_time_ratio_vs_trl"] = results["fast"]["step_time_s"] / results["trl"]["step_time_s"]
    if "padded" in results and "trl" in results:
        out["step_time_ratio_padded_vs_trl"] = results["padded"]["step_time_s"] / results["trl"]["step_time_s"]
    if "fast" in results and "padded" in results:
        out["step_time_ratio_fast_vs_padded"] = results["fast"]["step_time_s"] / results["padded"]["step_time_s"]

    # sanity: the three paths compute the same loss at step 0
    losses = {p: r["initial_loss"] for p, r in results.items()}
    ref = losses.get("trl", next(iter(losses.values())))
    rel = {p: abs(v - ref) / max(abs(ref), 1e-12) for p, v in losses.items()}
    tol = 1e-4 if args.device == "cpu" else 2e-2  # fp32 on CPU; bf16 on CUDA
    out["initial_loss_max_rel_diff"] = max(rel.values())
    out["initial_loss_agree"] = out["initial_loss_max_rel_diff"] <= tol
    print(f"sanity: initial losses {losses}; max rel diff {out['initial_loss_max_rel_diff']:.2e} "
          f"({'OK' if out['initial_loss_agree'] else 'MISMATCH'}, tol {tol:g})")

    any_res = next(iter(results.values()))
    n_params = any_res["forward_params"]
    out["forward_params"] = n_params
    out["trainable_params"] = any_res["trainable_params"]
    if args.device == "cuda":
        step_flops = 6.0 * n_params * real_tokens + attention_flops(records, cfg)
        out["model_flops_per_step"] = step_flops
        out["mfu_peak_flops"] = H100_BF16_DENSE_FLOPS
        for path in results:
            out[f"mfu_{path}"] = step_flops / results[path]["step_time_s"] / H100_BF16_DENSE_FLOPS
    return out


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--preset", choices=tuple(PRESETS), default="hh")
    ap.add_argument("--pairs", type=int, default=None, help="pairs in the batch (default 16 on cpu, 64 on cuda)")
    ap.add_argument("--repeats", type=int, default=3, help="timed steps (median reported)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first (step 0's loss is the sanity check)")
    ap.add_argument("--model-size", choices=("tiny", "small", "mistral-7b"), default=None,
                    help="default: small (Llama, hidden 256, 4 layers, vocab 32000, fp32) on cpu; "
                         "mistral-7b (random init, bf16, gradient checkpointing) on cuda")
    ap.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                    help="default: on for cuda, off for cpu")
    ap.add_argument("--fast-backend", default=None,
                    help="attention backend of the fast path: sdpa | varlen_cpu | flex | flash | torch_varlen | auto "
                         "(default sdpa on cpu, auto on cuda)")
    ap.add_argument("--paths", default=",".join(PATHS), help="comma-separated subset of fast,padded,trl")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", type=int, default=0, help="print a torch.profiler table (N rows) of one extra step")
    ap.add_argument("--path", choices=PATHS, default=None, help=argparse.SUPPRESS)  # internal: run one path here
    ap.add_argument("--tmp-dir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.pairs is None:
        args.pairs = 64 if args.device == "cuda" else 16
    if args.model_size is None:
        args.model_size = "mistral-7b" if args.device == "cuda" else "small"
    if args.gradient_checkpointing is None:
        args.gradient_checkpointing = args.device == "cuda"
    if args.fast_backend is None:
        args.fast_backend = "auto" if args.device == "cuda" else "sdpa"
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
    if args.path is not None:
        print(json.dumps(run_path(args)))
        return
    import tempfile

    results = {}
    with tempfile.TemporaryDirectory(prefix="dpo_step_") as tmp:
        for path in [p for p in args.paths.split(",") if p]:
            cmd = [sys.executable, os.path.abspath(__file__), *argv, "--path", path, "--tmp-dir", tmp]
            print(f"running {path} ...", file=sys.stderr, flush=True)
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"path {path} failed (exit {proc.returncode})")
            results[path] = json.loads(proc.stdout.strip().splitlines()[-1])
    summary = summarize(args, results)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
