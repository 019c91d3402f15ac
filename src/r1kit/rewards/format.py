"""Rewards for the R1 output format: `<think>reasoning</think><answer>final answer</answer>`.

DeepSeek-R1-Zero's template asks the model to reason inside `<think>` tags and answer inside
`<answer>` tags; a rule-based format reward is what makes a base model adopt that shape. Two
rewards live here:

- `format_reward`: 1.0 when the whole completion is exactly one think block followed by one answer
  block (whitespace around and between them allowed), else 0.0. Strict on purpose: a partial match
  would reward text before or after the blocks, which the model learns to pad.
- `tag_count_reward`: 0.25 for each of `<think>`, `</think>`, `<answer>`, `</answer>` that appears
  exactly once (open-r1's `tag_count_reward`). It gives a gradient before the strict format is
  ever met, and a tag repeated twice earns nothing, which punishes emitting several answer blocks.

`think_prefilled=True` is for templates whose prompt already ends with `<think>` (the R1 chat
template, and many R1-Zero prompts): the completion then starts inside the reasoning and must
contain `</think>` but no `<think>` of its own.

`think_text` (the chain of thought of a completion) is shared with the language reward.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from r1kit.rewards.base import Completion, completion_text

TAGS = ("<think>", "</think>", "<answer>", "</answer>")

_FULL = re.compile(r"\s*<think>(?P<think>.*?)</think>\s*<answer>(?P<answer>.*?)</answer>\s*", re.DOTALL)
_PREFILLED = re.compile(r"(?P<think>.*?)</think>\s*<answer>(?P<answer>.*?)</answer>\s*", re.DOTALL)


def is_r1_format(text: str, think_prefilled: bool = False) -> bool:
    """Whether `text` is exactly one think block then one answer block, each tag used once."""
    match = (_PREFILLED if think_prefilled else _FULL).fullmatch(text)
    if match is None:
        return False
    # The lazy groups cannot hide a second closing tag, but they can hide a stray opening one
    # ("<think>a<think>b</think>..."), so count every tag: each exactly once (none for a prefilled
    # <think>).
    expected = {tag: 1 for tag in TAGS}
    if think_prefilled:
        expected["<think>"] = 0
    return all(text.count(tag) == n for tag, n in expected.items())


def format_reward(
    completions: Sequence[Completion], *, think_prefilled: bool = False, **columns: Any
) -> list[float | None]:
    """1.0 if a completion is `<think>…</think><answer>…</answer>` and nothing else, else 0.0.

    think_prefilled: the prompt already ends with `<think>`, so the completion must not open it.
    """
    return [1.0 if is_r1_format(completion_text(c), think_prefilled) else 0.0 for c in completions]


def tag_count_reward(
    completions: Sequence[Completion], *, think_prefilled: bool = False, **columns: Any
) -> list[float | None]:
    """0.25 per R1 tag that appears exactly once (so 0.0 to 1.0), as open-r1's tag_count_reward.

    think_prefilled: the prompt opened `<think>`; its quarter is earned by *not* repeating it.
    """
    rewards: list[float | None] = []
    for completion in completions:
        text = completion_text(completion)
        score = 0.0
        for tag in TAGS:
            wanted = 0 if (think_prefilled and tag == "<think>") else 1
            if text.count(tag) == wanted:
                score += 0.25
        rewards.append(score)
    return rewards


def think_text(text: str) -> str:
    """The chain of thought of a completion: the inside of `<think>…</think>`.

    With only a closing tag (a prefilled `<think>`), the text before it; with only an opening tag
    (cut off mid-thought), the text after it; with no tags, the whole text.
    """
    start = text.find("<think>")
    end = text.find("</think>", start + 1 if start >= 0 else 0)
    if start >= 0:
        return text[start + len("<think>") : end if end >= 0 else len(text)]
    if end >= 0:
        return text[:end]
    return text
