"""Publish a run directory to the Hugging Face Hub: `basealign push RUN_DIR --repo-id OWNER/NAME`.

What goes up: the LoRA adapter (or, with `merged=True`, the base model with the adapter
merged in, as sharded safetensors; or the full model of a full fine-tuning run), the
tokenizer files, the resolved recipe, the metrics log, the data statistics and a model
card (README.md). Everything is first written to a staging folder in a temporary
directory; a dry run moves that folder to its destination only once it is complete.

Uploads go through huggingface_hub: `HfApi.create_repo(exist_ok=True)`, then one
`upload_folder` of the staged folder, which leaves out the files whose content the repo
already has and deletes stale model weights (`delete_patterns`: switching between adapter
and merged uploads). An unchanged run therefore makes no commit at all.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from basealign.errors import BasealignError
from basealign.files import check_writable
from basealign import __version__
from basealign.hub.reach import endpoint as hub_endpoint, unreachable_errors
from basealign.hub.model_card import build_model_card, looks_like_hub_id, read_json
from basealign.report import metrics_lines

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
)
RUN_FILES = ("recipe.yaml", "metrics.jsonl", "data_stats.json", "eval_results.json")
# What `basealign eval` leaves in RUN/eval/, uploaded under eval/ beside the model card's table
EVAL_FILES = ("eval.json", "eval.md", "balance.png", "pairs.jsonl", "generations.jsonl", "generations.html")
FULL_MODEL_PATTERNS = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
)
# Remote files a push may delete when the new upload no longer has them: model weights and
# their configs only, so that an adapter push after a merged push (or the reverse) leaves
# one loadable model in the repo. Anything else in the repo is left alone.
STALE_PATTERNS = (
    *ADAPTER_FILES,
    "adapter_model.bin",
    *FULL_MODEL_PATTERNS,
    "pytorch_model*.bin",
    "pytorch_model.bin.index.json",
)
DEFAULT_SHARD_SIZE = "5GB"


@dataclass
class Run:
    """What a run directory holds, as far as publishing cares."""

    path: Path
    kind: str  # "adapter" or "full"
    recipe: dict = field(default_factory=dict)
    adapter_config: dict | None = None


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def inspect_run(run_dir: str | os.PathLike) -> Run:
    """Check that `run_dir` holds a model and read its recipe; BasealignError otherwise."""
    path = Path(run_dir).expanduser()
    if not path.is_dir():
        raise BasealignError(f"run directory {path} does not exist")
    path = path.resolve()
    if all((path / f).is_file() for f in ADAPTER_FILES):
        kind = "adapter"
    elif (path / "config.json").is_file() and any(
        _matches(p.name, ("model.safetensors", "model-*-of-*.safetensors")) for p in path.iterdir()
    ):
        kind = "full"
    else:
        raise BasealignError(
            f"{path} holds no model: expected adapter_config.json + adapter_model.safetensors (LoRA run) "
            "or config.json + model.safetensors (full fine-tune)"
        )
    recipe: dict = {}
    recipe_path = path / "recipe.yaml"
    if recipe_path.is_file():
        import yaml

        try:
            loaded = yaml.safe_load(recipe_path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise BasealignError(f"{recipe_path} is not valid YAML: {str(err).splitlines()[0]}") from None
        recipe = loaded if isinstance(loaded, dict) else {}
    adapter_config = None
    if kind == "adapter":
        try:
            adapter_config = read_json(path / "adapter_config.json")
        except json.JSONDecodeError as err:
            raise BasealignError(f"{path / 'adapter_config.json'} is not valid JSON: {err}") from None
    return Run(path=path, kind=kind, recipe=recipe, adapter_config=adapter_config)


def _check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise BasealignError(f"--repo-id must be OWNER/NAME, got {repo_id!r}")
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise BasealignError(f"--repo-id {repo_id!r} is not a valid Hub repo id (OWNER/NAME)") from None


def _save_merged(run: Run, target: Path, max_shard_size: int | str) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from basealign.models.loading import lora_run_base_model

    declared = (run.adapter_config or {}).get("base_model_name_or_path")
    base_ref = lora_run_base_model(run.path, declared, (run.recipe.get("model") or {}).get("name_or_path"))
    try:
        base = AutoModelForCausalLM.from_pretrained(base_ref, dtype="auto")
    except (OSError, ValueError) as err:
        raise BasealignError(f"cannot load base model {base_ref} for merging: {str(err).splitlines()[0]}") from None
    with torch.no_grad():
        model = PeftModel.from_pretrained(base, str(run.path))
        merged = model.merge_and_unload()
    merged.save_pretrained(target, max_shard_size=max_shard_size)


def _copy_adapter_config(run: Run, target: Path) -> None:
    """Copy adapter_config.json, pointing base_model_name_or_path at the Hub id when the run used a local copy of one."""
    src = run.path / "adapter_config.json"
    config = dict(run.adapter_config or {})
    declared = config.get("base_model_name_or_path")
    recipe_name = (run.recipe.get("model") or {}).get("name_or_path")
    if looks_like_hub_id(recipe_name) and declared != recipe_name and not looks_like_hub_id(declared):
        config["base_model_name_or_path"] = recipe_name
        (target / src.name).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    else:
        shutil.copyfile(src, target / src.name)


def _has_chat_template(path: Path) -> bool:
    if (path / "chat_template.jinja").is_file() or (path / "chat_template.json").is_file():
        return True
    try:
        return bool((read_json(path / "tokenizer_config.json") or {}).get("chat_template"))
    except json.JSONDecodeError:
        return False


def stage(
    run: Run,
    target: Path,
    *,
    repo_id: str | None,
    merged: bool = False,
    max_shard_size: int | str = DEFAULT_SHARD_SIZE,
) -> list[str]:
    """Write the upload folder for `run` into the (empty) directory `target`; return its file names, sorted."""
    kind = "merged" if (merged and run.kind == "adapter") else run.kind
    if kind == "adapter":
        _copy_adapter_config(run, target)
        shutil.copyfile(run.path / "adapter_model.safetensors", target / "adapter_model.safetensors")
    elif kind == "merged":
        _save_merged(run, target, max_shard_size)
    else:
        for item in sorted(run.path.iterdir()):
            if item.is_file() and _matches(item.name, FULL_MODEL_PATTERNS):
                shutil.copyfile(item, target / item.name)
    for name in (*TOKENIZER_FILES, *RUN_FILES):
        src = run.path / name
        if src.is_file() and not (target / name).exists():
            shutil.copyfile(src, target / name)
    for name in EVAL_FILES:
        if (run.path / "eval" / name).is_file():
            (target / "eval").mkdir(exist_ok=True)
            shutil.copyfile(run.path / "eval" / name, target / "eval" / name)

    try:
        data_stats = read_json(run.path / "data_stats.json")
    except json.JSONDecodeError:
        data_stats = None
    try:
        eval_results = read_json(run.path / "eval_results.json")
    except json.JSONDecodeError:
        eval_results = None
    card = build_model_card(
        repo_id=repo_id,
        recipe=run.recipe,
        adapter_config=run.adapter_config,
        data_stats=data_stats,
        metrics=metrics_lines(run.path / "metrics.jsonl"),
        eval_results=eval_results,
        kind=kind,
        run_dir=run.path,
        has_chat_template=_has_chat_template(run.path),
    )
    (target / "README.md").write_text(card.content, encoding="utf-8")
    return sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())


def _dry_run(run: Run, dest: Path, *, repo_id: str, merged: bool, max_shard_size: int | str) -> list[str]:
    dest = dest.expanduser().absolute()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BasealignError(f"--dry-run folder {dest} already exists and is not empty")
    if not dest.parent.is_dir():
        raise BasealignError(f"--dry-run folder's parent {dest.parent} does not exist")
    check_writable(dest.parent, "--dry-run")
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        files = stage(run, tmp, repo_id=repo_id, merged=merged, max_shard_size=max_shard_size)
        if dest.is_dir():
            dest.rmdir()
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return files


def _hub_error(err: BaseException, repo_id: str, endpoint: str) -> BasealignError:
    """One clear line for a failed Hub call."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(err, OfflineModeIsEnabled):
        return BasealignError("HF_HUB_OFFLINE is set; unset it to push")
    if isinstance(err, HfHubHTTPError):
        status = err.response.status_code if err.response is not None else None
        if status == 401:
            return BasealignError(f"{endpoint} rejected the token (401 Unauthorized); set HF_TOKEN to a valid write token or run `hf auth login`")
        if status == 403:
            return BasealignError(
                f"not allowed to write to {repo_id} (403 Forbidden): the repo or namespace belongs to someone else, "
                "or the token has no write access"
            )
        if status == 404:
            return BasealignError(f"{repo_id} not found on {endpoint} (404); check --repo-id and the token's access")
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return BasealignError(f"the Hub at {endpoint} answered {status}: {first}")
    if isinstance(err, unreachable_errors()):
        return BasealignError(f"cannot reach the Hub at {endpoint} ({type(err).__name__}); check the network or HF_ENDPOINT")
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return BasealignError(f"push to {repo_id} failed: {type(err).__name__}: {first}")


