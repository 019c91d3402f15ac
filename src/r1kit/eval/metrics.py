"""The estimators of evaluation: unbiased pass@k and majority voting (maj@k, R1's cons@64), and
`sample_metrics`, which applies them to n samples per prompt."""

from __future__ import annotations

from collections import Counter
from math import comb
from statistics import fmean
from typing import Hashable, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def majority_vote(answers: Sequence[Hashable | None]) -> Hashable | None:
    """The most common non-None answer; ties go to the answer seen first. None if all are None."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == best)


def maj_at_k(answers: Sequence[Hashable | None], correct: Sequence[bool]) -> float:
    """1.0 if the majority answer among the samples is a correct one, else 0.0."""
    if len(answers) != len(correct):
        raise ValueError(f"maj@k needs one correctness flag per answer, got {len(answers)} answers and {len(correct)} flags")
    winner = majority_vote(answers)
    if winner is None:
        return 0.0
    return float(any(ok for a, ok in zip(answers, correct, strict=True) if a == winner))


def reported_ks(n: int, k: int) -> list[int]:
    """The k of the pass@k reported from n samples per prompt: 1, 2, 4, ... up to n, and k itself."""
    ks = {2**i for i in range(n.bit_length())}  # every power of two <= n
    return sorted(ks | ({k} if 1 <= k <= n else set()))


def sample_metrics(correct: Sequence[Sequence[bool]], answers: Sequence[Sequence[Hashable | None]], k: int) -> dict[str, float]:
    """Means over prompts of n samples each (`correct[i]` and `answers[i]` hold prompt i's n):
    pass@j for j in `reported_ks(n, k)`, each the unbiased estimate from all n samples (pass@1 is
    the fraction correct), and maj@n, the vote of all n."""
    n = len(correct[0])
    out = {f"pass@{j}": fmean(pass_at_k(n, sum(c), j) for c in correct) for j in reported_ks(n, k)}
    out[f"maj@{n}"] = fmean(maj_at_k(a, c) for a, c in zip(answers, correct, strict=True))
    return out
