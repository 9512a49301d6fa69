"""`basealign train`: recipe -> data -> model -> Trainer -> adapter, metrics, report.

This module only wires the pieces in DESIGN.md's data flow together; each piece lives in
its own module.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from basealign.fastpath import attention
from basealign.config import Recipe, load_recipe, recipe_to_yaml
from basealign.errors import BasealignError
from basealign.models.loading import (
    apply_lora, check_packed_support, frozen_copy, load_model, load_tokenizer, model_fingerprint, resolve_model_path,
)
from basealign.fastpath.packing import group_by_token_budget
from basealign.models.tokenize_pairs import tokenize_pairs


def train_from_recipe(path: str, overrides=(), resume: bool = False) -> Path:
    return run(load_recipe(path, overrides), resume=resume)


def resolve_pairs(recipe: Recipe, run_dir: Path) -> Path:
    """A prepared pairs folder as is; a data recipe is prepared into RUN_DIR/data."""
    from basealign.data_prep.prepare import resolve_pairs as resolve

    return resolve(recipe.data.pairs, run_dir / "data", [recipe.recipe_dir] if recipe.recipe_dir else [])


@dataclass
class TokenizedSplits:
    train: list[dict]
    test: list[dict]


def load_tokenized(recipe: Recipe, pairs_dir: Path, tokenizer) -> TokenizedSplits:
    from basealign.data_prep.prepare import load_pairs

    rows = load_pairs(pairs_dir, "train")
    if not rows:
        raise BasealignError(f"the dataset in {pairs_dir} is empty after filtering (0 training pairs)")
    train = tokenize_pairs(rows, tokenizer, recipe.data.max_length, recipe.data.max_prompt_length)
    _report_drops("train", len(rows), train)
    if not train.records:
        reasons = ", ".join(f"{n} {why}" for why, n in train.dropped.items())
        raise BasealignError(
            f"no training pair fits data.max_length={recipe.data.max_length} ({reasons}); raise data.max_length"
        )
    test_records: list[dict] = []
    if recipe.data.eval_split and (pairs_dir / f"{recipe.data.eval_split}.parquet").exists():
        test_rows = load_pairs(pairs_dir, recipe.data.eval_split)
        if test_rows:
            test = tokenize_pairs(test_rows, tokenizer, recipe.data.max_length, recipe.data.max_prompt_length)
            _report_drops(recipe.data.eval_split, len(test_rows), test)
            test_records = test.records
    return TokenizedSplits(train.records, test_records)


def _report_drops(split: str, n_rows: int, tokenized) -> None:
    kept = len(tokenized.records)
    note = f"{split}: {kept}/{n_rows} pairs kept"
    if tokenized.truncated:
        note += f", {tokenized.truncated} truncated to data.max_length"
    if tokenized.dropped:
        note += ", dropped: " + ", ".join(f"{n} {why}" for why, n in sorted(tokenized.dropped.items()))
    print(f"basealign: {note}")


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run(recipe: Recipe, resume: bool = False) -> Path:
    from transformers import TrainingArguments, set_seed
    from transformers.trainer_utils import get_last_checkpoint

    from basealign.training.trainer import MetricsFileCallback, PairGroups, PreferenceCollator, PreferenceTrainer, truncate_metrics

    out = Path(recipe.output_dir)
    checkpoint = None
    if resume:
        checkpoint = get_last_checkpoint(str(out)) if out.is_dir() else None
        if checkpoint is None:
            raise BasealignError(f"--resume: no checkpoint in {out} (nothing to resume from)")
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.yaml").write_text(recipe_to_yaml(recipe))

    pairs_dir = resolve_pairs(recipe, out)
    if (pairs_dir / "stats.json").exists():
        shutil.copyfile(pairs_dir / "stats.json", out / "data_stats.json")

    model_path = resolve_model_path(recipe.model.name_or_path, out)
    tokenizer = load_tokenizer(model_path, recipe.model.chat_template, recipe.model.revision)
    splits = load_tokenized(recipe, pairs_dir, tokenizer)

    device = _device()
    set_seed(recipe.training.seed)  # before LoRA init, which draws from the global RNG
    model = load_model(recipe.model, model_path)
    check_packed_support(model, recipe.training.packing)
    try:
        backend, why = attention.choose_backend(recipe.model.attn_implementation, device, model.dtype, model.config)
    except ValueError as err:
        raise BasealignError(f"model.attn_implementation: {err}") from None
    print(f"basealign: attention backend {backend} ({why})")

    training = recipe.training
    ref_model = None
    if recipe.lora is not None:
        model = apply_lora(model, recipe.lora, recipe.model.gradient_checkpointing)
    else:
        if recipe.model.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if not training.precompute_ref_logps:
            ref_model = frozen_copy(model)

    if training.precompute_ref_logps:
        from basealign.training.reference_cache import attach_reference_logps

        fp = model_fingerprint(model_path, recipe.model.dtype, recipe.model.revision)
        ref_for_cache = frozen_copy(model) if recipe.lora is None else None
        model.to(device)
        for records in (splits.train, splits.test):
            if records:
                cache = attach_reference_logps(records, model, ref_for_cache, fp, training.max_tokens_per_batch,
                                               backend, training.ref_cache_dir, device)
        print(f"basealign: reference log-probs cached in {cache.parent}")
        del ref_for_cache

    # A batch's cost is what the model runs on: packed lengths, or the padded tensor.
    padded = not training.packing
    groups = group_by_token_budget(splits.train, training.max_tokens_per_batch, training.seed, training.prefix_sharing, padded)
    eval_dataset = None
    if splits.test:
        eval_dataset = PairGroups(splits.test, group_by_token_budget(
            splits.test, training.max_tokens_per_batch, None, training.prefix_sharing, padded))
    collator = PreferenceCollator(training.packing, training.prefix_sharing, tokenizer.pad_token_id, backend, training.pad_to_multiple_of)

    half = {"bfloat16": {"bf16": True}, "float16": {"fp16": True}}.get(recipe.model.dtype, {})
    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=1,
        per_device_eval_batch_size=1,
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        learning_rate=training.learning_rate,
        lr_scheduler_type=training.lr_scheduler_type,
        warmup_steps=training.warmup_ratio,
        weight_decay=training.weight_decay,
        max_grad_norm=training.max_grad_norm,
        num_train_epochs=training.num_epochs,
        max_steps=training.max_steps,
        logging_steps=training.logging_steps,
        save_steps=training.save_steps,
        save_total_limit=training.save_total_limit,
        eval_strategy="steps" if (training.eval_steps and eval_dataset is not None) else "no",
        eval_steps=training.eval_steps,
        seed=training.seed,
        data_seed=training.seed,
        report_to=training.report_to or "none",
        remove_unused_columns=False,
        dataloader_num_workers=training.dataloader_num_workers,
        use_cpu=device.type == "cpu",
        **half,
    )
    metrics_path = out / "metrics.jsonl"
    if checkpoint is None:
        metrics_path.unlink(missing_ok=True)
    else:
        truncate_metrics(metrics_path, int(Path(checkpoint).name.split("-")[-1]))
    trainer = PreferenceTrainer(
        model=model,
        args=args,
        train_dataset=PairGroups(splits.train, groups),
        eval_dataset=eval_dataset,
        data_collator=collator,
        processing_class=tokenizer,
        loss_config=recipe.loss,
        ref_model=ref_model,
        callbacks=[MetricsFileCallback(metrics_path)],
    )
    trainer.train(resume_from_checkpoint=checkpoint)

    eval_results = trainer.evaluate() if eval_dataset is not None else None
    trainer.save_model(str(out))
    tokenizer.save_pretrained(str(out))
    if eval_results:
        clean = {k.replace("eval_", "eval/", 1): v for k, v in eval_results.items()}
        (out / "eval_results.json").write_text(json.dumps(clean, indent=2) + "\n")

    from basealign.report import write_report

    details = {
        "base model": recipe.model.name_or_path,
        "loss": " + ".join(recipe.loss.type) + f" (beta={recipe.loss.beta})",
        "adapter": f"LoRA r={recipe.lora.r}, alpha={recipe.lora.alpha}" if recipe.lora else "full fine-tune",
        "pairs": f"{len(splits.train)} train, {len(splits.test)} test",
        "fast path": f"packing={training.packing}, prefix_sharing={training.prefix_sharing}, attention={backend}",
    }
    md, png = write_report(out, f"basealign run: {out.name}", details)
    print(f"basealign: saved to {out} (report: {md.name}, {png.name})")

    if recipe.hub.push:
        from basealign.hub.publish import push

        print(push(str(out), repo_id=recipe.hub.repo_id, private=recipe.hub.private))
    return out
