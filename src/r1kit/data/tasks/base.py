"""The shape of a built-in verifiable task.

A task generates rows (dicts with at least `prompt` and `answer`; reasoning tasks also carry a
worked `cot` for cold start), owns the verifier that scores completions against `answer`, and
extracts the final answer from a completion (for maj@k voting). Splits are disjoint and
reproducible from a seed.

A task may also check a solution step by step, `check_steps(steps, prompt, answer) -> list[bool]`
(the arithmetic task does): process reward models then learn from its labels
(`labels.source=task` of `r1kit prm`); without it they use Math-Shepherd's rollouts.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

from r1kit.data.completion import Completion


class Task(Protocol):
    name: str

    def generate(self, split: str, n: int, seed: int = 0, **params: Any) -> list[dict[str, Any]]:
        """`n` rows of `split` ("train" or "test"); the two splits never share a problem."""
        ...

    def reward(self, completions: Sequence[Completion], answer: Sequence[Any], **columns: Any) -> list[float | None]:
        """The task's verifier as a reward function (TRL signature)."""
        ...

    def extract_answer(self, text: str) -> str | None:
        """The final answer of a completion in canonical form, or None if there is none."""
        ...
