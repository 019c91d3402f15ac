"""What every reward function shares: the signature and turning a completion into text.

A reward function is `fn(completions, **columns) -> list[float | None]`, the signature TRL uses.
`completions` holds strings, or chat message lists (`[{"role": "assistant", "content": ...}]`);
dataset columns come as keyword lists of the same length. `None` means "not applicable to this
row" and is left out of normalisation. `Completion` and `completion_text` are
`r1kit.data.completion`'s (tasks read completions too).

A function that also accepts a keyword `metrics` receives a dict it may fill with counts
(`{"extract_fail": 3}`); the composer logs them as `reward/<name>/<key>`.
"""

from __future__ import annotations

from typing import Callable

from r1kit.data.completion import Completion, completion_text

RewardFn = Callable[..., list[float | None]]

__all__ = ["Completion", "RewardFn", "completion_text"]
