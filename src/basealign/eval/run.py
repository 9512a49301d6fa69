"""`basealign eval RUN`: the balance of an aligned run against its base model, written to RUN/eval/.

Read `evaluate` top to bottom: check every input (cheap, before any model is loaded), load
the aligned model and its reference, then preference metrics on held-out pairs, answers
side by side, judges, general capability, and the files:

  eval.json          every number: preference.{overall, by_label, by_source}, generations,
                     judges.<name>.by_label, capability.tasks
  pairs.jsonl        the per-pair lines `basealign score` writes, for the held-out split
  generations.jsonl  one line per prompt: prompt, label, source, index, both answers, token counts
  generations.html   the same, for a person
  eval.md, balance.png

The reference of a LoRA run is its base model with the adapter disabled; of a full
fine-tune, the base model its recipe names.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import torch

from basealign.config import EvalConfig, Recipe
from basealign.errors import BasealignError
from basealign.eval import capability, judges, preference, prompts as prompt_lines
from basealign.eval.generate import Decoding, side_by_side
from basealign.eval.report import write_eval_report
from basealign.files import write_atomic


def decoding(config: EvalConfig) -> Decoding:
    return Decoding(config.max_new_tokens, config.temperature, config.top_p, config.seed, config.batch_size)


def check_config(config: EvalConfig) -> None:
    for name in ("max_new_tokens", "batch_size"):
        if getattr(config, name) < 1:
            raise BasealignError(f"eval.{name} must be >= 1, got {getattr(config, name)}")
    for name in ("limit", "task_limit"):
        if getattr(config, name) is not None and getattr(config, name) < 1:
            raise BasealignError(f"eval.{name} must be >= 1 (or null), got {getattr(config, name)}")
    if config.temperature < 0 or not 0 < config.top_p <= 1:
        raise BasealignError("eval.temperature must be >= 0 and eval.top_p in (0, 1]")
    if config.step_generations < 0:
        raise BasealignError(f"eval.step_generations must be >= 0, got {config.step_generations}")


def check_inputs(config: EvalConfig) -> list:
    """Every input of an eval that can be checked without a model: the values, each judge
    (a saved single-score classifier), the prompts file, the lm-eval tasks. Training calls
    it before any work, so a typo never costs a whole run. Returns the judge specs."""
    check_config(config)
    judge_specs = [judges.parse_judge(text) for text in config.judges]
    for judge in judge_specs:
        judges.check_judge(judge)
    if config.prompts:
        prompt_lines.read_prompts(config.prompts)
    tasks = capability.expand(config.tasks)
    if tasks:
        capability.task_manager(tasks, config.task_paths)
    return judge_specs


def eval_pairs_dir(run_dir: Path, recipe: Recipe, config: EvalConfig, scratch: Path) -> Path:
    """--pairs, else the pairs the run prepared (RUN/data), else the recipe's data.pairs."""
    from basealign.data_prep.prepare import is_pairs_folder, resolve_pairs

    if config.pairs is not None:
        return resolve_pairs(config.pairs, scratch / "pairs", label="--pairs")
    if is_pairs_folder(run_dir / "data"):
        return run_dir / "data"
    return resolve_pairs(recipe.data.pairs, scratch / "pairs", [run_dir], label="data.pairs of the run's recipe")


