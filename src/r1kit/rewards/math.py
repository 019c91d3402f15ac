"""The `math` reward: 1.0 when the completion's final answer equals the gold answer, else 0.0.

Equivalence is math-verify's (Hugging Face): both answers are parsed to SymPy and compared as
numbers, expressions, sets, intervals, equations or matrices, so `\\frac{1}{2}`, `0.5` and `1/2`
agree and `{1,2}` equals `{2,1}`. This module only decides *which* text is the final answer:

1. the last `<answer>…</answer>` block (the R1 format; an unclosed block at the end counts, since
   rollouts often stop on `</answer>`), and inside it a `\\boxed{}` or `#### n` if present;
2. else the last `\\boxed{…}` (the MATH convention);
3. else the text after the last `#### ` (the GSM8K convention).

A completion with none of these, or whose answer does not parse, scores 0 and is counted in
`metrics["extract_fail"]`. There is deliberately no fallback to "the last number in the text":
R1-Zero's rule-based reward asks for the answer in a stated place, and a fallback would reward
lucky numbers in unfinished reasoning.

The gold answer comes from the `answer` column (or `solution`, as in TRL/open-r1 datasets). It may
be a bare answer (`0.5`, `\\frac{1}{2}`), a worked solution with a `\\boxed{}` (MATH) or one ending
in `#### 42` (GSM8K). A gold answer that does not parse makes its rows None (the row is left out,
not scored wrong) with one warning per call; so does a gold of None (a row that is not a maths
problem in a mixed batch), without the warning.

Timeouts. SymPy can take unbounded time on adversarial input (`9^9^9^9`), and math-verify's own
timeout uses `signal.alarm`, which only works on the main thread of the main interpreter, so it
fails inside a trainer's reward thread pool. We turn it off (`parsing_timeout=None`,
`timeout_seconds=None`) and run each row's parse-and-verify in a short-lived daemon thread that we
wait on with a deadline. Why a thread and not a process pool: a thread can be started from any
thread and any process, including daemonic worker processes (DataLoader and multiprocessing.Pool
workers), which may not have children; starting one is far cheaper than a process start and a
SymPy import, and nothing has to be pickled. A thread cannot be killed, so on the
deadline we raise an exception inside it (`PyThreadState_SetAsyncExc`); SymPy is pure Python, so
the thread stops at its next bytecode. A row that times out scores 0 and is counted in
`metrics["timeout"]`.
"""

from __future__ import annotations

import ctypes
import logging
import re
import threading
from collections import Counter
from functools import partial
from typing import Any, Callable, Sequence, TypeVar

from r1kit.errors import R1kitError
from r1kit.rewards.base import Completion, completion_text

logger = logging.getLogger(__name__)

T = TypeVar("T")

_ANSWER_BLOCK = re.compile(r"<answer>(.*?)(?:</answer>|\Z)", re.DOTALL)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_GSM8K = re.compile(r"####[ \t]*([^\n]*)")
# A word of two or more letters that is not a LaTeX command name: two of them make a span prose.
_PROSE_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")
_MATH_DELIMITERS = ("$", "\\(", "\\[")


def extract_answer(text: str) -> str | None:
    """The text of the final answer of a completion, or None if it states none.

    Order: last `<answer>` block (and a `\\boxed{}` / `#### n` inside it), else last `\\boxed{}`,
    else the text after the last `####`.
    """
    blocks = _ANSWER_BLOCK.findall(text)
    scope = blocks[-1] if blocks else text
    boxed = last_boxed(scope)
    if boxed is not None:
        return boxed
    gsm8k = _GSM8K.findall(scope)
    if gsm8k:
        return gsm8k[-1].strip()
    return scope.strip() if blocks else None


def gold_answer(gold: Any) -> str:
    """The answer part of a gold column value: a bare answer, or a MATH / GSM8K solution."""
    text = str(gold)
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    gsm8k = _GSM8K.findall(text)
    return gsm8k[-1].strip() if gsm8k else text.strip()


def last_boxed(text: str) -> str | None:
    """The content of the last complete `\\boxed{…}` in `text` (nested braces allowed)."""
    for match in reversed(list(_BOXED.finditer(text))):
        depth, start, i = 1, match.end(), match.end()
        while i < len(text):
            if text[i] == "\\":  # \{ and \} are set braces, not grouping
                i += 2
                continue
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                return text[start:i]
            i += 1
    return None


def parse_answer(span: str) -> list:
    """math-verify's parse of an answer span; an empty list if nothing parses.

    A bare span (`\\frac12`, `{1,2}`, `[1,2)`) is wrapped in `$…$` so that math-verify reads it as
    LaTeX rather than picking the first plain number out of it. A span that already has math
    delimiters, or reads as prose (two or more words, e.g. "the answer is 3"), goes to
    math-verify's anchored extraction as it is.
    """
    mv = _math_verify()
    span = span.strip()
    if not span:
        return []
    if any(d in span for d in _MATH_DELIMITERS) or len(_PROSE_WORD.findall(span)) >= 2:
        configs = [mv.LatexExtractionConfig(boxed_match_priority=0), mv.ExprExtractionConfig()]
    else:
        span, configs = f"${span}$", [mv.LatexExtractionConfig()]
    return mv.parse(span, configs, fallback_mode="no_fallback", parsing_timeout=None)


