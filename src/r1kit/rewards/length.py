"""Rewards that shape how long and how padded a completion is.

RL with verifiable rewards makes completions grow; left alone they grow into the generation limit,
get truncated and lose their answer, or fill up with loops. Three standard remedies:

- `overlong_reward`: DAPO's soft overlong punishment (Yu et al. 2025, eq. 13). 0 up to
  `max_length - cache_length`, then linear down to -1 at `max_length`, -1 beyond. It warns the
  policy before the hard cut instead of zeroing a truncated answer's reward without explanation.
- `cosine_reward`: the cosine length scaling of Yeo et al. 2025 ("Demystifying Long Chain-of-Thought
  Reasoning in LLMs", eq. 1). A correct answer earns `correct_start` at length 0, decaying along a
  half cosine to `correct_end` at `max_length`; a wrong one rises from `wrong_start` to `wrong_end`
  (so a wrong answer is punished less when the model at least kept thinking); reaching
  `max_length` earns `exceed`. Defaults are open-r1's scale (correct 1.0 -> 0.5, wrong -1.0 ->
  -0.5), which composes with 0/1 rewards; the paper used 2 -> 1, -10 -> 0 and exceed -10.
- `repetition_reward`: open-r1's n-gram repetition penalty: `max_penalty` times the fraction of
  repeated word n-grams, so a completion that loops approaches `max_penalty` and one without
  repeats scores 0.

Length unit: tokens when the batch carries `completion_ids` (TRL's column: one list of token ids
per completion) or `completion_lengths` (one int per completion), else characters of the
completion text. Bind `max_length` to the rollout's `max_new_tokens` (in the same unit).
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Sequence

from r1kit.errors import R1kitError
from r1kit.rewards.base import Completion, RewardFn, completion_text


def lengths_of(
    completions: Sequence[Completion],
    completion_ids: Sequence[Sequence[int]] | None = None,
    completion_lengths: Sequence[int] | None = None,
) -> list[int]:
    """Length of each completion: tokens if ids or lengths are given, else characters."""
    if completion_lengths is not None:
        return [int(n) for n in completion_lengths]
    if completion_ids is not None:
        return [len(ids) for ids in completion_ids]
    return [len(completion_text(c)) for c in completions]


def overlong_penalty(length: int, max_length: int, cache_length: int) -> float:
    """DAPO's soft overlong punishment for one completion of `length`."""
    if not 0 < cache_length <= max_length:
        raise R1kitError(
            f"overlong reward needs 0 < cache_length <= max_length, got cache_length={cache_length} "
            f"and max_length={max_length}; set cache_length to a part of max_length (DAPO: 4096 of 20480)."
        )
    soft_start = max_length - cache_length
    if length <= soft_start:
        return 0.0
    if length <= max_length:
        return (soft_start - length) / cache_length
    return -1.0


def overlong_reward(
    completions: Sequence[Completion],
    *,
    max_length: int = 20480,
    cache_length: int = 4096,
    completion_ids: Sequence[Sequence[int]] | None = None,
    completion_lengths: Sequence[int] | None = None,
    **columns: Any,
) -> list[float | None]:
    """DAPO soft overlong punishment: 0, then linear to -1 over the last `cache_length`, then -1.

    max_length: L_max, the generation limit (DAPO: 20480 tokens).
    cache_length: L_cache, the soft zone before it (DAPO: 4096 tokens).
    """
    lengths = lengths_of(completions, completion_ids, completion_lengths)
    return [overlong_penalty(n, max_length, cache_length) for n in lengths]


def cosine_value(length: int, max_length: int, start: float, end: float) -> float:
    """Yeo et al.'s CosFn: `start` at length 0, `end` at `max_length`, half a cosine between."""
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * length / max_length))


