"""Build a preference-pair folder from a data recipe: `basealign prepare RECIPE [key=value ...]`.

For each source, in recipe order: read rows (streamed), convert them with the source's
reader (rejects carry a reason), drop exact duplicates (same prompt + chosen + rejected,
across all sources; the later occurrence is dropped), drop pairs over `max_tokens`, then
sample by `weight` (the rows left out are rejected as `sampled_out`). The kept pairs of all
sources are grouped by prompt, the groups shuffled with `seed` and split into train/test
by `test_size` (a prompt is never in both). A source with a non-zero weight that keeps no
pair is an error, raised before anything is written.

Output folder:
    train.parquet, test.parquet   prompt (list of {role, content}), chosen / rejected (one
                                  assistant message), source, label, metadata (JSON text)
    stats.json                    counts per split / source / label and per drop reason
    data_card.md                  the same, readable, with length statistics
    rejects.jsonl                 every dropped row with its source, reason and position (and
                                  the row itself, except for valid rows left out by sampling)

Per source, kept + sum(rejected) = read. Same recipe + seed -> byte-identical files.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from basealign.data_prep.card import length_stats, write_card
from basealign.data_prep.errors import PrepareError
from basealign.data_prep.readers import READERS, Pair, Reject
from basealign.data_prep.readers.files import Malformed, open_records
from basealign.data_prep.recipe import load_recipe

SPLITS = ("train", "test")
OUTPUTS = ("train.parquet", "test.parquet", "stats.json", "data_card.md", "rejects.jsonl")
COLUMNS = ("prompt", "chosen", "rejected", "source", "label", "metadata")


# ----------------------------------------------------------------------------- helpers

def _progress(rows: Iterable, name: str):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return rows
    return tqdm(rows, desc=name, unit=" rows", leave=False, mininterval=0.5, disable=not sys.stderr.isatty())


def _pair_json(pair: Pair) -> dict:
    return {"prompt": [{"role": r, "content": c} for r, c in pair.prompt], "chosen": pair.chosen,
            "rejected": pair.rejected, "metadata": pair.metadata}


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, default=str)


class _TokenCounter:
    """Counts prompt + longer-reply tokens (raw contents, no chat template, no specials)."""

    def __init__(self, spec: dict) -> None:
        self.name = spec["tokenizer"]
        self.max_length = spec["max_length"]
        self.tokenizer = None
        if not self.name.startswith("builtin:"):      # builtin:* = the byte-level tokenizer
            try:
                from transformers import AutoTokenizer

                self.tokenizer = AutoTokenizer.from_pretrained(self.name)
            except Exception as err:  # noqa: BLE001 - a bad tokenizer is a user error
                raise PrepareError(f"max_tokens: cannot load tokenizer {self.name!r} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None

    def _count(self, texts: list[str]) -> list[int]:
        if self.tokenizer is None:
            return [len(t.encode("utf-8")) for t in texts]
        out: list[int] = []
        for i in range(0, len(texts), 1024):
            ids = self.tokenizer(texts[i:i + 1024], add_special_tokens=False)["input_ids"]
            out.extend(len(x) for x in ids)
        return out

    def lengths(self, pairs: list[Pair]) -> list[int]:
        prompts = self._count(["\n".join(c for _, c in p.prompt) for p in pairs])
        chosen = self._count([p.chosen for p in pairs])
        rejected = self._count([p.rejected for p in pairs])
        return [p + max(c, r) for p, c, r in zip(prompts, chosen, rejected)]


def _sample(n: int, weight, rng: random.Random) -> list[int]:
    """Indices kept (sorted): fraction of n for a float, a target count for an int > 1."""
    if isinstance(weight, int) and weight > 1:
        k = min(weight, n)
    else:
        k = round(float(weight) * n)
    if k >= n:
        return list(range(n))
    return sorted(rng.sample(range(n), k))


def _test_count(test_size, n: int) -> int:
    if n < 2 or test_size == 0:
        return 0
    k = test_size if isinstance(test_size, int) else round(test_size * n)
    return max(1, min(k, n - 1))


def _write_parquet(path: Path, rows: list[tuple[str, str, Pair]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    offsets, roles, contents = [0], [], []
    for _, _, pair in rows:
        for role, content in pair.prompt:
            roles.append(role)
            contents.append(content)
        offsets.append(len(roles))
    prompt = pa.ListArray.from_arrays(
        pa.array(offsets, pa.int32()),
        pa.StructArray.from_arrays([pa.array(roles, pa.string()), pa.array(contents, pa.string())], fields=list(message)),
    )
    one = pa.array(range(len(rows) + 1), pa.int32())
    assistant = pa.array(["assistant"] * len(rows), pa.string())

    def replies(texts):
        return pa.ListArray.from_arrays(one, pa.StructArray.from_arrays([assistant, pa.array(texts, pa.string())], fields=list(message)))

    table = pa.Table.from_arrays(
        [prompt, replies([p.chosen for _, _, p in rows]), replies([p.rejected for _, _, p in rows]),
         pa.array([s for s, _, _ in rows], pa.string()), pa.array([lab for _, lab, _ in rows], pa.string()),
         pa.array([_dumps(p.metadata) for _, _, p in rows], pa.string())],
        schema=pa.schema([("prompt", pa.list_(message)), ("chosen", pa.list_(message)), ("rejected", pa.list_(message)),
                          ("source", pa.string()), ("label", pa.string()), ("metadata", pa.string())]),
    )
    pq.write_table(table, path, compression="zstd")


# ----------------------------------------------------------------------------- main entry

def prepare(recipe, overrides=(), *, output_dir=None) -> Path:
    """Run a data recipe (YAML path or dict) with key=value overrides; returns the output folder.

    The folder is built beside OUTPUT_DIR under a temporary name and swapped in only when
    complete, so a failed run leaves an existing OUTPUT_DIR as it was and creates none.
    """
    cfg = load_recipe(recipe, overrides, output_dir)
    out = Path(cfg["output_dir"]).expanduser()
    _check_output_dir(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as err:
        raise PrepareError(f"cannot create output_dir {out}: {err.strerror or err}") from None
    try:
        _build(cfg, staging)
        _swap_in(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _check_output_dir(out: Path) -> None:
    """OUTPUT_DIR is replaced as a whole, so it may hold nothing but an earlier prepare's files."""
    if out.exists() and not out.is_dir():
        raise PrepareError(f"output_dir {out} is a file, not a folder")
    if out.is_dir():
        others = sorted(p.name for p in out.iterdir() if p.name not in OUTPUTS)
        if others:
            raise PrepareError(f"output_dir {out} holds files prepare did not write ({', '.join(others[:3])}); "
                               "give an empty or new folder")


