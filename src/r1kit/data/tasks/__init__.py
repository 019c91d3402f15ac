"""Built-in verifiable tasks: generators of disjoint train/test rows that own their verifiers.

`TASKS` maps a task name to its default instance; `get_task(name, **params)` builds one with
parameters (difficulty and so on).
"""

from __future__ import annotations

import inspect
from typing import Any

from r1kit.data.tasks.arithmetic import TASK as ARITHMETIC
from r1kit.data.tasks.base import Task
from r1kit.data.tasks.countdown import TASK as COUNTDOWN
from r1kit.errors import R1kitError

TASKS: dict[str, Task] = {"arithmetic": ARITHMETIC, "countdown": COUNTDOWN}

try:  # the code task lives beside the sandbox
    from r1kit.data.tasks.code import TASK as CODE

    TASKS["code"] = CODE
except ImportError:  # pragma: no cover - only while the module is absent
    pass


def get_task(name: str, **params: Any) -> Task:
    if name not in TASKS:
        raise R1kitError(f"unknown task {name!r}; built-in tasks are {sorted(TASKS)} (or set data.path to your own data)")
    if not params:
        return TASKS[name]
    cls = type(TASKS[name])
    signature = inspect.signature(cls).parameters
    valid = [n for n, p in signature.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    unknown = sorted(set(params) - set(valid))
    if unknown and not any(p.kind == p.VAR_KEYWORD for p in signature.values()):
        raise R1kitError(f"unknown parameter(s) {unknown} of task {name!r}; valid ones are {', '.join(valid)} (check data.task_params)")
    try:
        return cls(**params)
    except (TypeError, ValueError) as e:  # e.g. digits: two
        raise R1kitError(f"bad parameters {params} for task {name!r} ({e}); check data.task_params") from None
