"""`basealign score`: per-pair chosen / rejected log-prob sums and the implicit reward margin.

MODEL_OR_RUN is one of:

  a LoRA run directory   recipe.yaml + adapter_config.json: the base model (adapter_config's
                         base_model_name_or_path, else RUN/base_model, else the recipe's
                         model) with the adapter applied is the policy; the same model with
                         the adapter disabled is the reference; the tokenizer and its chat
                         template come from the run directory, max_length, beta and the
                         batching from its recipe.yaml.
  a full-model run dir   config.json + recipe.yaml: the run's model is the policy; the
                         recipe's base model (RUN/base_model for a builtin one) is the
                         reference, as in training. Without recipe.yaml: policy only.
  a model folder/hub id  policy only; recipe defaults (plus overrides) apply.

Each pair becomes one JSON line, in input order, split by split (train, then test):

  split, index (row in that split), source, label, prompt_tokens, chosen_tokens,
  rejected_tokens, truncated, chosen_logps, rejected_logps, ref_chosen_logps,
  ref_rejected_logps, reference, beta, margin

With a reference, margin = beta * ((pi_c - ref_c) - (pi_r - ref_r)) (DPO's implicit
reward margin); without one, `reference` is null, the ref_* fields and beta are null and
margin = pi_c - pi_r. Pairs that tokenization drops (empty or identical responses, a
prompt that fills max_length) get no line; the summary counts them by reason.

The packed, prefix-shared fast path runs by default; `--packing false` runs the padded
reference path on the same groups of pairs.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from basealign.fastpath import attention
from basealign.config import Recipe, apply_overrides, load_recipe, recipe_from_dict
from basealign.errors import BasealignError
from basealign.files import check_writable, write_atomic

SPLITS = ("train", "test")


# ----------------------------------------------------------------------------- resolving inputs


@dataclass
class ModelSpec:
    """Where the policy (and, for a LoRA run, the adapter) comes from."""

    model_path: str  # the full model, or the base model of a LoRA run
    tokenizer_path: str
    adapter_dir: str | None  # a LoRA run directory
    recipe: Recipe
    kind: str  # "lora run", "full run", "model"
    ref_model_path: str | None = None  # the frozen base model of a full fine-tuning run


def _override_keys(overrides) -> set[str]:
    return {item.split("=", 1)[0].strip() for item in overrides if "=" in item}


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))


def resolve_model(spec: str, overrides=()) -> ModelSpec:
    """Classify MODEL_OR_RUN and read its recipe (run dirs) or the defaults (anything else)."""
    from basealign.models.loading import looks_local, resolve_model_path
    from basealign.models.tiny import BUILTIN_PREFIX

    overrides = list(overrides)
    if spec.startswith(BUILTIN_PREFIX):
        recipe = recipe_from_dict(apply_overrides({"model": {"name_or_path": spec}}, overrides))
        path = resolve_model_path(spec, Path(tempfile.gettempdir()) / "basealign-score" / spec.removeprefix(BUILTIN_PREFIX))
        return ModelSpec(path, path, None, recipe, "model")
    if not looks_local(spec):  # a hub id
        from basealign.hub.reach import require_hub_repo

        require_hub_repo(spec)
        recipe = recipe_from_dict(apply_overrides({"model": {"name_or_path": spec}}, overrides))
        return ModelSpec(spec, spec, None, recipe, "model")

    folder = Path(spec).expanduser()
    if not folder.exists():
        raise BasealignError(f"model path does not exist: {spec}")
    if not folder.is_dir():
        raise BasealignError(f"{spec} is a file, not a model folder or run directory")
    folder = folder.resolve()
    has_adapter = (folder / "adapter_config.json").is_file()
    if not has_adapter and not (folder / "config.json").is_file():
        raise BasealignError(f"{spec} holds no model: expected adapter_config.json (LoRA run) or config.json (model folder)")

    recipe_file = folder / "recipe.yaml"
    if recipe_file.is_file():
        recipe = load_recipe(recipe_file, overrides)
    else:
        recipe = recipe_from_dict(apply_overrides({"model": {"name_or_path": str(folder)}}, overrides))

    if not has_adapter:
        if not recipe_file.is_file():
            return ModelSpec(str(folder), str(folder), None, recipe, "model")
        return ModelSpec(str(folder), str(folder), None, recipe, "full run", _full_run_base_model(folder, recipe))

    base = _resolve_base_model(folder, recipe, "model.name_or_path" in _override_keys(overrides))
    tokenizer_path = str(folder) if _has_tokenizer(folder) else base
    return ModelSpec(base, tokenizer_path, str(folder), recipe, "lora run")


def _full_run_base_model(run: Path, recipe: Recipe) -> str:
    """The model a full fine-tuning run started from: its reference."""
    from basealign.hub.reach import require_hub_repo
    from basealign.models.loading import resolve_model_path

    name = recipe.model.name_or_path
    if Path(name).expanduser().resolve() == run:
        raise BasealignError(f"{run}/recipe.yaml names the run itself as its base model; "
                             "pass model.name_or_path=BASE to score against the base model")
    path = resolve_model_path(name, run)
    require_hub_repo(path, recipe.model.revision)
    return path


def _resolve_base_model(run: Path, recipe: Recipe, overridden: bool) -> str:
    from basealign.models.loading import lora_run_base_model, resolve_model_path

    if overridden:  # model.name_or_path=... on the command line wins
        return resolve_model_path(recipe.model.name_or_path, run)
    try:
        declared = json.loads((run / "adapter_config.json").read_text()).get("base_model_name_or_path")
    except (OSError, ValueError) as err:
        raise BasealignError(f"{run / 'adapter_config.json'} is not valid JSON: {err}") from None
    return lora_run_base_model(run, declared, recipe.model.name_or_path)


# ----------------------------------------------------------------------------- tokenizing


@dataclass
class SplitRecords:
    split: str
    rows: list[dict]
    records: list[dict]  # tokenize_pairs records: each knows its row ("index") and "truncated"
    dropped: Counter
    truncated: int


def tokenize_split(split: str, rows: list[dict], tokenizer, recipe: Recipe) -> SplitRecords:
    from basealign.models.tokenize_pairs import tokenize_pairs

    pairs = tokenize_pairs(rows, tokenizer, recipe.data.max_length, recipe.data.max_prompt_length)
    return SplitRecords(split, rows, pairs.records, pairs.dropped, pairs.truncated)


# ----------------------------------------------------------------------------- scoring


def load_scoring_model(spec: ModelSpec, device: torch.device, packing: bool = True):
    """(policy, reference) in eval mode on DEVICE. The reference is None without one, and the
    policy itself (its adapter switched off while scoring) for a LoRA run."""
    from basealign.models.loading import check_packed_support, frozen, load_model

    ref_model = None
    if spec.ref_model_path is not None:
        ref_model = frozen(load_model(spec.recipe.model, spec.ref_model_path, device))
    model = load_model(spec.recipe.model, spec.model_path)
    check_packed_support(model, packing)
    if spec.adapter_dir is not None:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, spec.adapter_dir, is_trainable=False)
        except (OSError, ValueError) as err:
            raise BasealignError(f"cannot load the adapter from {spec.adapter_dir}: {str(err).splitlines()[0]}") from None
    model.to(device)
    model.eval()
    return model, model if spec.adapter_dir is not None else ref_model


def score_records(model, records: list[dict], *, ref_model, packing: bool, prefix_sharing: bool,
                  budget: int, backend: str, pad_token_id: int, pad_to_multiple_of: int | None, device,
                  progress=None) -> list[tuple[float, float, float | None, float | None]]:
    """(pi_c, pi_r, ref_c, ref_r) per record, in record order. REF_MODEL: None, a separate
    model, or MODEL itself (a LoRA policy, scored again with its adapter off)."""
    from basealign.fastpath.packing import collate_packed, collate_padded, group_by_token_budget
    from basealign.training.step import reference_logps, sequence_logps

    sharing = packing and prefix_sharing
    results: list[tuple] = []
    for group in group_by_token_budget(records, budget, seed=None, prefix_sharing=sharing, padded=not packing):
        chunk = [records[i] for i in group]
        if packing:
            batch = collate_packed(chunk, sharing, pad_to_multiple_of, pad_token_id, backend)
        else:
            batch = collate_padded(chunk, pad_token_id, pad_to_multiple_of)
        batch = batch.to(device)
        n = len(chunk)
        with torch.no_grad():
            policy = sequence_logps(model, batch).double().cpu().tolist()
            ref = None
            if ref_model is not None:  # the step's own rule: a separate model, or the adapter off
                ref = reference_logps(model, None if ref_model is model else ref_model, batch).double().cpu().tolist()
        for j in range(n):
            results.append((policy[j], policy[n + j], ref[j] if ref else None, ref[n + j] if ref else None))
        if progress is not None:
            progress.update(n)
    return results


def reference_name(policy, ref_model, recipe: Recipe) -> str | None:
    """What the `reference` field of a pair line says: where the reference log-probs come from."""
    if ref_model is None:
        return None
    return "base model (adapter disabled)" if ref_model is policy else f"base model {recipe.model.name_or_path}"


def pair_line(split: str, row: dict, record: dict, values, beta: float, reference: str | None) -> dict:
    pi_c, pi_r, ref_c, ref_r = values
    if reference is not None:
        margin = beta * ((pi_c - ref_c) - (pi_r - ref_r))
    else:
        margin = pi_c - pi_r
    return {
        "split": split,
        "index": record["index"],
        "source": row.get("source"),
        "label": row.get("label"),
        "prompt_tokens": len(record["prompt_ids"]),
        "chosen_tokens": len(record["chosen_ids"]),
        "rejected_tokens": len(record["rejected_ids"]),
        "truncated": record["truncated"],
        "chosen_logps": pi_c,
        "rejected_logps": pi_r,
        "ref_chosen_logps": ref_c,
        "ref_rejected_logps": ref_r,
        "reference": reference,
        "beta": beta if reference is not None else None,
        "margin": margin,
    }


def _check_out(out: str) -> Path:
    path = Path(out).expanduser()
    if path.is_dir():
        raise BasealignError(f"--out: {out} is a folder; give a file name (e.g. scores.jsonl)")
    check_writable(path.parent, "--out")  # before the scoring, not after it
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BasealignError(f"--out: cannot create {path.parent}: {err.strerror or err}") from None
    return path


def score(model: str, pairs: str, out: str, packing: bool = True, overrides=()) -> Path:
    """Score every split of PAIRS under MODEL; write OUT (JSON lines); print a one-line summary."""
    from basealign.data_prep.prepare import load_pairs, resolve_pairs
    from tqdm.auto import tqdm

    from basealign.models.loading import load_tokenizer

    out_path = _check_out(out)
    with tempfile.TemporaryDirectory(prefix="basealign-score-") as tmp:
        # Cheap checks first: a wrong path fails before any model is loaded.
        spec = resolve_model(model, overrides)
        pairs_dir = resolve_pairs(pairs, Path(tmp) / "pairs", label="--pairs")
        recipe = spec.recipe

        # The run's saved tokenizer carries the template it trained with; a model folder's
        # own template is kept too (else the default); an explicit override wins.
        template = recipe.model.chat_template if "model.chat_template" in _override_keys(overrides) else None
        try:
            tokenizer = load_tokenizer(spec.tokenizer_path, template, recipe.model.revision)
        except BasealignError as err:
            if spec.kind == "model" and not Path(spec.model_path).exists():
                raise BasealignError(f"{model} is neither a local model path nor a loadable hub id ({err})") from None
            raise
        splits: list[SplitRecords] = []
        for split in SPLITS:
            if split == "train" or (pairs_dir / f"{split}.parquet").is_file():
                splits.append(tokenize_split(split, load_pairs(pairs_dir, split), tokenizer, recipe))
        n_rows = sum(len(s.rows) for s in splits)
        n_records = sum(len(s.records) for s in splits)
        if n_rows == 0:
            raise BasealignError(f"--pairs: {pairs} holds no pairs (every split is empty)")

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        policy, ref_model = load_scoring_model(spec, device, packing)
        has_reference = ref_model is not None
        try:
            backend, _why = attention.choose_backend(recipe.model.attn_implementation, device, policy.dtype, policy.config)
        except ValueError as err:
            raise BasealignError(f"model.attn_implementation: {err}") from None

        reference = reference_name(policy, ref_model, recipe)
        beta = recipe.loss.beta
        training = recipe.training
        lines: list[dict] = []
        with tqdm(total=n_records, desc="scoring", unit=" pairs", disable=None) as progress:
            for part in splits:
                if not part.records:
                    continue
                values = score_records(
                    policy, part.records, ref_model=ref_model, packing=packing,
                    prefix_sharing=training.prefix_sharing, budget=training.max_tokens_per_batch, backend=backend,
                    pad_token_id=tokenizer.pad_token_id, pad_to_multiple_of=training.pad_to_multiple_of,
                    device=device, progress=progress,
                )
                for record, value in zip(part.records, values):
                    lines.append(pair_line(part.split, part.rows[record["index"]], record, value, beta, reference))

    write_atomic(out_path, "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
    print(summary(lines, splits, has_reference, packing, backend, out_path))
    return out_path


def summary(lines: list[dict], splits: list[SplitRecords], has_reference: bool, packing: bool, backend: str,
            out_path: Path) -> str:
    n = len(lines)
    per_split = ", ".join(f"{sum(1 for l in lines if l['split'] == s.split)} {s.split}" for s in splits)
    accuracy = sum(1 for l in lines if l["margin"] > 0) / n if n else float("nan")
    metric = "reward accuracy" if has_reference else "log-prob accuracy (no reference: margin = chosen - rejected)"
    dropped = Counter()
    truncated = 0
    for s in splits:
        dropped.update(s.dropped)
        truncated += s.truncated
    text = f"basealign score: {n} pairs scored ({per_split}), {metric} {accuracy:.1%}"
    if dropped:
        text += f", {sum(dropped.values())} dropped (" + ", ".join(f"{k} {why}" for why, k in sorted(dropped.items())) + ")"
    else:
        text += ", 0 dropped"
    if truncated:
        text += f", {truncated} truncated to data.max_length"
    path = f"packed, {backend}" if packing else "padded"
    return text + f"; {path}; written to {out_path}"
