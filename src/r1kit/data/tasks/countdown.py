"""Countdown, the task TinyZero used to reproduce R1-Zero: reach a target with given numbers.

A row gives numbers and a target; the answer is an equation that uses each number exactly once
with + - * / and parentheses. Reward as in TinyZero: 1.0 for a correct equation, 0.1 for a
well-formed equation in <answer> tags that is wrong, 0 otherwise. Equations are evaluated with
`ast` over exact fractions, never `eval`.
"""

from __future__ import annotations

import ast
import random
import re
from fractions import Fraction
from typing import Any, Sequence

from r1kit.data.tasks.split import sample_split
from r1kit.data.templates import extract_answer_tag, format_response
from r1kit.errors import R1kitError
from r1kit.data.completion import Completion, completion_text

EQUATION_RE = re.compile(r"^[\d\s+\-*/().]+$")
FORMAT_SCORE = 0.1


def evaluate_equation(expr: str) -> tuple[Fraction, list[int]] | None:
    """(value, numbers used) of an arithmetic expression, or None if it is not one."""
    if not EQUATION_RE.match(expr):
        return None
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError:
        return None
    used: list[int] = []

    def ev(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            used.append(node.value)
            return Fraction(node.value)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
            a, b = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Add):
                return a + b
            if isinstance(node.op, ast.Sub):
                return a - b
            if isinstance(node.op, ast.Mult):
                return a * b
            if b == 0:
                raise ZeroDivisionError
            return a / b
        raise ValueError("not an arithmetic expression")

    try:
        return ev(tree), used
    except (ValueError, ZeroDivisionError, RecursionError):
        return None


class CountdownTask:
    """Rows: `prompt`, `answer` (the target, as a string), `nums` (list of ints), `cot`."""

    name = "countdown"

    def __init__(self, n_numbers: int = 3, max_number: int = 20, ops: str = "+-*"):
        if n_numbers < 2 or max_number < 2 or not ops or set(ops) - set("+-*/"):
            raise R1kitError("countdown needs n_numbers >= 2, max_number >= 2 and ops drawn from '+-*/'")
        self.n_numbers, self.max_number, self.ops = n_numbers, max_number, ops

    def draw(self, rng: random.Random) -> tuple[list[int], str, int]:
        """Numbers, a solution equation built left to right, and its (positive integer) target."""
        while True:
            nums = [rng.randint(1, self.max_number) for _ in range(self.n_numbers)]
            order = rng.sample(nums, len(nums))
            expr = f"{order[0]}{rng.choice(self.ops)}{order[1]}"
            for x in order[2:]:
                expr = f"({expr}){rng.choice(self.ops)}{x}"
            result = evaluate_equation(expr)
            if result is not None and result[0].denominator == 1 and 0 < result[0] <= 10 * self.max_number:
                return nums, expr, int(result[0])

    def generate(self, split: str, n: int, seed: int = 0, **params: Any) -> list[dict[str, Any]]:
        task = CountdownTask(**params) if params else self
        key = lambda item: f"{sorted(item[0])}->{item[2]}"  # noqa: E731
        rows = []
        for nums, expr, target in sample_split(split, n, seed, task.draw, key, unique=split == "test"):
            think = f"{expr}={target}"
            rows.append(
                {
                    "prompt": f"Using the numbers {nums}, make {target}.",
                    "answer": str(target),
                    "nums": nums,
                    "cot": format_response(think, expr),
                }
            )
        return rows

    def extract_answer(self, text: str) -> str | None:
        """The equation in the last <answer> block, without spaces, or None."""
        tagged = extract_answer_tag(text)
        return tagged.replace(" ", "") if tagged else None

    def score(self, text: str, target: int, nums: Sequence[int]) -> float:
        equation = extract_answer_tag(text)
        if equation is None:
            return 0.0
        result = evaluate_equation(equation)
        if result is None:
            return 0.0
        value, used = result
        if sorted(used) == sorted(int(x) for x in nums) and value == target:
            return 1.0
        return FORMAT_SCORE

    def reward(self, completions: Sequence[Completion], answer: Sequence[Any], nums: Sequence[Sequence[int]] | None = None, **columns: Any) -> list[float | None]:
        if nums is None:
            raise R1kitError("the countdown reward needs a `nums` column with the numbers of each row")
        return [
            None if gold is None else self.score(completion_text(c), int(gold), ns)
            for c, gold, ns in zip(completions, answer, nums, strict=True)
        ]


TASK = CountdownTask()
