"""`basealign train`: a recipe in; an adapter (or full model), metrics and a report out.

Read `TrainingRun` top to bottom: setup (output folder, data, model, reference, trainer),
train, finish (save, eval results, report, eval, push). Each stage is a short method that hands
its results on as attributes; the pieces themselves live in their own modules.

With several processes (accelerate launch / torchrun) every rank runs the same stages;
work with side effects (preparing data, materializing a builtin model) runs on the main
process first while the others wait, and everything written after training is written by
the main process alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from basealign.config import Recipe, load_recipe, recipe_to_yaml, training_arguments
from basealign.errors import BasealignError
from basealign.files import write_atomic
from basealign.fastpath import attention
from basealign.hub.reach import require_hub_repo
from basealign.models.loading import (
    apply_lora, check_packed_support, check_training_dtype, frozen, frozen_copy, load_model, load_tokenizer, resolve_model_path,
)
from basealign.models.tokenize_pairs import tokenize_pairs
from basealign.training.plan import check_model
from basealign.training.run_folder import RunFolder


def train_from_recipe(path: str, overrides=(), resume: bool = False, overwrite: bool = False,
                      check: bool = False) -> Path:
    recipe = load_recipe(path, overrides)
    if check:
        from basealign.training.plan import plan

        print(plan(recipe, resume=resume, overwrite=overwrite))
        return Path(recipe.output_dir)
    return run(recipe, resume=resume, overwrite=overwrite)


def run(recipe: Recipe, resume: bool = False, overwrite: bool = False) -> Path:
    training_run = TrainingRun(recipe, resume, overwrite)
    training_run.setup()
    training_run.train()
    training_run.finish()
    return training_run.out


@dataclass
class TokenizedSplits:
    train: list[dict]
    test: list[dict]
    summary: list[str]  # per split: pairs kept, truncated, dropped by reason


class TrainingRun:
    def __init__(self, recipe: Recipe, resume: bool = False, overwrite: bool = False):
        import torch
        from accelerate import PartialState

        self.recipe, self.resume, self.overwrite = recipe, resume, overwrite
        # This process's rank and device, from accelerate. Without a GPU, accelerate sees the
        # processes of a torchrun launch only when told it runs on CPU (else every one is
        # "rank 0" until TrainingArguments sets the state up again, too late for the data).
        self.state = PartialState(cpu=not torch.cuda.is_available())
        self.out = Path(recipe.output_dir)

    def setup(self) -> None:
        check_training_dtype(self.recipe.model, self.recipe.lora)  # before any work: a config-only refusal
        if self.recipe.eval is not None:  # its judges, prompts and tasks: a typo must not cost the run
            from basealign.eval.run import check_inputs

            check_inputs(self.recipe.eval)
        self._setup_output()
        try:
            self._setup_data()
            self._setup_arguments()
            self._setup_model()
            self._setup_reference()
            self._setup_trainer()
            self._setup_step_generations()
            self._write_run_files()
        except BaseException:
            if self.state.is_main_process:  # a run that never started leaves the folder as it found it
                self.folder.discard_new()
            raise

    # ------------------------------------------------------------------ setup

    def _setup_output(self) -> None:
        """The output folder, claimed for this run (see run_folder), and the checkpoint to resume from."""
        self.folder = RunFolder(self.out)
        self.checkpoint = self.folder.claim(self.recipe, self.resume, self.overwrite)
        with self.state.main_process_first():
            if self.state.is_main_process:
                self.folder.open(self.overwrite)

    def _setup_data(self) -> None:
        """Pairs folder (a data recipe is prepared once, by the main process), tokenizer,
        token ids of every pair."""
        from basealign.data_prep.prepare import resolve_pairs

        recipe = self.recipe
        search = [recipe.recipe_dir] if recipe.recipe_dir else []
        with self.state.main_process_first():
            self.pairs_dir = resolve_pairs(recipe.data.pairs, self.out / "data", search,
                                           prepare_recipe=self.state.is_main_process)
            self.model_path = resolve_model_path(recipe.model.name_or_path, self.out)
        require_hub_repo(self.model_path, recipe.model.revision)
        check_model(recipe, self.model_path)  # before any weights load
        self.tokenizer = load_tokenizer(self.model_path, recipe.model.chat_template, recipe.model.revision)
        self.splits = load_tokenized(recipe, self.pairs_dir, self.tokenizer, verbose=self.state.is_main_process)

    def _setup_arguments(self) -> None:
        """transformers' TrainingArguments, built before any model loads: under ZeRO-3 they tell
        `from_pretrained` to load each weight partitioned across the ranks (zero.Init), not
        whole on every rank."""
        from transformers import TrainingArguments

        self.args = TrainingArguments(**training_arguments(self.recipe, has_eval=bool(self.splits.test),
                                                           use_cpu=self.state.device.type == "cpu"))

    def _setup_model(self) -> None:
        """The policy: the model with our attention and log-prob forward, LoRA if asked."""
        from transformers import set_seed

        recipe = self.recipe
        set_seed(recipe.training.seed)  # before LoRA init, which draws from the global RNG
        model = load_model(recipe.model, self.model_path)
        check_packed_support(model, recipe.training.packing)
        try:
            self.backend, why = attention.choose_backend(recipe.model.attn_implementation, self.state.device, model.dtype,
                                                         model.config)
        except ValueError as err:
            raise BasealignError(f"model.attn_implementation: {err}") from None
        self._log(f"attention backend {self.backend} ({why})")
        if recipe.lora is not None:
            model = apply_lora(model, recipe.lora, recipe.model.gradient_checkpointing)
        elif recipe.model.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if recipe.training.disable_dropout:  # before the reference copy, so both lose it
            from trl.trainer.utils import disable_dropout_in_model

            disable_dropout_in_model(model)
        self.model = model

    def _setup_reference(self) -> None:
        """LoRA: the policy with its adapter disabled (nothing to build). Full fine-tune: a
        frozen copy. Either way, optionally precomputed once and cached on disk."""
        recipe, training = self.recipe, self.recipe.training
        self.ref_model = None
        if recipe.lora is None and not training.precompute_ref_logps:
            self.ref_model = self._frozen_reference()
        if not training.precompute_ref_logps:
            return
        from basealign.training.reference_cache import attach_reference_logps, weights_fingerprint

        fp = weights_fingerprint(self.model_path, recipe.model.dtype, recipe.model.revision)
        self.model.to(self.state.device)
        # Before training the policy is the reference (a LoRA policy with its adapter off, a
        # full fine-tune as loaded), so no copy is needed. The main process computes and
        # writes the cache; the others then read that file.
        with self.state.main_process_first():
            for records in (self.splits.train, self.splits.test):
                if records:
                    cache = attach_reference_logps(
                        records, self.model, None, fp, training.max_tokens_per_batch, self.backend,
                        training.ref_cache_dir, self.state.device, compute=self.state.is_main_process,
                        packing=training.packing,
                    )
                    self._log(f"reference log-probs cached in {cache.parent}")

    def _frozen_reference(self):
        """A full fine-tune's reference: a frozen copy of the policy, or under ZeRO-3 (whose
        partitioned weights cannot be deep-copied) the base model loaded again, as TRL does."""
        from transformers.integrations import is_deepspeed_zero3_enabled

        if is_deepspeed_zero3_enabled():
            return frozen(load_model(self.recipe.model, self.model_path))
        return frozen_copy(self.model)

    def _setup_trainer(self) -> None:
        from basealign.training.trainer import (
            MetricsFileCallback, MicroBatches, PreferenceCollator, PreferenceTrainer, micro_batches_for_training,
            truncate_metrics,
        )

        recipe, training, splits = self.recipe, self.recipe.training, self.splits
        processes = self.state.num_processes
        # The budget counts the tokens the model runs on: a packed pair's P C R (2P+C+R without
        # prefix sharing), or the padded path's whole tensor, 2 x pairs x longest row.
        shared_lengths = training.prefix_sharing or not training.packing
        padded = not training.packing
        train_dataset = micro_batches_for_training(
            splits.train, training.max_tokens_per_batch, training.seed, shared_lengths, processes,
            training.gradient_accumulation_steps, training.num_epochs, training.max_steps, padded,
        )
        self._log(train_dataset.filler_note(processes))
        eval_dataset = None
        if splits.test:
            eval_dataset = MicroBatches(splits.test, training.max_tokens_per_batch, None, shared_lengths, processes,
                                        padded=padded)
        collator = PreferenceCollator(training.packing, training.prefix_sharing, self.tokenizer.pad_token_id,
                                      self.backend, training.pad_to_multiple_of)
        metrics_path = self.out / "metrics.jsonl"
        if self.state.is_main_process:
            if self.checkpoint is None:
                metrics_path.unlink(missing_ok=True)
            else:
                truncate_metrics(metrics_path, int(Path(self.checkpoint).name.split("-")[-1]))
        self.trainer = PreferenceTrainer(
            model=self.model,
            args=self.args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            data_collator=collator,
            processing_class=self.tokenizer,
            loss_config=recipe.loss,
            ref_model=self.ref_model,
            callbacks=[MetricsFileCallback(metrics_path)],
        )

    def _setup_step_generations(self) -> None:
        """With `eval.step_generations: N`, N held-out prompts answered at each eval step."""
        from basealign.data_prep.prepare import load_pairs
        from basealign.eval.prompts import from_pairs
        from basealign.eval.run import decoding
        from basealign.eval.step_generations import StepGenerations

        config, split = self.recipe.eval, self.recipe.data.eval_split
        if not config or not config.step_generations or not split or not (self.pairs_dir / f"{split}.parquet").exists():
            return
        ref_model = self.trainer.ref_model  # the frozen copy as the trainer placed it (full fine-tune)
        if self.recipe.lora is None and ref_model is None:  # precomputed reference log-probs: no model
            self._log("eval.step_generations skipped: a full fine-tune with precompute_ref_logps keeps no reference model")
            return
        prompts = from_pairs(load_pairs(self.pairs_dir, split))[: config.step_generations]
        self.trainer.add_callback(StepGenerations(prompts, self.tokenizer, ref_model, self.out / "eval",
                                                  decoding(config)))

    # ------------------------------------------------------------------ train, finish

    def train(self) -> None:
        self.trainer.train(resume_from_checkpoint=self.checkpoint)
        self.eval_results = None
        if self.trainer.eval_dataset is not None:
            # With step-based evaluation the Trainer has already evaluated the last step.
            state = self.trainer.state
            evals = [line for line in state.log_history if "eval_loss" in line]
            if evals and evals[-1].get("step") == state.global_step:
                self.eval_results = {k: v for k, v in evals[-1].items() if k.startswith("eval_")}
            else:
                self.eval_results = self.trainer.evaluate()

    def finish(self) -> None:
        """Save the model, then (main process only) eval results, tokenizer, report, eval, push."""
        self.trainer.save_model(str(self.out))  # every rank: FSDP/ZeRO-3 gather the weights collectively
        if not self.state.is_main_process:
            return
        self._check_saved_model()
        self.tokenizer.save_pretrained(str(self.out))
        if self.eval_results:
            clean = {k.replace("eval_", "eval/", 1): v for k, v in self.eval_results.items()}
            write_atomic(self.out / "eval_results.json", json.dumps(clean, indent=2) + "\n")
        self._write_report()
        self._evaluate()
        if self.recipe.hub.push:
            from basealign.hub.publish import push

            print(push(str(self.out), repo_id=self.recipe.hub.repo_id, private=self.recipe.hub.private))

    def _write_run_files(self) -> None:
        """Once setup has succeeded: the resolved recipe (what --resume checks) and the data statistics."""
        if not self.state.is_main_process:
            return
        write_atomic(self.out / "recipe.yaml", recipe_to_yaml(self.recipe))
        if (self.pairs_dir / "stats.json").exists():
            write_atomic(self.out / "data_stats.json", (self.pairs_dir / "stats.json").read_text())

    def _check_saved_model(self) -> None:
        """Never report "saved" without a loadable model: a sharded state dict (FSDP's
        SHARDED_STATE_DICT) leaves no adapter/model file in OUTPUT_DIR."""
        wanted = ("adapter_model.safetensors",) if self.recipe.lora is not None else ("model.safetensors", "model.safetensors.index.json")
        if not any((self.out / name).is_file() for name in wanted):
            raise BasealignError(
                f"training finished but {self.out} holds no {' or '.join(wanted)}; with FSDP set "
                "fsdp_state_dict_type: FULL_STATE_DICT (recipes/accelerate/fsdp2.yaml does)"
            )

    def _evaluate(self) -> None:
        """The recipe's `eval:` section: `basealign eval` on the saved run, before it is pushed."""
        config = self.recipe.eval
        if config is not None:
            from basealign.eval.run import evaluate

            evaluate(str(self.out), config, pairs=config.pairs or str(self.pairs_dir))

    def _write_report(self) -> None:
        from basealign.report import write_report

        recipe, training = self.recipe, self.recipe.training
        details = {
            "base model": recipe.model.name_or_path,
            "loss": " + ".join(recipe.loss.type) + f" (beta={recipe.loss.beta})",
            "adapter": f"LoRA r={recipe.lora.r}, alpha={recipe.lora.alpha}" if recipe.lora else "full fine-tune",
            "pairs": f"{len(self.splits.train)} train, {len(self.splits.test)} test",
            "fast path": f"packing={training.packing}, prefix_sharing={training.prefix_sharing}, attention={self.backend}",
        }
        md, png = write_report(self.out, f"basealign run: {self.out.name}", details)
        print(f"basealign: saved to {self.out} (report: {md.name}, {png.name})")
        for line in final_metrics(self.out):
            print(f"basealign: {line}")

    def _log(self, text: str) -> None:
        if self.state.is_main_process:
            print(f"basealign: {text}")