def evaluate(run: str, config: EvalConfig | None = None, **overrides) -> Path:
    """Evaluate RUN as CONFIG says (default: the eval section of the run's recipe, else the
    defaults), with OVERRIDES (EvalConfig fields, e.g. from the command line) on top; returns RUN/eval."""
    from basealign.data_prep.prepare import load_pairs
    from basealign.fastpath import attention
    from basealign.models.loading import load_tokenizer
    from basealign.models.tokenize_pairs import prompt_token_ids
    from basealign.score import load_scoring_model, reference_name, resolve_model

    # ---- every input first: a mistake costs no model load
    run_dir = Path(run).expanduser()
    if not run_dir.is_dir():
        raise BasealignError(f"run folder does not exist: {run}")
    spec = resolve_model(str(run_dir))
    if spec.kind == "model":
        raise BasealignError(f"{run} is a model folder, not a basealign run (no recipe.yaml)")
    run_dir, recipe = run_dir.resolve(), spec.recipe
    config = dataclasses.replace(config or recipe.eval or EvalConfig(), **overrides)
    judge_specs = check_inputs(config)
    given_prompts = prompt_lines.read_prompts(config.prompts) if config.prompts else None
    tasks = capability.expand(config.tasks)
    manager = capability.task_manager(tasks, config.task_paths) if tasks else None
    with tempfile.TemporaryDirectory(prefix="basealign-eval-") as scratch:
        rows = load_pairs(eval_pairs_dir(run_dir, recipe, config, Path(scratch)), config.split)[: config.limit]
    if not rows and given_prompts is None:
        raise BasealignError(f"the {config.split!r} split of the held-out pairs is empty; give --pairs or --prompts")

    # ---- models
    tokenizer = load_tokenizer(spec.tokenizer_path, None, recipe.model.revision)  # the run's own template
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    packing = recipe.training.packing  # a model the packed path refuses was trained (and is scored) padded
    model, ref_model = load_scoring_model(spec, device, packing)  # a run always has a reference (score's rule)
    try:
        backend, _why = attention.choose_backend(recipe.model.attn_implementation, device, model.dtype, model.config)
    except ValueError as err:
        raise BasealignError(f"model.attn_implementation: {err}") from None
    out = run_dir / "eval"
    out.mkdir(exist_ok=True)
    result: dict = {"run": run_dir.name, "config": dataclasses.asdict(config),
                    "reference": reference_name(model, ref_model, recipe)}

    # ---- 1. preference metrics on held-out pairs
    if rows:
        lines, drops = preference.pair_lines(model, ref_model, rows, config.split, tokenizer, recipe, backend, device)
        _write_lines(out / "pairs.jsonl", lines)
        result["preference"] = {"split": config.split, "reference": lines[0]["reference"] if lines else None,
                                **drops, **preference.summarize(lines)}
        print(f"basealign eval: {len(lines)} held-out pairs scored")

    # ---- 2. answers side by side
    asked = given_prompts if given_prompts is not None else prompt_lines.from_pairs(rows)
    asked = asked[: config.limit]
    texts = [p.prompt for p in asked]
    policy, reference = side_by_side(model, ref_model, tokenizer, texts, decoding(config))
    generations = [prompt_lines.generation_line(p, len(prompt_token_ids(tokenizer, p.prompt)), a, b)
                   for p, a, b in zip(asked, policy, reference)]
    _write_lines(out / "generations.jsonl", generations)
    result["generations"] = prompt_lines.summarize(generations, decoding(config))
    print(f"basealign eval: {len(generations)} prompts answered by both models")

    # ---- 3. judges
    if judge_specs:
        result["judges"] = {}
        labels = [p.label for p in asked]
        for judge in judge_specs:
            judge_model, judge_tokenizer = judges.load_judge(judge, device)
            side_scores = [judges.scores(judge_model, judge_tokenizer, texts, [a.text for a in answers],
                                         config.batch_size) for answers in (policy, reference)]
            by_label = judges.win_rates(labels, *side_scores, judge.higher_is_better, config.seed)
            result["judges"][judge.name] = {"path": judge.path, "higher_is_better": judge.higher_is_better,
                                            "by_label": by_label}
            del judge_model  # one judge in memory at a time

    # ---- 4. general capability
    if tasks:
        result["capability"] = {"limit": config.task_limit, "tasks": capability.evaluate_capability(
            model, ref_model, tokenizer, tasks, manager, limit=config.task_limit, batch_size=config.batch_size,
            seed=config.seed)}

    write_atomic(out / "eval.json", json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    write_eval_report(out, result, generations)
    print(f"basealign eval: written to {out} (eval.json, eval.md, balance.png, generations.html)")
    return out


def _write_lines(path: Path, lines: list[dict]) -> None:
    write_atomic(path, "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
