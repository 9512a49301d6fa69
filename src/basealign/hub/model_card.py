"""The model card (README.md) of a published run.

The card is built only from what the run directory holds: the resolved recipe, the data
statistics, the metrics log and the final evaluation results. Nothing in it depends on
the clock or the machine, so publishing the same run twice writes the same bytes (and
the Hub sees no change).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from basealign.errors import BasealignError
from basealign.models.tiny import BUILTIN_PREFIX
from basealign.report import markdown_table, split_metrics

DEFAULT_LICENSE = "apache-2.0"

# Things that end like a file are local paths even when they look like OWNER/NAME.
_FILE_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv", ".tsv", ".txt", ".yaml", ".yml", ".gz", ".arrow", ".zip", ".tar")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def looks_like_hub_id(name: Any, *, relative_to: Path | None = None) -> bool:
    """True when `name` reads as OWNER/NAME on the Hub and is not a local path or a builtin model."""
    if not isinstance(name, str) or name.startswith(BUILTIN_PREFIX):
        return False
    if not _HUB_ID.match(name) or name.lower().endswith(_FILE_SUFFIXES) or ".." in name:
        return False
    if Path(name).exists() or (relative_to is not None and (relative_to / name).exists()):
        return False
    return True


def _loss_types(recipe: dict) -> list[str]:
    loss_type = (recipe.get("loss") or {}).get("type")
    if loss_type is None:
        return []
    if isinstance(loss_type, str):
        return [loss_type]
    return [str(t) for t in loss_type]


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else "—"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value) if value else "—"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: tuple[str, ...], rows: list[tuple]) -> list[str]:
    return markdown_table(header, rows, _fmt)


def _is_hub_source(source: dict, run_dir: Path | None) -> bool:
    # prepare records where each source came from; a hand-written stats file may not
    return source["hub"] if "hub" in source else looks_like_hub_id(source.get("path"), relative_to=run_dir)


def dataset_ids(data_stats: dict | None, run_dir: Path | None = None) -> list[str]:
    """Hub dataset ids among the data sources, in source order, without repeats."""
    found: list[str] = []
    for source in ((data_stats or {}).get("sources") or {}).values():
        if isinstance(source, dict) and _is_hub_source(source, run_dir) and source.get("path") not in found:
            found.append(source["path"])
    return found


def card_base_model(recipe: dict, adapter_config: dict | None, run_dir: Path | None = None) -> str | None:
    """The base model's hub id, or None for builtin models and local folders."""
    name = (recipe.get("model") or {}).get("name_or_path")
    if looks_like_hub_id(name, relative_to=run_dir):
        return name
    if name is None and adapter_config:
        other = adapter_config.get("base_model_name_or_path")
        if looks_like_hub_id(other, relative_to=run_dir):
            return other
    return None


def last_metrics(metrics: list[dict]) -> tuple[dict, dict]:
    """(last training line, last eval line's `eval/` values and step) of the metrics log."""
    train, evals = split_metrics(metrics)
    last_eval = {k: v for k, v in evals[-1].items() if k.startswith("eval/") or k == "step"} if evals else {}
    return (train[-1] if train else {}), last_eval


_TRAIN_KEYS = (
    "step", "epoch", "loss", "rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected",
    "logps/chosen", "logps/rejected", "learning_rate", "tokens_per_second",
)


