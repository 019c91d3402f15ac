"""A completion as tasks, data files and reward functions see it: a string, or chat messages.

`completions` handed to a verifier or reward function hold strings, or chat message lists
(`[{"role": "assistant", "content": ...}]`), TRL's two forms; `completion_text` gives the text of
either. It lives in `data` because tasks and preference files read completions too; `r1kit.rewards`
re-exports it (`rewards/base.py`).
"""

from __future__ import annotations

from typing import Any, Sequence

Completion = str | Sequence[dict[str, Any]]


def completion_text(completion: Completion) -> str:
    """The text of a completion: the string itself, or the content of the last message."""
    if isinstance(completion, str):
        return completion
    if len(completion) == 0:
        return ""
    last = completion[-1]
    content = last.get("content", "") if isinstance(last, dict) else str(last)
    return content if isinstance(content, str) else str(content)
