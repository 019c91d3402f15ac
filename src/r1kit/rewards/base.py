"""What every reward function shares: the signature and turning a completion into text.

A reward function is `fn(completions, **columns) -> list[float | None]`, the signature TRL uses.
`completions` holds strings, or chat message lists (`[{"role": "assistant", "content": ...}]`);
dataset columns come as keyword lists of the same length. `None` means "not applicable to this
row" and is left out of normalisation.

A function that also accepts a keyword `metrics` receives a dict it may fill with counts
(`{"extract_fail": 3}`); the composer logs them as `reward/<name>/<key>`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

Completion = str | Sequence[dict[str, Any]]
RewardFn = Callable[..., list[float | None]]


def completion_text(completion: Completion) -> str:
    """The text of a completion: the string itself, or the content of the last message."""
    if isinstance(completion, str):
        return completion
    if len(completion) == 0:
        return ""
    last = completion[-1]
    content = last.get("content", "") if isinstance(last, dict) else str(last)
    return content if isinstance(content, str) else str(content)