# ---------------------------------------------------------------------- helpers


def load_tokenized(recipe: Recipe, pairs_dir: Path, tokenizer, verbose: bool = True) -> TokenizedSplits:
    """Token ids of the train split and the eval split; every dropped pair is counted by reason."""
    from basealign.data_prep.prepare import load_pairs

    rows = load_pairs(pairs_dir, "train")
    if not rows:
        raise BasealignError(f"the dataset in {pairs_dir} is empty after filtering (0 training pairs)")
    train = tokenize_pairs(rows, tokenizer, recipe.data.max_length, recipe.data.max_prompt_length)
    summary = [_drops_line("train", len(rows), train)]
    if not train.records:
        reasons = ", ".join(f"{n} {why}" for why, n in train.dropped.items())
        raise BasealignError(
            f"no training pair fits data.max_length={recipe.data.max_length} ({reasons}); raise data.max_length"
        )
    test_records: list[dict] = []
    if recipe.data.eval_split:
        if not (pairs_dir / f"{recipe.data.eval_split}.parquet").is_file():
            found = ", ".join(sorted(p.stem for p in pairs_dir.glob("*.parquet")))
            raise BasealignError(f"data.eval_split: {pairs_dir} has no split {recipe.data.eval_split!r} (splits: "
                                 f"{found}); name one of them, or data.eval_split=null to train without evaluation")
        test_rows = load_pairs(pairs_dir, recipe.data.eval_split)
        if test_rows:
            test = tokenize_pairs(test_rows, tokenizer, recipe.data.max_length, recipe.data.max_prompt_length)
            summary.append(_drops_line(recipe.data.eval_split, len(test_rows), test))
            test_records = test.records
    if verbose:
        for line in summary:
            print(f"basealign: {line}")
    return TokenizedSplits(train.records, test_records, summary)


def _drops_line(split: str, n_rows: int, tokenized) -> str:
    note = f"{split}: {len(tokenized.records)}/{n_rows} pairs kept"
    if tokenized.truncated:
        note += f", {tokenized.truncated} truncated to data.max_length"
    if tokenized.dropped:
        note += ", dropped: " + ", ".join(f"{n} {why}" for why, n in sorted(tokenized.dropped.items()))
    return note


def final_metrics(run_dir: Path) -> list[str]:
    """The last training line's and the last evaluation's main metrics, one console line each."""
    from basealign.report import read_metrics

    train, evals = read_metrics(run_dir / "metrics.jsonl")
    keys = ("loss", "rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected")
    lines = []
    for name, record, prefix in (("train", train[-1] if train else None, ""), ("eval", evals[-1] if evals else None, "eval/")):
        if record:
            shown = ", ".join(f"{k} {record[prefix + k]:.4g}" for k in keys if prefix + k in record)
            lines.append(f"final {name} metrics (step {record['step']}): {shown}")
    return lines
