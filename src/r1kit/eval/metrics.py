"""The estimators of evaluation: unbiased pass@k, majority voting (maj@k, R1's cons@64),
`sample_metrics`, which applies them to n samples per prompt, best-of-N under a scorer, and AUROC
(a process reward model's step classification)."""

from __future__ import annotations

import bisect
import math
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


def auroc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """Area under the ROC curve: the chance that a random positive outscores a random negative,
    ties counting half (the Mann-Whitney U statistic over n_pos * n_neg). NaN without both classes."""
    pos = [s for s, p in zip(scores, positive, strict=True) if p]
    neg = [s for s, p in zip(scores, positive) if not p]
    if not pos or not neg:
        return math.nan
    ranked = sorted(neg)
    wins = 0.0
    for s in pos:  # negatives below s count 1, equal to s count 1/2
        below, upto = bisect.bisect_left(ranked, s), bisect.bisect_right(ranked, s)
        wins += below + 0.5 * (upto - below)
    return wins / (len(pos) * len(neg))


def best_of_n(scores: Sequence[Sequence[float]], correct: Sequence[Sequence[bool]]) -> float:
    """Best-of-N accuracy: the share of prompts whose highest-scored sample (the first one among
    equal scores) is correct."""
    picks = [c[max(range(len(s)), key=lambda j: s[j])] for s, c in zip(scores, correct, strict=True) if s]
    return sum(picks) / len(scores) if scores else math.nan
