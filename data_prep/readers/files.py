"""Reading upstream rows: local jsonl / json / parquet / csv / save_to_disk folders, or a hub id.

`open_records(source, required)` checks the columns up front (for JSON input, where each
row has its own keys: on the first rows, see `_with_columns_checked`) and returns a `Records`: an iterator of (position, row) where position is the
1-based line number for JSON-lines input and the 0-based row index otherwise. A line that
is not valid JSON (or not an object) comes through as a `Malformed` instead of a dict, so
the run goes on and the line is rejected with its number.
"""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path
from typing import Any, Iterator, NamedTuple

from basealign.data_prep.errors import PrepareError

BATCH = 4096
SCHEMA_ROWS = 100  # rows looked at for the required columns before a source counts as the wrong schema
FILE_KINDS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


class Malformed(NamedTuple):
    text: str
    error: str


class Records(NamedTuple):
    position: str          # "line" or "index"
    rows: Iterator[tuple[int, Any]]
    where: str             # for messages


def _kind(path: Path) -> str | None:
    suffixes = path.suffixes
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return FILE_KINDS.get(suffixes[-1]) if suffixes else None


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _missing(columns, required: list[str], where: str) -> None:
    absent = [c for c in required if c not in columns]
    if absent:
        raise PrepareError(
            f"{where}: missing required column(s) {', '.join(absent)}; expected columns: {', '.join(required)}"
            f" (found: {', '.join(sorted(map(str, columns))) or 'none'})"
        )


def _with_columns_checked(rows: Iterator[tuple[int, Any]], required: list[str], where: str) -> Iterator[tuple[int, Any]]:
    """ROWS unchanged once one object row has every required column: a row that lacks one is then
    the reader's counted reject, the first row like any other. When none of the first SCHEMA_ROWS
    object rows (or of all, if fewer) has them, the source is the wrong schema: PrepareError."""
    rows = iter(rows)
    held: list[tuple[int, Any]] = []
    objects: list[dict] = []
    for item in rows:
        held.append(item)
        if not isinstance(item[1], dict):
            continue
        if all(c in item[1] for c in required):
            break
        objects.append(item[1])
        if len(objects) == SCHEMA_ROWS:
            _missing(objects[0], required, where)
    else:
        if objects:
            _missing(objects[0], required, where)
    yield from held
    yield from rows


def _jsonl_lines(path: Path) -> Iterator[tuple[int, Any]]:
    loads = json.loads
    with _open_text(path) as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = loads(line)
            except ValueError as err:
                yield number, Malformed(line.rstrip("\n")[:2000], str(err))
                continue
            if not isinstance(row, dict):
                yield number, Malformed(line.rstrip("\n")[:2000], "not a JSON object")
                continue
            yield number, row


def _jsonl(path: Path, required: list[str], where: str) -> Iterator[tuple[int, Any]]:
    return _with_columns_checked(_jsonl_lines(path), required, where)


def _json(path: Path, required: list[str], where: str) -> Records:
    with _open_text(path) as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as err:
            if "Extra data" in str(err):       # JSON lines in a .json file
                return Records("line", _jsonl(path, required, where), where)
            raise PrepareError(f"{where}: not valid JSON ({err})") from None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise PrepareError(f"{where}: expected a list of rows (or an object holding one list)")
        data = lists[0]
    if not isinstance(data, list):
        raise PrepareError(f"{where}: expected a list of rows")
    rows = ((i, r if isinstance(r, dict) else Malformed(json.dumps(r)[:2000], "not a JSON object")) for i, r in enumerate(data))
    return Records("index", _with_columns_checked(rows, required, where), where)


def _parquet(path: Path, required: list[str], where: str) -> Records:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as err:  # noqa: BLE001 - any pyarrow failure is a bad file for the user
        raise PrepareError(f"{where}: cannot read parquet ({err})") from None
    _missing(pf.schema_arrow.names, required, where)

    def rows():
        i = 0
        for batch in pf.iter_batches(batch_size=BATCH):
            for row in batch.to_pylist():
                yield i, row
                i += 1

    return Records("index", rows(), where)


def _csv(path: Path, required: list[str], where: str) -> Records:
    handle = _open_text(path)
    reader = csv.DictReader(handle)
    _missing(reader.fieldnames or [], required, where)

    def rows():
        with handle:
            for i, row in enumerate(reader):
                yield i, {k: (None if v == "" else v) for k, v in row.items()}

    return Records("index", rows(), where)


def _dataset_rows(ds, required: list[str], where: str) -> Records:
    if ds.column_names is not None:   # streaming datasets may not know their columns
        _missing(ds.column_names, required, where)

    def rows():
        i = 0
        if hasattr(ds, "iter"):
            for batch in ds.iter(batch_size=BATCH):
                keys = list(batch)
                for values in zip(*(batch[k] for k in keys)):
                    yield i, dict(zip(keys, values))
                    i += 1
        else:
            for row in ds:
                yield i, row
                i += 1

    return Records("index", rows(), where)


def _from_disk(path: Path, split: str, required: list[str], where: str) -> Records:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as err:  # noqa: BLE001
        raise PrepareError(f"{where}: cannot load dataset folder ({err})") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise PrepareError(f"{where}: no split {split!r} (found: {', '.join(ds)})")
        ds = ds[split]
    return _dataset_rows(ds, required, where)


def _local(path: Path, source: dict, required: list[str], where: str) -> Records:
    split = source.get("split")
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            return _from_disk(path, split, required, where)
        folder = path / source["data_dir"] if source.get("data_dir") else path
        for ext in (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet", ".csv"):
            candidate = folder / f"{split}{ext}"
            if candidate.is_file():
                return _local(candidate, source, required, f"{where}/{candidate.relative_to(path)}")
        raise PrepareError(f"{where}: folder holds no {split}.jsonl/.json/.parquet/.csv and is not a save_to_disk dataset")
    if not path.is_file():
        raise PrepareError(f"{where}: file not found")
    kind = _kind(path)
    if kind == "jsonl":
        return Records("line", _jsonl(path, required, where), where)
    if kind == "json":
        return _json(path, required, where)
    if kind == "parquet":
        return _parquet(path, required, where)
    if kind == "csv":
        return _csv(path, required, where)
    raise PrepareError(f"{where}: unsupported file type (use .jsonl, .json, .parquet, .csv or a save_to_disk folder)")


def _hub(repo_id: str, source: dict, required: list[str]) -> Records:
    import datasets

    from basealign.hub.reach import require_hub_repo

    where = f"source {source['name']!r} ({repo_id})"
    kwargs = {"split": source["split"]}
    if source.get("data_dir"):
        kwargs["data_dir"] = source["data_dir"]
    if source.get("subset"):
        kwargs["name"] = source["subset"]
    if source.get("streaming"):
        kwargs["streaming"] = True
    require_hub_repo(repo_id, repo_type="dataset", what=f"source {source['name']!r}: dataset")
    try:
        ds = datasets.load_dataset(repo_id, **kwargs)
    except Exception as err:  # noqa: BLE001 - network, auth, missing split: all user-facing
        raise PrepareError(f"{where}: cannot load from the hub ({type(err).__name__}: {err})") from None
    return _dataset_rows(ds, required, where)


def open_records(source: dict, required: list[str]) -> Records:
    """Open a resolved source (source['_location'] = ('local', Path) or ('hub', id))."""
    kind, location = source["_location"]
    if kind == "hub":
        return _hub(location, source, required)
    return _local(Path(location), source, required, f"source {source['name']!r} ({location})")
