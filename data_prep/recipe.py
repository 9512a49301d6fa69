"""Loading and validating a data recipe (YAML or dict) with key=value overrides.

Top-level keys: sources (list), test_size, seed, output_dir, dedup, max_tokens, name.
Source keys: name, type, path, label, weight, split, data_dir, subset, streaming, plus the
reader's own options (pku_saferlhf: both_unsafe; ultrafeedback: min_score_gap; pairs:
columns, metadata_columns).

`path` resolution: `samples:FILE` is a file bundled in data_prep/samples/ (works from an
installed package); an absolute path is used as is; a relative path is resolved against
the recipe file's folder first, then the current directory; anything else that looks
like `owner/name` and is not a local file or folder is a Hugging Face hub id. Validation
never touches the network. `output_dir` is relative to the current directory.

weight: a float in (0, 1] is the fraction of the (valid, de-duplicated) rows kept; an int
> 1 is a target count (all rows if fewer); 1 means all; 0 drops the source entirely (not
all sources may be 0). test_size: a fraction in [0, 1) or an int row count.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from basealign.data_prep.errors import PrepareError
from basealign.data_prep.readers import READERS

SAMPLES_PREFIX = "samples:"
SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
LABELS = ("harmless", "helpful")
TOP_KEYS = {"sources": None, "test_size": 0.05, "seed": 42, "output_dir": None, "dedup": True, "max_tokens": None, "name": None}
SOURCE_KEYS = {"name": None, "type": None, "path": None, "label": None, "weight": 1.0, "split": None,
               "data_dir": None, "subset": None, "streaming": False}
MAX_TOKENS_KEYS = {"tokenizer": None, "max_length": None}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _unknown(key: str, valid, where: str) -> PrepareError:
    close = difflib.get_close_matches(str(key), list(valid), n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (valid keys: {', '.join(valid)})"
    return PrepareError(f"{where}: unknown key {key!r}{hint}")


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict, overrides) -> dict:
    """key=value strings (omegaconf dotlist, e.g. seed=3, sources.0.weight=0.5, sources.hh.weight=2)."""
    if not overrides:
        return data
    cfg = OmegaConf.create(data)
    for item in overrides:
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise PrepareError(f"override {item!r} is not key=value")
        parts = key.split(".")
        if len(parts) > 2 and parts[0] == "sources" and not parts[1].isdigit():
            names = [s.get("name") for s in data.get("sources") or [] if isinstance(s, dict)]
            if parts[1] not in names:
                raise PrepareError(f"override {key!r}: no source named {parts[1]!r} (sources: {', '.join(map(str, names))})")
            parts[1] = str(names.index(parts[1]))
        top = parts[0]
        if top not in TOP_KEYS:
            raise _unknown(top, TOP_KEYS, f"override {key!r}")
        try:
            OmegaConf.update(cfg, ".".join(parts), _parse_value(value), merge=True)
        except (OmegaConfBaseException, IndexError, ValueError) as err:
            raise PrepareError(f"override {key!r}: {err}".splitlines()[0]) from None
    return OmegaConf.to_container(cfg, resolve=True)


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise PrepareError(f"data recipe not found: {path}")
    try:
        cfg = OmegaConf.load(path)
        data = OmegaConf.to_container(cfg, resolve=True)
    except (OmegaConfBaseException, yaml.YAMLError, ValueError) as err:
        raise PrepareError(f"{path}: not a valid YAML recipe ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise PrepareError(f"{path}: a data recipe is a mapping with a 'sources' list")
    return data


def resolve_path(raw: str, base: Path | None, where: str) -> tuple[str, Any]:
    """('local', Path) or ('hub', repo_id); a missing local file is an error."""
    text = str(raw).strip()
    if text.startswith(SAMPLES_PREFIX):
        path = SAMPLES_DIR / text[len(SAMPLES_PREFIX):].lstrip("/")
        if not path.exists():
            raise PrepareError(f"{where}: bundled sample {text!r} not found in {SAMPLES_DIR}")
        return "local", path
    path = Path(text).expanduser()
    candidates = [path] if path.is_absolute() else ([base / path] if base else []) + [Path.cwd() / path]
    for candidate in candidates:
        if candidate.exists():
            return "local", candidate.resolve()
    looks_local = path.is_absolute() or text.startswith((".", "~")) or any(
        text.endswith(ext) for ext in (".jsonl", ".json", ".parquet", ".csv", ".gz", ".ndjson"))
    if not looks_local and _HUB_ID.match(text):
        return "hub", text
    raise PrepareError(f"{where}: file not found: {candidates[0]}")


def _number(value, where: str, key: str):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PrepareError(f"{where}: {key} must be a number, got {value!r}")
    return value


def _validate_source(raw: Any, index: int, base: Path | None) -> dict:
    where = f"sources[{index}]"
    if not isinstance(raw, dict):
        raise PrepareError(f"{where}: each source is a mapping with name, type, path, label, weight")
    if raw.get("name"):
        where = f"source {raw['name']!r}"
    stype = raw.get("type")
    if stype is None:
        raise PrepareError(f"{where}: missing required key 'type' (one of {', '.join(READERS)})")
    if stype not in READERS:
        close = difflib.get_close_matches(str(stype), list(READERS), n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise PrepareError(f"{where}: unknown source type {stype!r}{hint}; known types: {', '.join(READERS)}")
    reader = READERS[stype]
    valid = {**SOURCE_KEYS, **reader.OPTIONS}
    for key in raw:
        if key not in valid:
            others = [t for t, m in READERS.items() if key in m.OPTIONS]
            if others:
                raise PrepareError(f"{where}: key {key!r} only applies to type {others[0]}, not {stype}")
            raise _unknown(key, valid, where)
    source = {**valid, **raw}
    for key in ("name", "path", "label"):
        if source.get(key) in (None, ""):
            raise PrepareError(f"{where}: missing required key {key!r}")
    source["name"] = str(source["name"])
    if source["label"] not in LABELS:
        raise PrepareError(f"{where}: label must be harmless or helpful, got {source['label']!r}")
    weight = _number(source["weight"], where, "weight")
    if weight < 0:
        raise PrepareError(f"{where}: weight must not be negative, got {weight}")
    if isinstance(weight, float) and weight > 1:
        if not weight.is_integer():
            raise PrepareError(f"{where}: weight {weight} is neither a fraction in (0, 1] nor a whole row count")
        weight = int(weight)
    source["weight"] = weight
    source["split"] = str(source["split"] or reader.DEFAULT_SPLIT)
    source["_location"] = resolve_path(source["path"], base, where)
    reader.make_converter(source)  # validates the reader's own options now, not mid-run
    reader.required_columns(source)
    return source


def load_recipe(recipe, overrides=(), output_dir=None) -> dict:
    """Read, override and validate a recipe; returns a plain dict with defaults filled in."""
    if isinstance(recipe, (str, Path)):
        path = Path(recipe).expanduser()
        data, base = _read_yaml(path), path.resolve().parent
    elif isinstance(recipe, dict):
        data, base = OmegaConf.to_container(OmegaConf.create(recipe), resolve=True), None
    else:
        raise PrepareError(f"a data recipe is a YAML path or a dict, got {type(recipe).__name__}")
    data = apply_overrides(data, list(overrides or ()))
    for key in data:
        if key not in TOP_KEYS:
            raise _unknown(key, TOP_KEYS, "data recipe")
    cfg = {**TOP_KEYS, **data}
    if output_dir is not None:
        cfg["output_dir"] = str(output_dir)
    if not cfg["output_dir"]:
        raise PrepareError("data recipe: missing required key 'output_dir'")
    sources = cfg["sources"]
    if not isinstance(sources, list) or not sources:
        raise PrepareError("data recipe: 'sources' must be a non-empty list")
    cfg["sources"] = [_validate_source(s, i, base) for i, s in enumerate(sources)]
    names = [s["name"] for s in cfg["sources"]]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise PrepareError(f"data recipe: source name {dupes[0]!r} is used twice")
    if all(s["weight"] == 0 for s in cfg["sources"]):
        raise PrepareError("data recipe: all source weights are zero; nothing would be kept")
    seed = cfg["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise PrepareError(f"data recipe: seed must be an integer, got {seed!r}")
    test_size = _number(cfg["test_size"], "data recipe", "test_size")
    if test_size < 0 or (isinstance(test_size, float) and test_size >= 1 and not test_size.is_integer()):
        raise PrepareError(f"data recipe: test_size must be a fraction in [0, 1) or a row count, got {test_size}")
    if isinstance(test_size, float) and test_size >= 1:
        cfg["test_size"] = int(test_size)
    if not isinstance(cfg["dedup"], bool):
        raise PrepareError(f"data recipe: dedup must be true or false, got {cfg['dedup']!r}")
    mt = cfg["max_tokens"]
    if mt is not None:
        if not isinstance(mt, dict):
            raise PrepareError("data recipe: max_tokens must be a mapping {tokenizer: PATH_OR_ID, max_length: N}")
        for key in mt:
            if key not in MAX_TOKENS_KEYS:
                raise _unknown(key, MAX_TOKENS_KEYS, "max_tokens")
        if not mt.get("tokenizer"):
            raise PrepareError("max_tokens: missing required key 'tokenizer'")
        ml = mt.get("max_length")
        if isinstance(ml, bool) or not isinstance(ml, int) or ml <= 0:
            raise PrepareError(f"max_tokens: max_length must be a positive integer, got {ml!r}")
        tok = str(mt["tokenizer"])
        if not tok.startswith("builtin:"):
            p = Path(tok).expanduser()
            local = p if p.is_absolute() else (base / p if base and (base / p).exists() else p)
            if local.exists():
                tok = str(local.resolve())
            elif tok.startswith((".", "/", "~")):
                raise PrepareError(f"max_tokens: tokenizer folder not found: {tok}")
        cfg["max_tokens"] = {"tokenizer": tok, "max_length": ml}
    return cfg
