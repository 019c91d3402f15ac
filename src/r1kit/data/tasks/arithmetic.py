"""Multi-step integer arithmetic, where a chain of thought helps.

A problem is a left-to-right chain such as `47+8-13`; the worked `cot` writes each partial result
(`47+8=55 55-13=42`) and the answer is the final value. Difficulty is set by the number of operands
and the digits per operand. Besides prompts for RL, the task writes a synthetic pretraining corpus
for the demo's base model: documents in a mixture of styles (bare answer, untagged working, and the
tagged R1 format) so that the base sometimes reasons, sometimes uses the tags, and is sometimes
right -- leaving room for RL to raise all three. With `languages`, every worked solution joins its
partial results with words of one language (`7+8=15 then 15+6=21 so 21`, or in Greek
`7+8=15 μετά 15+6=21 άρα 21`), and a `code_switch` share of them switch language part way, as real
corpora code-switch: a base that knows two languages for the same reasoning, to watch RL mix them.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any, Sequence

from r1kit.data.tasks.split import sample_split
from r1kit.data.templates import extract_answer_tag, format_response, render_prompt
from r1kit.errors import R1kitError
from r1kit.data.completion import Completion, completion_text

LAST_INT_RE = re.compile(r"-?\d+")
EQUATION_RE = re.compile(r"(-?\d+(?:\s*[-+*]\s*\(?-?\d+\)?)+)\s*=\s*(-?\d+)")
TAG_RE = re.compile(r"</?(?:think|answer)>")
WORDS = {"en": ("then", "so"), "el": ("μετά", "άρα")}
"""Per language, the word between two partial results and the word before the answer."""


@dataclass(frozen=True)
class Problem:
    operands: tuple[int, ...]
    ops: tuple[str, ...]

    @property
    def expression(self) -> str:
        """The chain as written, with parentheses where left-to-right order differs from the usual
        precedence: `(2+3)*4`, not `2+3*4` (which is 14, not the chain's 20)."""
        out = str(self.operands[0])
        open_sum = False  # does `out` end in an unparenthesised + or - ?
        for op, x in zip(self.ops, self.operands[1:]):
            if op == "*" and open_sum:
                out, open_sum = f"({out})", False
            out += f"{op}{x}"
            open_sum = open_sum or op in "+-"
        return out

    def steps(self) -> list[tuple[str, int]]:
        """[(`a+b`, value), (`value-c`, value) ...]: the partial results left to right."""
        acc = self.operands[0]
        out = []
        for op, x in zip(self.ops, self.operands[1:]):
            new = acc + x if op == "+" else acc - x if op == "-" else acc * x
            out.append((f"{acc}{op}{x}", new))
            acc = new
        return out

    @property
    def value(self) -> int:
        steps = self.steps()
        return steps[-1][1] if steps else self.operands[0]


class ArithmeticTask:
    """Rows: `prompt` (e.g. `47+8-13=?`), `answer` (`42`), `cot` (tagged worked solution)."""

    name = "arithmetic"

    def __init__(self, n_operands: int | Sequence[int] = (2, 3), digits: int = 1, ops: str = "+-", terse_fraction: float = 0.0,
                 languages: Sequence[str] = (), code_switch: float = 0.0):  # fmt: skip
        """terse_fraction: the share of rows whose `cot` is one step (`3+3+2=8`) instead of every
        partial result. A cold-start set that mixes terse and worked solutions leaves the model
        a choice of how much to reason, which RL can then settle by reward (the demo's SFT).

        languages: the pretraining corpus's worked solutions are written in words of these
        languages (keys of WORDS), one drawn uniformly per document; empty keeps the wordless
        corpus. code_switch: the share of worked documents that switch to another of the languages
        at a random word. Neither changes the prompts, answers or `cot` of `generate`."""
        lo, hi = (n_operands, n_operands) if isinstance(n_operands, int) else tuple(n_operands)
        if lo < 2 or hi < lo:
            raise R1kitError(f"arithmetic n_operands must be >= 2 (or a [min, max] range), got {n_operands!r}")
        if digits < 1 or not ops or set(ops) - set("+-*"):
            raise R1kitError(f"arithmetic needs digits >= 1 and ops drawn from '+-*', got digits={digits}, ops={ops!r}")
        if not 0.0 <= terse_fraction <= 1.0:
            raise R1kitError(f"arithmetic terse_fraction must be in [0, 1], got {terse_fraction!r}")
        if set(languages) - set(WORDS) or not 0.0 <= code_switch <= 1.0 or (code_switch > 0 and len(set(languages)) < 2):
            raise R1kitError(f"arithmetic languages must be drawn from {sorted(WORDS)} and code_switch in [0, 1] with two or more "
                             f"languages to switch between, got languages={list(languages)!r}, code_switch={code_switch!r}")  # fmt: skip
        self.n_range, self.digits, self.ops, self.terse_fraction = (lo, hi), digits, ops, terse_fraction
        self.languages, self.code_switch = tuple(dict.fromkeys(languages)), code_switch

    # -- generation ------------------------------------------------------------------------------
    def draw(self, rng: random.Random) -> Problem:
        n = rng.randint(*self.n_range)
        top = 10**self.digits - 1
        operands = tuple(rng.randint(0, top) for _ in range(n))
        ops = tuple(rng.choice(self.ops) for _ in range(n - 1))
        return Problem(operands, ops)

    def row(self, p: Problem) -> dict[str, Any]:
        # Seeded by the expression, so a problem's solution style is the same in every split and run.
        terse = self.terse_fraction > 0 and random.Random(f"terse-{p.expression}").random() < self.terse_fraction
        think = f"{p.expression}={p.value}" if terse else " ".join(f"{e}={v}" for e, v in p.steps())
        return {"prompt": f"{p.expression}=?", "answer": str(p.value), "cot": format_response(think, str(p.value))}

    def generate(self, split: str, n: int, seed: int = 0, **params: Any) -> list[dict[str, Any]]:
        task = ArithmeticTask(**params) if params else self
        problems = sample_split(split, n, seed, task.draw, lambda p: p.expression, unique=split == "test")
        return [task.row(p) for p in problems]

    def pretrain_documents(self, n: int, seed: int = 0, style_weights: Sequence[float] = (0.4, 0.3, 0.3)) -> list[str]:
        """`n` training-split documents `Q: …\\nA: <response>` in three styles, weighted:
        bare answer, untagged working ending in the answer, tagged R1 format."""
        rng = random.Random(f"{seed}-pretrain")
        words_rng = random.Random(f"{seed}-languages")  # its own stream: the styles drawn are the wordless corpus's
        docs = []
        for p in sample_split("train", n, seed, self.draw, lambda p: p.expression, unique=False):
            think = " ".join(f"{e}={v}" for e, v in p.steps())
            style = rng.choices(range(3), weights=style_weights)[0]
            if self.languages:
                worked = self.worded(p, words_rng)
                response = (str(p.value), worked, format_response(worked, str(p.value)))[style]
            else:
                response = (str(p.value), f"{think}. So {p.value}", format_response(think, str(p.value)))[style]
            docs.append(render_prompt(f"{p.expression}=?", "tiny") + response)
        return docs

    def worded(self, p: Problem, rng: random.Random) -> str:
        """A worked solution in words of one of `languages` (`7+8=15 then 15+6=21 so 21`); with
        probability code_switch, the words from a random one on are another language's."""
        steps = [f"{e}={v}" for e, v in p.steps()]
        first = rng.choice(self.languages)
        langs = [first] * len(steps)  # one word after each step: `then` between steps, `so` before the answer
        if len(steps) > 1 and rng.random() < self.code_switch:
            at = rng.randint(1, len(steps) - 1)
            langs[at:] = [rng.choice([x for x in self.languages if x != first])] * (len(steps) - at)
        words = [WORDS[lang][0] for lang in langs[:-1]] + [WORDS[langs[-1]][1]]
        return " ".join(f"{step} {word}" for step, word in zip(steps, words)) + f" {p.value}"

    # -- verification ------------------------------------------------------------------------------
    def extract_answer(self, text: str) -> str | None:
        """The integer in the last <answer> block; without tags, the last integer of the text."""
        tagged = extract_answer_tag(text)
        source = tagged if tagged is not None else text
        found = LAST_INT_RE.findall(source)
        if tagged is not None:
            return str(int(found[0])) if len(found) == 1 and found[0] == tagged.strip() else None
        return str(int(found[-1])) if found else None

    def reward(self, completions: Sequence[Completion], answer: Sequence[Any], strict: bool = False, **columns: Any) -> list[float | None]:
        """1.0 when the extracted integer equals the gold answer, else 0.0 (None for a missing gold).

        strict: only an answer inside <answer> tags counts, as in R1-Zero's accuracy reward (the
        answer must come in the specified format); otherwise untagged text falls back to its last
        integer."""
        out: list[float | None] = []
        for c, gold in zip(completions, answer, strict=True):
            if gold is None or str(gold).strip() == "":
                out.append(None)
                continue
            text = completion_text(c)
            got = self.extract_answer(text) if not strict or extract_answer_tag(text) is not None else None
            out.append(1.0 if got is not None and got == str(int(str(gold).strip())) else 0.0)
        return out

    def check_steps(self, steps: Sequence[str], prompt: str, answer: Any) -> list[bool]:
        """Whether each step of a solution is right, for process reward labels.

        A step is right when every equation in it (`a+b=c`, or a terse chain `a+b+c=d`) is true
        when read left to right, each result is a partial result of the problem's chain no earlier
        than the last one reached, the final step's answer is the gold one, and every step before
        it is right (a step after the first mistake is wrong, as PRM800K labels up to the first
        error). A step with no equation is right when its predecessors are, unless it is the last.
        """
        problem = _parse_chain(prompt)
        partial = [v for _, v in problem.steps()] if problem is not None else []
        out: list[bool] = []
        reached, ok = -1, problem is not None
        for i, step in enumerate(steps):
            text = TAG_RE.sub(" ", step)
            for lhs, rhs in EQUATION_RE.findall(text):
                value = _left_to_right(lhs)
                later = [k for k in range(reached + 1 if reached >= 0 else 0, len(partial)) if partial[k] == value]
                if value != int(rhs) or not later:
                    ok = False
                    break
                reached = later[0]
            if ok and i == len(steps) - 1:
                got = self.extract_answer(" ".join(steps))
                ok = got is not None and str(answer).strip() != "" and got == str(int(str(answer).strip()))
            out.append(ok)
        return out


def _parse_chain(prompt: str) -> Problem | None:
    """The problem a prompt such as `(2+3)*4=?` poses, or None if it is not a chain."""
    expression = prompt.strip().removesuffix("=?").replace("(", "").replace(")", "")
    numbers = re.findall(r"\d+", expression)
    ops = re.findall(r"(?<=\d)\s*([-+*])", expression)
    if len(numbers) < 2 or len(ops) != len(numbers) - 1:
        return None
    return Problem(tuple(int(x) for x in numbers), tuple(ops))


def _left_to_right(expression: str) -> int:
    """The value of `a+b*c` read left to right (as the task's chains are)."""
    tokens = re.findall(r"(?:(?<![\d)])-)?\d+|[-+*]", expression.replace("(", "").replace(")", "").replace(" ", ""))
    acc = int(tokens[0])
    for op, x in zip(tokens[1::2], tokens[2::2]):
        acc = acc + int(x) if op == "+" else acc - int(x) if op == "-" else acc * int(x)
    return acc


TASK = ArithmeticTask()
