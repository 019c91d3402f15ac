"""The code task's verifier, the `code` reward: the fraction of a row's tests that the completion's
program passes (configs and `r1kit.rewards.REWARDS` name it `code`, through `r1kit.rewards.code`).

The program is the completion's final code: the last ```python (or ```py) fenced block; else the
last fenced block without a language; else the content of the last <answer> block (an unclosed one
at the end counts, since rollouts often stop on `</answer>`). Text inside <think>…</think> is a
draft and is not searched when the completion closes its thinking. A completion without code scores
0.0 and is counted in `metrics["no_code"]`.

Tests come from the `tests` column, in any shape `r1kit.sandbox.spec` accepts (assert strings,
`{"input", "output"}` pairs, `{"inputs": [...], "outputs": [...]}`, or JSON of these). A row
whose tests are None or empty scores None (not a code row). Every program runs in the bubblewrap
sandbox (`r1kit.sandbox`), all rows in parallel; each run's status is counted as
`metrics["status/<status>"]`. Without a working sandbox the reward raises R1kitError naming the
`bubblewrap` package, unless the user opted in to unsafe execution (`unsafe=True` or
R1KIT_UNSAFE_CODE_EXEC=1), which warns on every call.

`all_or_nothing=True` scores 1.0 only when every test passes (as DeepSeek-R1's code reward and most
code RL recipes do) and stops a program's tests at its first failure, which also saves time.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Sequence

from r1kit.data.completion import Completion, completion_text
from r1kit.errors import R1kitError
from r1kit.sandbox import require_sandbox, run_many
from r1kit.sandbox.spec import parse_tests

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)(?:</answer>|\Z)", re.DOTALL)
_PYTHON_TAGS = ("python", "py", "python3")


def extract_code(text: str) -> str | None:
    """The completion's final program (see the module docstring), or None when it has none."""
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    for wanted in (_PYTHON_TAGS, ("",)):
        found = [body for lang, body in blocks if lang in wanted]
        if found and found[-1].strip():
            return found[-1]
    answers = _ANSWER.findall(text)
    if answers and answers[-1].strip():
        return answers[-1].strip() + "\n"
    return None


def code_reward(
    completions: Sequence[Completion],
    tests: Sequence[Any] | None = None,
    *,
    all_or_nothing: bool = False,
    timeout_s: float = 5.0,
    metrics: dict[str, float] | None = None,
    unsafe: bool | None = None,
    workers: int | None = None,
    **kw: Any,
) -> list[float | None]:
    """Fraction of tests passed per completion (1.0/0.0 with `all_or_nothing`); None for rows
    without tests.

    completions: strings or chat message lists, one per row.
    tests: the `tests` column, one value per row.
    timeout_s: wall-clock limit per test; workers: parallel sandboxes (default: CPU cores).
    Other keyword arguments (the dataset's other columns) are ignored.
    """
    if tests is None:
        raise R1kitError("the code reward needs a `tests` column (assert strings or input/output pairs) in the dataset")
    if len(tests) != len(completions):
        raise R1kitError(f"the code reward got {len(completions)} completions but {len(tests)} rows of tests")
    scores: list[float | None] = [None] * len(completions)
    counts: Counter[str] = Counter()
    jobs: list[tuple[int, str, list]] = []
    for i, (completion, row_tests) in enumerate(zip(completions, tests)):
        try:
            specs = parse_tests(row_tests)
        except R1kitError as error:
            raise R1kitError(f"row {i} of the `tests` column: {error}") from None
        if not specs:
            continue
        code = extract_code(completion_text(completion))
        if code is None:
            scores[i] = 0.0
            counts["no_code"] += 1
            continue
        jobs.append((i, code, specs))
    if jobs:
        require_sandbox(unsafe)
        results = run_many(
            [code for _, code, _ in jobs],
            [specs for _, _, specs in jobs],
            timeout_s,
            workers,
            unsafe=unsafe,
            stop_on_failure=all_or_nothing,
        )
        for (i, _, _), result in zip(jobs, results):
            counts[f"status/{result.status}"] += 1
            if all_or_nothing:
                scores[i] = 1.0 if result.passed == result.total else 0.0
            else:
                scores[i] = result.fraction
    if metrics is not None:
        for key, n in counts.items():
            metrics[key] = metrics.get(key, 0) + n
    return scores