def cosine_reward(
    completions: Sequence[Completion],
    *,
    max_length: int = 1000,
    correct_start: float = 1.0,
    correct_end: float = 0.5,
    wrong_start: float = -1.0,
    wrong_end: float = -0.5,
    exceed: float = -1.0,
    verifier: str = "math",
    correct_threshold: float = 1.0,
    correct: Sequence[Any] | None = None,
    completion_ids: Sequence[Sequence[int]] | None = None,
    completion_lengths: Sequence[int] | None = None,
    metrics: dict[str, float] | None = None,
    **columns: Any,
) -> list[float | None]:
    """Cosine length scaling of a correctness signal (Yeo et al. 2025).

    max_length: L_max; a completion this long or longer earns `exceed`.
    correct_start / correct_end: reward of a correct answer at length 0 / at max_length.
    wrong_start / wrong_end: reward of a wrong answer at length 0 / at max_length.
    exceed: reward at or past max_length (the paper's r_e: the answer was truncated).
    verifier: reward name (see `r1kit.rewards.get`) whose score decides correctness, used when the
        batch has no `correct` column; its rows that are None stay None here.
    correct_threshold: a verifier score at or above this counts as correct.
    correct: optional column of booleans (or None) that gives correctness directly.
    """
    if max_length <= 0:
        raise R1kitError(f"cosine reward needs max_length > 0, got {max_length}; set it to the generation limit.")
    if correct is None:
        correct = _verify(
            completions, verifier, correct_threshold, metrics, completion_ids, completion_lengths, columns
        )
    lengths = lengths_of(completions, completion_ids, completion_lengths)
    rewards: list[float | None] = []
    for length, is_correct in zip(lengths, correct, strict=True):
        if is_correct is None:
            rewards.append(None)
        elif length >= max_length:
            rewards.append(exceed)
        elif is_correct:
            rewards.append(cosine_value(length, max_length, correct_start, correct_end))
        else:
            rewards.append(cosine_value(length, max_length, wrong_start, wrong_end))
    return rewards


RESOLVE_VERIFIER: Callable[[str], RewardFn] | None = None
"""How `cosine_reward` finds the reward function its `verifier` names: `r1kit.rewards.registry.get`,
installed here by the registry when it is imported. The registry lists this module's rewards, so
this module cannot import it back; importing any module of `r1kit.rewards` runs the package's
`__init__`, which imports the registry, so the lookup is in place before a reward can be called."""


def _verify(completions, verifier, threshold, metrics, completion_ids, lengths, columns) -> list[bool | None]:
    """Correctness of each completion according to the reward named `verifier`."""
    fn = RESOLVE_VERIFIER(verifier)
    extra: dict[str, Any] = {}
    if completion_ids is not None:
        extra["completion_ids"] = completion_ids
    if lengths is not None:
        extra["completion_lengths"] = lengths
    if metrics is not None and "metrics" in inspect.signature(fn).parameters:
        extra["metrics"] = metrics
    scores = fn(completions, **columns, **extra)
    return [None if s is None else s >= threshold for s in scores]


def repetition_penalty(text: str, ngram_size: int, max_penalty: float) -> float:
    """`max_penalty` times the fraction of repeated word n-grams in `text` (open-r1)."""
    words = text.lower().split()
    if len(words) < ngram_size:
        return 0.0
    ngrams = list(zip(*(words[i:] for i in range(ngram_size))))
    return (1.0 - len(set(ngrams)) / len(ngrams)) * max_penalty


def repetition_reward(
    completions: Sequence[Completion], *, ngram_size: int = 3, max_penalty: float = -1.0, **columns: Any
) -> list[float | None]:
    """N-gram repetition penalty: 0 without repeats, towards `max_penalty` as n-grams repeat.

    ngram_size: words per n-gram (open-r1: 3).
    max_penalty: the penalty for a completion made only of repeats; must be <= 0.
    """
    if max_penalty > 0 or ngram_size < 1:
        raise R1kitError(
            f"repetition reward needs max_penalty <= 0 and ngram_size >= 1, got max_penalty={max_penalty} "
            f"and ngram_size={ngram_size}; a penalty is negative (open-r1: -1.0 with 3-grams)."
        )
    return [repetition_penalty(completion_text(c), ngram_size, max_penalty) for c in completions]

