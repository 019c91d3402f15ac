"""Rows for a run: from a built-in task or from the user's data, per `DataArgs`.

User data is read (`r1kit.data.io.read_rows`: a file, a saved or local dataset, a Hub id),
cut to train_size / test_size, passed through `data.transform`, renamed by `data.columns` and
checked, in that order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from r1kit.config import DataArgs
from r1kit.data.io import SUFFIXES, check_rows, read_rows
from r1kit.data.tasks import get_task
from r1kit.data.transforms import apply_transform
from r1kit.errors import R1kitError

NO_TEST_SPLIT = (
    "data.path is set but data.test_path is not, and no built-in task was named to score the run; set data.test_path "
    "to a held-out file in data.path's form (or data.task=NAME to evaluate on that built-in task's test split)"
)
"""A dataset by name in data.path (a Hub id or a dataset folder) has a test split of its own
(data.test_split); a file does not."""

TEXT = (str, list)
"""A prompt or completion: a string, or a list of chat messages (TRL's conversational format)."""


def read_split(data: DataArgs, split: str, required: Mapping[str, type | tuple[type, ...]], instead: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The user's train or test rows (data.path / data.test_path), with `required` columns checked
    (or the columns `instead`, for data that has `instead[0]`: see `load_split`)."""
    if split not in ("train", "test"):
        raise R1kitError(f"unknown split {split!r}; choose train or test")
    train = split == "train"
    path = data.path if train else (data.test_path or data.path)
    which = data.split if train else data.test_split
    limit = data.train_size if train else data.test_size
    rows, where = read_rows(path, data.name, which, limit, held_out=not train and not data.test_path)
    rows = apply_transform(data.transform, rows, str(path))
    if instead and _has(rows[0], instead[0], data.columns) and not _has(rows[0], next(iter(required), ""), data.columns):
        required = dict.fromkeys(instead, object)
    return check_rows(rows, path, required, data.columns, where)


def load_split(data: DataArgs, split: str, required: tuple[str, ...] = ("prompt",), instead: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Train or test rows. User data wins over the built-in task; a task fills a missing test set
    only when the training data is a file (a dataset by name gives its own `data.test_split`).

    instead: columns that stand for `required` in data that has the first of them and not the
    first required one (SFT: a `messages` column in place of `prompt` and a response column).
    """
    path = data.path if split == "train" else data.test_path
    if path or (split == "test" and data.path and not is_file(data.path)):
        return read_split(data, split, dict.fromkeys(required, object), instead)
    if split == "test" and not data.builtin_task:
        raise R1kitError(NO_TEST_SPLIT)
    task = get_task(data.builtin_task, **data.task_params)
    n = data.train_size if split == "train" else data.test_size
    rows = task.generate(split, n, seed=data.seed)
    missing = [c for c in required if rows and c not in rows[0]]
    if missing:
        raise R1kitError(f"the {data.builtin_task!r} task's rows have no column {missing[0]!r} (they have {sorted(rows[0])}); pick one of those or give data.path")
    return rows


def test_from_task(data: DataArgs) -> bool:
    """Whether the test rows come from the built-in task: no data.test_path, and data.path is
    empty or a file (a dataset by name has its own test split)."""
    return bool(data.builtin_task) and not data.test_path and (not data.path or is_file(data.path))


def _has(row: dict[str, Any], column: str, columns: Mapping[str, str]) -> bool:
    """Whether `row` has `column` once data.columns renames it."""
    return column in row or columns.get(column, "\0") in row


def is_file(path: str) -> bool:
    """Whether data.path names a file (one that exists, or any path with a data file's suffix)
    rather than a dataset by name, which has splits of its own."""
    return Path(path).is_file() or path.endswith(SUFFIXES)