def _hub_api(token: str, endpoint: str) -> Any:
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint, token=token, library_name="basealign", library_version=__version__)


def _ensure_repo(api: Any, repo_id: str, private: bool) -> None:
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    except Exception as err:  # every Hub or network failure ends as one line
        raise _hub_error(err, repo_id, api.endpoint) from err


def upload_staged(api: Any, folder: Path, *, repo_id: str, commit_message: str) -> str | None:
    """Commit FOLDER to the existing repo REPO_ID: huggingface_hub's upload_folder leaves out files
    whose content the repo already has and deletes stale model weights. Returns the commit id,
    or None when nothing changed and no commit was made."""
    try:
        before = api.repo_info(repo_id).sha
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message,
                                 delete_patterns=list(STALE_PATTERNS))
    except Exception as err:  # every Hub or network failure ends as one line
        raise _hub_error(err, repo_id, api.endpoint) from err
    return None if info.oid == before else info.oid


def push(
    run_dir: str | os.PathLike,
    *,
    repo_id: str,
    private: bool = False,
    merged: bool = False,
    dry_run: str | os.PathLike | None = None,
    max_shard_size: int | str = DEFAULT_SHARD_SIZE,
) -> str:
    """Publish `run_dir` to the Hub repo `repo_id` and return a one-line summary.

    `merged=True` uploads the base model with the adapter merged in instead of the adapter
    (ignored for full fine-tuning runs, which upload their full model). `dry_run=DIR`
    writes exactly the folder that would be uploaded to DIR and touches no network.
    The token comes from HF_TOKEN or the saved login, the endpoint from HF_ENDPOINT (read
    at call time). User errors raise BasealignError with one line.
    """
    _check_repo_id(repo_id)
    run = inspect_run(run_dir)
    merged = bool(merged) and run.kind == "adapter"
    what = "merged model" if merged else ("adapter" if run.kind == "adapter" else "full model")

    if dry_run is not None:
        files = _dry_run(run, Path(dry_run), repo_id=repo_id, merged=merged, max_shard_size=max_shard_size)
        return f"dry run: wrote {len(files)} files ({what}) for {repo_id} to {Path(dry_run)}; nothing uploaded"

    from huggingface_hub import constants, get_token

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on") or constants.HF_HUB_OFFLINE:
        raise BasealignError("HF_HUB_OFFLINE is set; unset it to push")
    token = get_token()
    if not token:
        raise BasealignError("no Hugging Face token: set HF_TOKEN or run `hf auth login`")
    endpoint = hub_endpoint()

    api = _hub_api(token, endpoint)
    _ensure_repo(api, repo_id, private)  # fails fast (auth, ownership, network) before any merging
    with tempfile.TemporaryDirectory(prefix="basealign-push-") as tmp:
        folder = Path(tmp)
        files = stage(run, folder, repo_id=repo_id, merged=merged, max_shard_size=max_shard_size)
        commit = upload_staged(api, folder, repo_id=repo_id,
                               commit_message=f"basealign push: {what} from run {run.path.name}")
    url = f"{endpoint}/{repo_id}"
    if commit is None:
        return f"{url} is up to date: {len(files)} files unchanged, no commit made"
    return f"pushed {what} ({len(files)} files) to {url} (commit {commit[:10]})"
