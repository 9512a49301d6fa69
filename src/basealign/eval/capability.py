"""General capability, base vs aligned, with lm-evaluation-harness.

The harness runs through its Python API (`simple_evaluate`) on the model objects already
loaded, wrapped in its `HFLM`: the aligned model as is (LoRA applied), the base model with
the adapter disabled (or, for a full fine-tune, the base model itself). Each task reports
its metrics with the harness's own stderr; the difference is aligned minus base. Task
names are checked before any model is loaded, and a task folder of the user's (the
harness's `include_path`) is read alone when it defines every task asked for, which spares
indexing the harness's thousands of builtin task files.
"""

from __future__ import annotations

import contextlib
import difflib
import logging

from basealign.errors import BasealignError

# The general benchmarks of the paper this project follows (Zheng et al., 2024), as harness tasks.
PAPER_TASKS = ("mmlu", "hellaswag", "winogrande", "piqa", "arc_easy", "arc_challenge", "boolq", "gsm8k",
               "openbookqa", "lambada_openai", "truthfulqa_mc2")
# The metric shown in the summary table and the picture, first found wins.
HEADLINE_METRICS = ("acc,none", "exact_match,strict-match", "exact_match,flexible-extract", "acc_norm,none")


def expand(tasks: list[str]) -> list[str]:
    """Task names with 'paper' replaced by the paper's suite, without repeats."""
    names: list[str] = []
    for task in tasks:
        for name in PAPER_TASKS if task == "paper" else (task,):
            if name not in names:
                names.append(name)
    return names


def task_manager(tasks: list[str], task_paths: list[str]):
    """An lm-eval TaskManager that knows every task in TASKS; one line for an unknown task."""
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise BasealignError("--tasks needs lm-evaluation-harness: pip install 'basealign[eval]'") from None
    paths = [str(p) for p in task_paths]
    if paths:
        local = TaskManager(include_path=paths, include_defaults=False)
        if all(t in local.all_tasks for t in tasks):
            return local
    manager = TaskManager(include_path=paths or None)
    for task in tasks:
        if task not in manager.all_tasks:
            close = difflib.get_close_matches(task, manager.all_tasks, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise BasealignError(f"--tasks: unknown lm-eval task '{task}'{hint}")
    return manager


def evaluate_capability(model, ref_model, tokenizer, tasks: list[str], manager, *, limit: int | None,
                        batch_size: int, seed: int) -> dict:
    """{task: {metric: {base, aligned, delta, base_stderr, aligned_stderr}}} for each task (or group)
    asked. REF_MODEL: a full fine-tune's base model, or MODEL itself (LoRA: run with the adapter off)."""
    from basealign.models.loading import reference_context

    aligned = _run(model, tokenizer, tasks, manager, limit, batch_size, seed)
    with reference_context(ref_model):
        base = _run(ref_model, tokenizer, tasks, manager, limit, batch_size, seed)
    out: dict = {}
    for task in tasks:
        a, b = aligned.get(task, {}), base.get(task, {})
        metrics = {}
        for key, value in a.items():
            # metric keys read "name,filter"; others (alias, sample_len) and the stderr entries are not metrics
            if "," not in key or "_stderr," in key or not isinstance(value, (int, float)) or key not in b:
                continue
            stderr_key = key.replace(",", "_stderr,", 1)
            metrics[key] = {
                "base": b[key], "aligned": value, "delta": value - b[key],
                "base_stderr": _number(b.get(stderr_key)), "aligned_stderr": _number(a.get(stderr_key)),
            }
        out[task] = metrics
    return out


def headline(metrics: dict) -> str | None:
    """The metric a task is summarised by."""
    for key in HEADLINE_METRICS:
        if key in metrics:
            return key
    return next(iter(metrics), None)


def _number(value):
    return value if isinstance(value, (int, float)) else None  # the harness writes "N/A" when it has none


def _run(model, tokenizer, tasks, manager, limit, batch_size, seed) -> dict:
    from accelerate.utils import extract_model_from_parallel
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    from basealign.eval.generate import plain_attention
    from basealign.models.loading import is_peft

    inner = extract_model_from_parallel(model)
    # The harness wants a transformers model; a PEFT model's inner one carries the adapter layers.
    hf_model = inner.get_base_model() if is_peft(inner) else inner
    # Generative tasks batch left-padded prompts: SDPA masks them (see eval/generate.py).
    with plain_attention(hf_model), _quiet():
        lm = HFLM(pretrained=hf_model, tokenizer=tokenizer, batch_size=batch_size)
        result = simple_evaluate(model=lm, tasks=list(tasks), task_manager=manager, limit=limit, log_samples=False,
                                 random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                                 fewshot_random_seed=seed, bootstrap_iters=1000)
    return result["results"]


@contextlib.contextmanager
def _quiet():
    # The harness logs every request, and warns that it was handed a loaded model (on purpose here).
    log = logging.getLogger("lm_eval")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)
