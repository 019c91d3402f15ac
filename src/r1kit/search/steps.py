"""Where one reasoning step ends: the separators MCTS expands by, and a splitter.

A step ends with a separator, kept at its end. The built-in arithmetic task writes one partial sum
per step (`7+8=15 15+6=21`), so its separators are the space between partial sums and the close of
the thinking block; other text is split at blank lines, the usual step boundary of chain-of-thought
data (PRM800K, Math-Shepherd).

`r1kit.data.steps` (process reward models) splits steps too; this minimal splitter serves the
search until the two are unified there.
"""

from __future__ import annotations

from typing import Sequence

TASK_SEPARATORS: dict[str, tuple[str, ...]] = {"arithmetic": (" ", "</think>")}
"""Step separators of the built-in tasks that have short steps."""

DEFAULT_SEPARATORS: tuple[str, ...] = ("\n\n",)

END_STRINGS: tuple[str, ...] = ("</answer>",)
"""Text that ends a solution: a step holding one is terminal."""


def separators_for(task: str, configured: Sequence[str] = ()) -> list[str]:
    """The configured separators, else the task's, else blank lines."""
    return list(configured) or list(TASK_SEPARATORS.get(task, DEFAULT_SEPARATORS))


def split_steps(text: str, separators: Sequence[str]) -> list[str]:
    """`text` cut after every separator, separators kept: joining the steps gives `text` back.

    >>> split_steps("<think>7+8=15 15+6=21</think><answer>21</answer>", [" ", "</think>"])
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