def build_model_card(
    *,
    repo_id: str | None,
    recipe: dict,
    adapter_config: dict | None,
    data_stats: dict | None,
    metrics: list[dict],
    eval_results: dict | None,
    kind: str,
    run_dir: Path | None = None,
    has_chat_template: bool = True,
) -> ModelCard:
    """The card for a run published as `kind`: "adapter", "merged" or "full".

    The front matter follows the Hub's model card metadata; the body summarises the
    recipe, the data mixture, the final metrics and how to load the model.
    """
    if kind not in ("adapter", "merged", "full"):
        raise ValueError(f"unknown kind {kind!r}")
    model = recipe.get("model") or {}
    lora = recipe.get("lora") or (adapter_config and {
        "r": adapter_config.get("r"),
        "alpha": adapter_config.get("lora_alpha"),
        "dropout": adapter_config.get("lora_dropout"),
        "target_modules": adapter_config.get("target_modules"),
    }) or None
    loss = recipe.get("loss") or {}
    training = recipe.get("training") or {}
    hub = recipe.get("hub") or {}
    losses = _loss_types(recipe)
    base_model = card_base_model(recipe, adapter_config, run_dir)
    datasets = dataset_ids(data_stats, run_dir)
    base_name = model.get("name_or_path") or (adapter_config or {}).get("base_model_name_or_path") or "unknown"

    tags = ["basealign", "dpo", *losses]
    if kind == "adapter":
        tags += ["lora", "peft"]
    tags.append("preference-optimization")
    data = ModelCardData(
        base_model=base_model,
        library_name="peft" if kind == "adapter" else "transformers",
        license=str(hub.get("license") or DEFAULT_LICENSE),
        datasets=datasets or None,
        tags=tags,
        pipeline_tag="text-generation",
    )

    title = repo_id.split("/")[-1] if repo_id else "basealign run"
    what = {
        "adapter": "a LoRA adapter",
        "merged": "a full model (LoRA adapter merged into the base weights)",
        "full": "a fully fine-tuned model",
    }[kind]
    body: list[str] = [f"# {title}", ""]
    body.append(
        f"This is {what} for the base model `{base_name}`, aligned directly with offline preference "
        f"optimization ({', '.join(losses) or 'unknown loss'}) with basealign: the base model is "
        "aligned for harmlessness and helpfulness directly, without a supervised fine-tuning step."
    )
    if base_model is None:
        body += ["", f"The base model `{base_name}` is not a Hub model (a built-in or local model); "
                 "load it from where the run was made."]

    body += ["", "## Recipe", ""]
    rows: list[tuple] = [
        ("loss", " + ".join(losses) or "—"),
        ("loss weights", loss.get("weights")),
        ("beta", loss.get("beta")),
        ("label smoothing", loss.get("label_smoothing")),
        ("dtype", model.get("dtype")),
        ("chat template", model.get("chat_template") if isinstance(model.get("chat_template"), str)
         and "\n" not in model.get("chat_template", "") and len(model.get("chat_template", "")) <= 40 else
         ("custom" if model.get("chat_template") else None)),
    ]
    if lora:
        rows += [
            ("LoRA r", lora.get("r")),
            ("LoRA alpha", lora.get("alpha")),
            ("LoRA dropout", lora.get("dropout")),
            ("LoRA target modules", lora.get("target_modules")),
        ]
    else:
        rows.append(("LoRA", "none (full fine-tune)"))
    for key in ("learning_rate", "num_epochs", "max_tokens_per_batch", "gradient_accumulation_steps", "packing",
                "prefix_sharing", "seed"):
        if key in training:
            rows.append((key.replace("_", " "), training[key]))
    if (recipe.get("data") or {}).get("max_length") is not None:
        rows.append(("max length", recipe["data"]["max_length"]))
    if not recipe:
        body.append("The run directory holds no recipe; its settings are unknown.")
    else:
        body += _table(("setting", "value"), [r for r in rows if r[1] is not None])
        body += ["", "The full resolved recipe is in `recipe.yaml`."]

    body += ["", "## Data mixture", ""]
    splits = (data_stats or {}).get("splits") or {}
    sources = (data_stats or {}).get("sources") or {}
    if not splits and not sources:
        body.append("The data mixture is unknown (the run has no `data_stats.json`).")
    for split_name, split in splits.items():
        body += [f"**{split_name}**: {split.get('rows', '?')} pairs", ""]
        by_source = split.get("by_source") or {}
        if by_source:
            body += _table(("source", "pairs"), sorted(by_source.items()))
            body.append("")
        by_label = split.get("by_label") or {}
        if by_label:
            body += _table(("label", "pairs"), sorted(by_label.items()))
            body.append("")
    if sources:
        body += ["Sources:", ""]
        body += _table(
            ("name", "type", "path", "label", "read", "kept"),
            [(n, s.get("type"), f"{s.get('path')} ({'hub' if _is_hub_source(s, run_dir) else 'local'})",
              s.get("label"), s.get("read"), s.get("kept"))
             for n, s in sources.items() if isinstance(s, dict)],
        )

    train, evals = last_metrics(metrics)
    evals = {**evals, **{(k if k.startswith("eval/") else f"eval/{k}"): v for k, v in (eval_results or {}).items()}}
    body += ["", "## Results", ""]
    if train:
        body += ["Final training log line:", ""]
        keys = [k for k in _TRAIN_KEYS if k in train] + sorted(k for k in train if k not in _TRAIN_KEYS)
        body += _table(("metric", "value"), [(k, train[k]) for k in keys])
        body.append("")
    if evals:
        eval_step = evals.pop("step", None)
        body += [f"Evaluation (step {eval_step}):" if eval_step is not None else "Evaluation:", ""]
        body += _table(("metric", "value"), [(k, evals[k]) for k in sorted(evals)])
        body.append("")
    if not train and not evals:
        body += ["The run recorded no metrics.", ""]
    body += eval_section(run_dir)

    body += ["## Usage", "", "```python"]
    load_id = repo_id or "OWNER/NAME"
    if kind == "adapter":
        if base_model is not None:
            load_base = [f'base = AutoModelForCausalLM.from_pretrained("{base_model}")']
        elif str(base_name).startswith(BUILTIN_PREFIX):
            load_base = [
                "from basealign.models.tiny import materialize_builtin",
                "",
                f'base = AutoModelForCausalLM.from_pretrained(materialize_builtin("{base_name}", "base_model"))',
            ]
        else:
            load_base = [f'base = AutoModelForCausalLM.from_pretrained("{base_name}")  # the local base model folder']
        body += [
            "from peft import PeftModel",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            *load_base,
            f'model = PeftModel.from_pretrained(base, "{load_id}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{load_id}")',
        ]
    else:
        body += [
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f'model = AutoModelForCausalLM.from_pretrained("{load_id}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{load_id}")',
        ]
    body.append("")
    if has_chat_template:
        body += [
            'messages = [{"role": "user", "content": "How do I keep my houseplants alive?"}]',
            "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\", "
            "return_dict=True)",
        ]
    else:
        body += ['inputs = tokenizer("How do I keep my houseplants alive?", return_tensors="pt")']
    body += [
        "output = model.generate(**inputs, max_new_tokens=128)",
        'print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))',
        "```",
        "",
    ]
    if kind == "adapter" and base_model is not None:
        body += ["With `peft` installed, `AutoPeftModelForCausalLM.from_pretrained(...)` loads base and adapter in one "
                 "call when the base model is on the Hub.", ""]

    text = "\n".join(body)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{text}")


def eval_section(run_dir: Path | None) -> list[str]:
    """The balance table of `basealign eval` (RUN/eval/eval.json), aligned vs base, when it exists."""
    try:
        result = read_json(Path(run_dir) / "eval" / "eval.json") if run_dir is not None else None
    except json.JSONDecodeError:
        raise BasealignError(f"{Path(run_dir) / 'eval' / 'eval.json'} is not valid JSON; run basealign eval again") from None
    if not result:
        return []
    from basealign.eval.report import summary_rows

    return ["## Evaluation: aligned vs base", "", *_table(("measure", "value"), summary_rows(result)), "",
            "Details in `eval/eval.md` of the run (`basealign eval`).", ""]


def read_json(path: Path) -> dict | None:
    """A JSON object from `path`, or None when the file is absent."""
    if not path.is_file():
        return None
    value = json.loads(path.read_text(encoding="utf-8"))
    return value if isinstance(value, dict) else None
