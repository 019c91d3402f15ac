"""Disjoint, reproducible train/test splits for generated tasks.

A problem belongs to the test split when a stable hash of its canonical key falls in the first
`test_fraction` of the hash range. The split is a property of the problem, not of the seed, so
any seed's train rows are disjoint from any seed's test rows.
"""

from __future__ import annotations

import random
import zlib
from typing import Callable, TypeVar

from r1kit.errors import R1kitError

T = TypeVar("T")
TEST_FRACTION = 0.1


def in_test_split(key: str, test_fraction: float = TEST_FRACTION) -> bool:
    return zlib.crc32(key.encode()) % 10_000 < test_fraction * 10_000


def sample_split(
    split: str,
    n: int,
    seed: int,
    draw: Callable[[random.Random], T],
    key: Callable[[T], str],
    unique: bool,
) -> list[T]:
    """`n` problems of `split` drawn by `draw`; `unique` forbids repeats (used for test sets)."""
    if split not in ("train", "test"):
        raise R1kitError(f"unknown split {split!r}; choose train or test")
    want_test = split == "test"
    # Different streams for the two splits, so asking for more test rows never shifts train rows.
    rng = random.Random(f"{seed}-{split}")
    out: list[T] = []
    seen: set[str] = set()
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 200 * n + 10_000:
            raise R1kitError(
                f"could only generate {len(out)} distinct {split} problems of the {n} asked; "
                "ask for fewer rows or make the task harder (more digits or operands)"
            )
        item = draw(rng)
        k = key(item)
        if in_test_split(k) != want_test or (unique and k in seen):
            continue
        seen.add(k)
        out.append(item)
    return out