def is_equivalent(gold: list, span: str) -> bool | None:
    """Whether the answer `span` equals the parsed `gold`; None if the span does not parse."""
    predicted = parse_answer(span)
    if not predicted:
        return None
    return _math_verify().verify(gold, predicted, timeout_seconds=None)


def extract_final_answer(text: str, timeout_s: float = 5.0) -> str | None:
    """A canonical string for the final answer of a completion, for majority voting; None if none.

    Equivalent answers map to one string where SymPy can simplify them (`0.5`, `\\frac12` and
    `50\\%` all give `1/2`; `x = 5` gives `5`). An answer that does not parse, or takes longer
    than `timeout_s`, is returned as written.
    """
    span = extract_answer(text)
    if span is None:
        return None
    _math_verify()
    try:
        canonical = call_with_deadline(partial(_canonical, span), timeout_s)
    except TimeoutError:
        canonical = None
    return canonical if canonical is not None else span


def _canonical(span: str) -> str | None:
    import sympy

    parsed = parse_answer(span)
    if not parsed or isinstance(parsed[0], str):
        return None
    expr = parsed[0]
    if isinstance(expr, sympy.Eq) and isinstance(expr.lhs, sympy.Symbol):  # "x = 5" answers 5
        expr = expr.rhs
    if isinstance(expr, sympy.Float):
        expr = sympy.nsimplify(expr, rational=True)
    elif isinstance(expr, sympy.Expr):
        expr = sympy.simplify(expr)
    return str(expr)


def math_reward(
    completions: Sequence[Completion],
    answer: Sequence[Any] | None = None,
    solution: Sequence[Any] | None = None,
    *,
    timeout_s: float = 5.0,
    metrics: dict[str, float] | None = None,
    **columns: Any,
) -> list[float | None]:
    """1.0 if the completion's final answer is equivalent to the gold answer, 0.0 if not.

    None where the gold answer cannot be parsed. timeout_s: seconds allowed to parse and verify
    one row (and to parse one gold answer).
    """
    golds = answer if answer is not None else solution
    if golds is None:
        raise R1kitError(
            "the math reward needs the gold answer in a column named `answer` (or `solution`); "
            "add that column to the dataset or rename the existing one."
        )
    _math_verify()  # import before any deadline thread starts
    counts: Counter[str] = Counter()
    parsed_golds = _parse_golds(golds, timeout_s, counts)
    rewards: list[float | None] = []
    for completion, gold in zip(completions, golds, strict=True):
        if gold is None:  # no gold answer: the row is not a maths problem
            rewards.append(None)
            continue
        parsed = parsed_golds[str(gold)]
        if not parsed:
            rewards.append(None)
            continue
        span = extract_answer(completion_text(completion))
        verdict: bool | None = None
        if span is not None:
            try:
                verdict = call_with_deadline(partial(is_equivalent, parsed, span), timeout_s)
            except TimeoutError:
                counts["timeout"] += 1
                verdict = False
        if verdict is None:
            counts["extract_fail"] += 1
        rewards.append(1.0 if verdict else 0.0)
    if metrics is not None:
        for key, n in counts.items():
            metrics[key] = metrics.get(key, 0) + n
    return rewards


def _parse_golds(golds: Sequence[Any], timeout_s: float, counts: Counter[str]) -> dict[str, list]:
    """Each distinct gold answer parsed once (a GRPO group shares one); warns once on failures."""
    parsed: dict[str, list] = {}
    for gold in golds:
        key = str(gold)
        if gold is None or key in parsed:
            continue
        try:
            parsed[key] = call_with_deadline(partial(parse_answer, gold_answer(gold)), timeout_s)
        except TimeoutError:
            parsed[key] = []
    failed = [key for key in parsed if not parsed[key]]
    if failed:
        rows = sum(gold is not None and str(gold) in failed for gold in golds)
        counts["gold_unparseable"] += rows
        logger.warning(
            "math reward: %d gold answer(s) could not be parsed (e.g. %r); their %d row(s) score None. "
            "Check the `answer` column: it should hold a number, a LaTeX expression, or a solution "
            "ending in \\boxed{...} or '#### n'.",
            len(failed), failed[0][:80], rows,
        )  # fmt: skip
    return parsed


class _Overdue(BaseException):
    """Raised inside an overdue verifier thread to stop it.

    A BaseException, so math-verify's `except Exception` handlers let it through.
    """


def call_with_deadline(fn: Callable[[], T], timeout_s: float) -> T:
    """`fn()` run in a daemon thread; TimeoutError if it has not returned after `timeout_s`.

    Works from any thread or process (see the module docstring). An overdue call is stopped by an
    asynchronous exception at its next Python bytecode; time spent inside one C call cannot be cut.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = fn()
        except _Overdue:
            pass
        except BaseException as error:  # handed to the caller below
            outcome["error"] = error

    thread = threading.Thread(target=run, name="r1kit-math-verify", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(_Overdue))
        raise TimeoutError(f"math verification took longer than {timeout_s} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _math_verify():
    """The math_verify module, imported on first use (it pulls in SymPy: half a second).

    Called on the caller's thread before any deadline thread starts, so that a deadline can never
    interrupt the import itself. Also drops math-verify's warning that its timeout is off: this
    module enforces its own.
    """
    import math_verify

    global _quieted
    if not _quieted:
        for name in ("math_verify.parser", "math_verify.grader"):
            logging.getLogger(name).addFilter(_not_timeout_disabled)
        _quieted = True
    return math_verify


_quieted = False


def _not_timeout_disabled(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Timeout is disabled")
