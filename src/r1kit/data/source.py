"""Rows for a run: from a built-in task or from the user's files, per `DataArgs`."""

from __future__ import annotations

from typing import Any

from r1kit.config import DataArgs
from r1kit.data.io import load_rows
from r1kit.data.tasks import get_task
from r1kit.errors import R1kitError

NO_TEST_SPLIT = (
    "data.path is set but data.test_path is not, and no built-in task was named to score the run; set data.test_path "
    "to a held-out file in data.path's form (or data.task=NAME to evaluate on that built-in task's test split)"
)


def load_split(data: DataArgs, split: str, required: tuple[str, ...] = ("prompt",)) -> list[dict[str, Any]]:
    """Train or test rows. Files win over the built-in task; a task fills a missing test file."""
    path = data.path if split == "train" else data.test_path
    if path:
        limit = data.train_size if split == "train" else data.test_size
        return load_rows(path, required=dict.fromkeys(required, object), columns=data.columns, limit=limit)
    if split == "test" and not data.builtin_task:
        raise R1kitError(NO_TEST_SPLIT)
    task = get_task(data.builtin_task, **data.task_params)
    n = data.train_size if split == "train" else data.test_size
    rows = task.generate(split, n, seed=data.seed)
    missing = [c for c in required if rows and c not in rows[0]]
    if missing:
        raise R1kitError(f"the {data.builtin_task!r} task's rows have no column {missing[0]!r} (they have {sorted(rows[0])}); pick one of those or give data.path")
    return rows
