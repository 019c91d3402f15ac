"""Which verifier scores a dataset: the built-in task's own, or the `math` reward for user data
with gold answers. Training and evaluation both get their correctness signal from here."""

from __future__ import annotations

from typing import Any, Callable

from r1kit.config import DataArgs
from r1kit.data.source import test_from_task
from r1kit.data.tasks import get_task


def scorer_for(data: DataArgs) -> tuple[Callable[..., list[float | None]], Callable[[str], Any]]:
    """(reward function giving 1.0 for a correct completion, answer extractor for voting).

    The test split decides: when it comes from a built-in task (no data.test_path, and data.path
    empty or a file: `r1kit.data.source.test_from_task`), the task's own
    verifier scores it -- also when training rows come from a file, such as rejection-sampled
    data -- so every stage of a pipeline is measured by the same rule."""
    if test_from_task(data):
        task = get_task(data.builtin_task, **data.task_params)
        return task.reward, task.extract_answer
    from r1kit.rewards import get
    from r1kit.rewards.math import extract_final_answer

    return get("math"), extract_final_answer
