"""Read rows from JSONL, JSON, parquet or a dataset by name, with column mapping.

Every problem a user can cause -- a missing file, an empty file, a malformed line, a missing
column, a value of the wrong type -- is one `R1kitError` that names the file, the line (for
JSONL) and the column. Parquet is read through the `datasets` library; a directory (saved with
`save_to_disk`, or laid out like a Hub repository) or a Hub id through `r1kit.data.hub`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from r1kit.data import hub
from r1kit.errors import R1kitError

SUFFIXES = (".jsonl", ".json", ".parquet")


def load_rows(
    path: str | Path,
    required: Mapping[str, type | tuple[type, ...]] | Sequence[str] = (),
    columns: Mapping[str, str] | None = None,
    limit: int = 0,
) -> list[dict[str, Any]]:
    """Rows of `path` as dicts, renamed by `columns` ({our_name: their_name}) and checked.

    `required` lists column names, or maps them to the accepted Python type(s). `path` is a file,
    or a dataset the `datasets` library reads (`r1kit.data.hub`), whose `train` split is read.
    """
    rows, where = read_rows(path, limit=limit)
    return check_rows(rows, path, required, columns or {}, where)


def read_rows(path: str | Path, name: str = "", split: str = "train", limit: int = 0, held_out: bool = False) -> tuple[list[dict[str, Any]], list[int] | None]:
    """(rows, their JSONL line numbers or None): the first `limit` rows (0 = all) of a data file,
    or of `split` of a dataset by name (config `name`; `held_out`: see `hub.read_dataset`)."""
    path = Path(path) if Path(path).exists() or _looks_like_file(str(path)) else str(path)
    if isinstance(path, Path) and not path.exists():
        raise R1kitError(f"data file {str(path)!r} does not exist; check the path")
    if isinstance(path, str) or path.is_dir():
        rows, where = hub.read_dataset(str(path), name, split, held_out), None
    elif path.suffix == ".jsonl":
        rows, where = _read_jsonl(path)
    elif path.suffix == ".json":
        rows, where = _read_json(path), None
    elif path.suffix == ".parquet":
        rows, where = _read_parquet(path), None
    else:
        raise R1kitError(f"data file {str(path)!r} has an unknown type; use one of {', '.join(SUFFIXES)} or a saved HF dataset directory, a local dataset folder or a Hub id")
    if not rows:
        raise R1kitError(f"data file {str(path)!r} is empty; it needs at least one row")
    if limit:
        rows = rows[:limit]
        where = where[:limit] if where else None
    return rows, where


def _looks_like_file(path: str) -> bool:
    """A path that cannot be a Hub id (`owner/name` or `name`): a data file's suffix, or an
    absolute, home- or dot-relative path."""
    return path.endswith(SUFFIXES) or path.startswith(("/", "~", ".")) or path.count("/") > 1


def check_rows(
    rows: list[dict[str, Any]],
    path: str | Path,
    required: Mapping[str, type | tuple[type, ...]] | Sequence[str],
    columns: Mapping[str, str],
    where: list[int] | None = None,
) -> list[dict[str, Any]]:
    """Rename columns and check each required one is present with an accepted type."""
    types = dict(required) if isinstance(required, Mapping) else {name: object for name in required}
    out = []
    for i, row in enumerate(rows):
        loc = f"{path}:{where[i]}" if where else f"{path} row {i}"
        if not isinstance(row, dict):
            raise R1kitError(f"{loc}: each row must be a JSON object, got {type(row).__name__}")
        row = dict(row)
        for ours, theirs in columns.items():
            if theirs in row:
                row[ours] = row.pop(theirs)
        for name, tp in types.items():
            if name not in row:
                mapped = f" (mapped from {columns[name]!r})" if name in columns else ""
                raise R1kitError(f"{loc}: missing column {name!r}{mapped}; present: {sorted(row)}; map yours with data.columns")
            if tp is not object and not isinstance(row[name], tp):
                want = tp.__name__ if isinstance(tp, type) else " or ".join(t.__name__ for t in tp)
                raise R1kitError(f"{loc}: column {name!r} must be {want}, got {type(row[name]).__name__} {row[name]!r:.60}")
        out.append(row)
    return out


def _read_jsonl(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    rows, where = [], []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line.rstrip("\r\n")))  # with its newline, a line cut short errs at "line 2 column 1"
            except json.JSONDecodeError as e:
                raise R1kitError(f"{path}:{lineno}: malformed JSON at column {e.colno} ({e.msg}); fix or remove that line") from None
            where.append(lineno)
    return rows, where


def _read_json(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "[]")
    except json.JSONDecodeError as e:
        raise R1kitError(f"{path}:{e.lineno}: malformed JSON at column {e.colno} ({e.msg})") from None
    if isinstance(data, dict) and "data" in data:
        data = data["data"]
    if not isinstance(data, list):
        raise R1kitError(f"{path}: a .json data file must hold a list of objects (or {{'data': [...]}})")
    return data


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    from datasets import Dataset

    try:
        return Dataset.from_parquet(str(path)).to_list()
    except Exception as e:  # noqa: BLE001 - any reader failure is a bad file
        raise R1kitError(f"{path}: not a readable parquet file ({type(e).__name__}: {e})") from None


def write_jsonl(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write rows atomically (temp file, then rename), so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path
