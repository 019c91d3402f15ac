"""Per-step labels for process reward models, from three sources.

A labelled solution is a row `{prompt, answer, steps: [str], labels: [float]}`, one label in [0, 1]
per step.

- `checker_labels`: a task's own step checker (`task.check_steps(steps, prompt, answer)`, which
  the arithmetic task has: every partial sum can be verified).
- `shepherd_labels`: Math-Shepherd's automatic labels (Wang et al. 2024) for any task with an
  answer verifier: from the prefix ending with step k, a policy writes N completions; the step's
  label is the share of them that reach the right answer (`soft`) or whether any does (`hard`).
  The last step's prefix is the whole solution, so its label is the solution's own correctness.
- `load_labelled_steps`: a user's JSONL in PRM800K's spirit, one solution a line with `prompt`,
  `steps` (a list of strings) and `labels` (a list of numbers or booleans, one per step).

The policy is anything with `complete(prompts, prefixes, n) -> list[list[str]]` (`StepPolicy`), so
tests script it; the recipe passes one that samples from a rollout engine (r1kit/train/step_policy.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Protocol, Sequence

from r1kit.data.io import load_rows
from r1kit.data.steps import step_prefixes
from r1kit.errors import R1kitError

Verifier = Callable[..., list[float | None]]
"""A task's reward function `fn(completions, answer=[...]) -> scores`, 1.0 = right."""


class StepPolicy(Protocol):
    def complete(self, prompts: Sequence[str], prefixes: Sequence[str], n: int) -> list[list[str]]:
        """For each (raw prompt, solution prefix), n continuations of the prefix (text after it)."""
        ...


def checker_labels(check: Callable[[Sequence[str], str, Any], list[bool]], rows: Sequence[Mapping[str, Any]], steps: Sequence[Sequence[str]]) -> list[list[float]]:
    """1.0 / 0.0 per step from `check(steps, prompt, answer)` for each solution's row."""
    return [[float(ok) for ok in check(s, r["prompt"], r.get("answer"))] for r, s in zip(rows, steps, strict=True)]


def shepherd_labels(
    policy: StepPolicy,
    verify: Verifier,
    rows: Sequence[Mapping[str, Any]],
    steps: Sequence[Sequence[str]],
    separator: str,
    n: int,
    mode: Literal["soft", "hard"] = "soft",
) -> list[list[float]]:
    """Math-Shepherd labels of every step of every solution (rows[i] poses solution steps[i]).

    Steps before the last: n completions from the prefix through the step, each verified as
    prefix + completion; soft = the share right, hard = 1.0 if any is right. The last step: the
    verified solution itself.
    """
    if mode not in ("soft", "hard"):
        raise R1kitError(f"labels.mode={mode!r} is not valid; use soft or hard")
    if n < 1:
        raise R1kitError(f"labels.rollouts={n} must be at least 1 for Math-Shepherd labels")
    asks = [(i, k, prefix) for i, s in enumerate(steps) for k, prefix in enumerate(step_prefixes(s, separator)[:-1])]
    continuations = policy.complete([rows[i]["prompt"] for i, _, _ in asks], [p for _, _, p in asks], n) if asks else []
    if len(continuations) != len(asks) or any(len(c) != n for c in continuations):
        raise R1kitError(f"the policy returned {len(continuations)} groups for {len(asks)} prefixes (each must hold n={n} completions)")
    texts = [prefix + c for (_, _, prefix), group in zip(asks, continuations) for c in group]
    golds = [rows[i].get("answer") for i, _, _ in asks for _ in range(n)]
    right = _right(verify, texts, golds)
    finals = _right(verify, [separator.join(s) for s in steps], [r.get("answer") for r in rows])
    labels: list[list[float]] = [[0.0] * len(s) for s in steps]
    for j, (i, k, _) in enumerate(asks):
        hits = right[j * n : (j + 1) * n]
        labels[i][k] = sum(hits) / n if mode == "soft" else float(any(hits))
    for i, s in enumerate(steps):
        if s:
            labels[i][-1] = float(finals[i])
    return labels


def load_labelled_steps(path: str | Path, columns: Mapping[str, str] | None = None, limit: int = 0) -> list[dict[str, Any]]:
    """Rows of a step-labelled JSONL: `prompt`, `steps` and `labels` of the same length (labels
    are numbers in [0, 1] or booleans); `answer` is kept when present."""
    rows = load_rows(path, required={"prompt": str, "steps": list, "labels": list}, columns=columns, limit=limit)
    for i, row in enumerate(rows):
        steps, labels = row["steps"], row["labels"]
        if len(steps) != len(labels) or not steps:
            raise R1kitError(f"{path} row {i + 1}: `steps` and `labels` must be non-empty lists of the same length (got {len(steps)} and {len(labels)})")
        if not all(isinstance(s, str) for s in steps):
            raise R1kitError(f"{path} row {i + 1}: every step must be a string")
        if not all(isinstance(v, (bool, int, float)) and 0 <= float(v) <= 1 for v in labels):
            raise R1kitError(f"{path} row {i + 1}: labels must be booleans or numbers in [0, 1], got {labels!r}")
        row["labels"] = [float(v) for v in labels]
    return rows


def _right(verify: Verifier, texts: list[str], golds: list[Any]) -> list[bool]:
    scores = verify(texts, answer=golds) if texts else []
    return [s is not None and s >= 1.0 for s in scores]
