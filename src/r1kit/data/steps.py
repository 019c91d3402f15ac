"""Solutions as steps: where a step ends, in text and in tokens.

A step is the text up to a separator (`"\\n"` for line-per-step solutions as in PRM800K; `" "` for
the built-in arithmetic task, whose worked solutions write one `a+b=c` partial sum per step). The
separator is not part of a step; the last step ends where the text ends. Pieces that are empty
after stripping (two separators in a row, a trailing separator) are not steps.

Process reward models score a solution at the end of every step (Lightman et al. 2023, "Let's
Verify Step by Step"; Wang et al. 2024, Math-Shepherd), and tree search expands a solution a step
at a time, so both need the same three things:

- `split_steps(text, sep)`: the steps of a solution;
- `step_prefixes(steps, sep)`: the text of the solution through step k, for k = 1..K, each ending
  in the separator so that a continuation starts the next step;
- `encode_steps(tokenizer, prompt, steps, sep)`: token ids of prompt + steps, each step followed by
  the separator's tokens, and the position of the separator's last token after every step, where
  a PRM reads its score (TRL's PRMTrainer lays steps out the same way);
- `step_end_tokens(token_texts, sep)`: in a sampled completion, the index of the token that ends
  each step, for step-level rewards on the policy's own tokens (process-supervised GRPO).
"""

from __future__ import annotations

from typing import Sequence

from r1kit.errors import R1kitError


def split_steps(text: str, separator: str) -> list[str]:
    """The steps of `text`: the pieces between separators, empty ones dropped, each stripped of
    the whitespace at its ends only when the separator itself is whitespace."""
    _check(separator)
    pieces = text.split(separator)
    strip = separator.isspace()
    return [p.strip() if strip else p for p in pieces if p.strip()]


def join_steps(steps: Sequence[str], separator: str) -> str:
    """The solution written from its steps (the inverse of `split_steps` on a tidy text)."""
    _check(separator)
    return separator.join(steps)


def step_prefixes(steps: Sequence[str], separator: str) -> list[str]:
    """Text through step k (k = 1..K), each ending in the separator: what a policy continues from
    to finish a solution that shares the first k steps (Math-Shepherd's completions)."""
    _check(separator)
    return [separator.join(steps[: k + 1]) + separator for k in range(len(steps))]


def encode_steps(tokenizer, prompt: str, steps: Sequence[str], separator: str, max_length: int = 0) -> tuple[list[int], list[int]]:
    """Token ids of `prompt` followed by every step and a separator, and the index in those ids of
    each step's separator's last token (one per step kept).

    Steps and separators are tokenised one piece at a time, so the score position of a step never
    moves with the steps around it. max_length > 0 drops the steps that would not fit whole.
    """
    _check(separator)
    sep = tokenizer(separator, add_special_tokens=False)["input_ids"]
    if not sep:
        raise R1kitError(f"the step separator {separator!r} encodes to no tokens; choose a separator the tokenizer writes")
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    ends: list[int] = []
    for step in steps:
        piece = tokenizer(step, add_special_tokens=False)["input_ids"] + sep
        if max_length and len(ids) + len(piece) > max_length:
            break
        ids = ids + piece
        ends.append(len(ids) - 1)
    return ids, ends


def step_end_tokens(token_texts: Sequence[str], separator: str) -> list[int]:
    """Indices of the tokens that end each step of a completion given as its tokens' texts.

    A step ends at the token that completes its separator (the separator counts as the step's end,
    as in `encode_steps`) and the last step at the last token. Empty steps are not steps, as in
    `split_steps`: a separator right after another one (or at the start) ends nothing.
    """
    _check(separator)
    text, ends, step_open, seen = "", [], False, 0
    for i, piece in enumerate(token_texts):
        text += piece
        while (found := text.find(separator, seen)) != -1 and found + len(separator) <= len(text):
            if text[seen:found].strip():
                ends.append(i)
            seen = found + len(separator)
        step_open = bool(text[seen:].strip())
    if step_open:
        ends.append(len(token_texts) - 1)
    return ends


def _check(separator: str) -> None:
    if not separator:
        raise R1kitError("the step separator is empty; set it to the text that ends a step (e.g. '\\n')")


# --------------------------------------------------------------------------------------------
# Steps as MCTS expands them (r1kit.search): a step ends with one of several separators, kept at its
# end, so that joining the steps gives the text back. Arithmetic writes one partial sum per step
# (`7+8=15 15+6=21`); other text is split at blank lines, the usual step boundary of
# chain-of-thought data (PRM800K, Math-Shepherd).

TASK_SEPARATORS: dict[str, tuple[str, ...]] = {"arithmetic": (" ", "</think>")}
"""Step separators of the built-in tasks that have short steps."""

DEFAULT_SEPARATORS: tuple[str, ...] = ("\n\n",)

END_STRINGS: tuple[str, ...] = ("</answer>",)
"""Text that ends a solution: a step holding one is terminal."""


def separators_for(task: str, configured: Sequence[str] = ()) -> list[str]:
    """The configured separators, else the task's, else blank lines."""
    return list(configured) or list(TASK_SEPARATORS.get(task, DEFAULT_SEPARATORS))


def cut_steps(text: str, separators: Sequence[str]) -> list[str]:
    """`text` cut after every separator, separators kept: joining the steps gives `text` back.

    >>> cut_steps("<think>7+8=15 15+6=21</think><answer>21</answer>", [" ", "</think>"])
    ['<think>7+8=15 ', '15+6=21</think>', '<answer>21</answer>']
    """
    steps, start, i = [], 0, 0
    while i < len(text):
        hit = next((s for s in separators if text.startswith(s, i)), None)
        if hit is None:
            i += 1
            continue
        i += len(hit)
        steps.append(text[start:i])
        start = i
    if start < len(text):
        steps.append(text[start:])
    return steps