def _swap_in(staging: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _build(cfg: dict, out: Path) -> None:
    """Read, filter, sample and split every source; write the pairs folder into OUT."""
    counter = _TokenCounter(cfg["max_tokens"]) if cfg["max_tokens"] else None
    seen: set | None = set() if cfg["dedup"] else None
    kept: list[tuple[str, str, Pair]] = []       # (source, label, pair)
    token_lengths: dict[int, int] = {}
    sources_stats: dict[str, dict] = {}

    with open(out / "rejects.jsonl", "w", encoding="utf-8", newline="\n") as rejects:
        for source in cfg["sources"]:
            name, reader = source["name"], READERS[source["type"]]
            convert = reader.make_converter(source)
            records = open_records(source, reader.required_columns(source))
            pos_key = records.position
            read, rejected = 0, Counter()
            valid: list[tuple[int, Pair]] = []

            def reject(reason: str, pos: int, **extra) -> None:
                rejected[reason] += 1
                rejects.write(_dumps({"source": name, "reason": reason, pos_key: pos, **extra}) + "\n")

            for pos, row in _progress(records.rows, name):
                read += 1
                if isinstance(row, Malformed):
                    reject("malformed_json", pos, error=row.error, text=row.text)
                    continue
                try:
                    pair = convert(row)
                except Reject as err:
                    extra = {"detail": err.detail} if err.detail else {}
                    reject(err.reason, pos, row=row, **extra)
                    continue
                if seen is not None:
                    key = (pair.prompt, pair.chosen, pair.rejected)
                    if key in seen:
                        reject("duplicate", pos, pair=_pair_json(pair))
                        continue
                    seen.add(key)
                valid.append((pos, pair))

            lengths = None
            if counter is not None and valid:
                lengths = counter.lengths([p for _, p in valid])
                short = []
                for (pos, pair), n in zip(valid, lengths):
                    if n > counter.max_length:
                        reject("too_long", pos, tokens=n, max_length=counter.max_length, pair=_pair_json(pair))
                    else:
                        short.append((pos, pair, n))
                valid = [(pos, pair) for pos, pair, _ in short]
                lengths = [n for _, _, n in short]

            chosen_idx = _sample(len(valid), source["weight"], random.Random(f"{cfg['seed']}:{name}"))
            keep = set(chosen_idx)
            for i, (pos, _pair) in enumerate(valid):
                if i not in keep:  # the position only: the row itself is valid and can be read again
                    reject("sampled_out", pos)
            if source["weight"] and not chosen_idx:
                reasons = ", ".join(f"{n} {why}" for why, n in rejected.most_common()) or "an empty source"
                raise PrepareError(f"source {name!r} yields no pairs (read {read}: {reasons}); "
                                   "fix the source or set its weight to 0")
            for i in chosen_idx:
                if lengths is not None:
                    token_lengths[len(kept)] = lengths[i]
                kept.append((name, source["label"], valid[i][1]))
            kind, _location = source["_location"]
            sources_stats[name] = {"type": source["type"], "label": source["label"], "weight": source["weight"],
                                   "path": str(source["path"]), "hub": kind == "hub",
                                   "read": read, "kept": len(chosen_idx), "rejected": dict(sorted(rejected.items()))}

    test_idx, train_idx = _split_by_prompt(kept, cfg["test_size"], cfg["seed"])
    split_rows = {"test": [kept[i] for i in test_idx], "train": [kept[i] for i in train_idx]}
    split_tokens = {"test": [token_lengths[i] for i in test_idx] if counter else None,
                    "train": [token_lengths[i] for i in train_idx] if counter else None}

    stats: dict[str, Any] = {"splits": {}, "sources": sources_stats}
    for split in SPLITS:
        rows = split_rows[split]
        _write_parquet(out / f"{split}.parquet", rows)
        stats["splits"][split] = {
            "rows": len(rows),
            "by_source": dict(sorted(Counter(s for s, _, _ in rows).items())),
            "by_label": dict(sorted(Counter(lab for _, lab, _ in rows).items())),
            "lengths": length_stats([p for _, _, p in rows], split_tokens[split]),
        }
    stats["recipe"] = {"seed": cfg["seed"], "test_size": cfg["test_size"], "dedup": cfg["dedup"],
                       "max_tokens": cfg["max_tokens"], "name": cfg["name"]}
    (out / "stats.json").write_text(json.dumps(stats, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    write_card(out / "data_card.md", cfg, stats)


def _split_by_prompt(kept: list[tuple[str, str, Pair]], test_size, seed: int) -> tuple[list[int], list[int]]:
    """(test, train) indices: whole prompt groups go to one split, so a prompt paired twice (say
    PKU-SafeRLHF as both harmless and helpful) never lands in both; test takes shuffled groups
    while they fit its size."""
    groups: dict[tuple, list[int]] = {}
    for i, (_, _, pair) in enumerate(kept):
        groups.setdefault(pair.prompt, []).append(i)
    order = list(groups.values())
    random.Random(seed).shuffle(order)
    n_test = _test_count(test_size, len(kept))
    test: list[int] = []
    train: list[int] = []
    for group in order:
        (test if len(test) + len(group) <= n_test else train).extend(group)
    return test, train


# ----------------------------------------------------------------------------- reading back

def is_pairs_folder(path) -> bool:
    """True for a prepared pairs folder (one holding train.parquet)."""
    try:
        p = Path(path).expanduser()
        return p.is_dir() and (p / "train.parquet").is_file()
    except (TypeError, OSError):
        return False


def resolve_pairs(spec, prepare_into, search_dirs=(), label: str = "data.pairs", prepare_recipe: bool = True) -> Path:
    """A prepared pairs folder as is; a data recipe (.yaml) is prepared into PREPARE_INTO.

    A relative SPEC is looked up in the current directory, then in each of SEARCH_DIRS
    (a training recipe passes its own folder). LABEL names the option in error lines.
    With PREPARE_RECIPE false (the other processes of a multi-process run) a data recipe
    is not prepared again: PREPARE_INTO must already hold what the main process wrote.
    """
    path = Path(spec).expanduser()
    candidates = [path] + ([] if path.is_absolute() else [Path(d) / path for d in search_dirs])
    for candidate in candidates:
        if candidate.is_dir() and is_pairs_folder(candidate):
            return candidate
        if candidate.is_file() and candidate.suffix in (".yaml", ".yml"):
            if prepare_recipe:
                return prepare(candidate, output_dir=Path(prepare_into))
            if not is_pairs_folder(Path(prepare_into)):
                raise PrepareError(f"{label}: {prepare_into} was not prepared by the main process")
            return Path(prepare_into)
        if candidate.is_dir():
            raise PrepareError(f"{label}: {spec} is a folder without train.parquet (not a prepared pairs folder)")
    raise PrepareError(f"{label}: {spec} is neither a prepared pairs folder nor a data recipe file")


def _as_messages(value, role: str) -> list[dict]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    return [{"role": m["role"], "content": m["content"]} for m in value]


def load_pairs(folder, split: str) -> list[dict]:
    """Rows of a prepared folder's split: prompt, chosen, rejected (message lists), source, label, metadata (dict)."""
    import pyarrow.parquet as pq

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise PrepareError(f"pairs folder not found: {root}")
    path = root / f"{split}.parquet"
    if not path.is_file():
        found = ", ".join(sorted(p.stem for p in root.glob("*.parquet"))) or "none"
        raise PrepareError(f"pairs folder {root} has no {split!r} split ({split}.parquet missing; splits found: {found})")
    try:
        table = pq.read_table(path)
    except Exception as err:  # noqa: BLE001
        raise PrepareError(f"cannot read {path}: {err}") from None
    absent = [c for c in ("prompt", "chosen", "rejected") if c not in table.column_names]
    if absent:
        raise PrepareError(f"{path}: missing column(s) {', '.join(absent)}; expected prompt, chosen, rejected")
    rows = []
    for row in table.to_pylist():
        meta = row.get("metadata")
        if isinstance(meta, str):
            try:
                meta = json.loads(meta) if meta else {}
            except ValueError:
                meta = {"raw": meta}
        rows.append({
            "prompt": _as_messages(row["prompt"], "user"),
            "chosen": _as_messages(row["chosen"], "assistant"),
            "rejected": _as_messages(row["rejected"], "assistant"),
            "source": row.get("source") or "unknown",
            "label": row.get("label"),
            "metadata": meta if isinstance(meta, dict) else {},
        })
    return rows
