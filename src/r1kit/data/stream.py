"""Endless shuffled streams of training rows whose position is part of a checkpoint.

A recipe draws every step's data from one of these; `state_dict()` holds its order, its position
and its generator's state, so a resumed run draws exactly the batches the uninterrupted run would
have drawn. Each stream has its own `random.Random(seed)`: the data order depends on nothing else.

- `PromptStream`: rows n at a time, an epoch's tail continuing into the next shuffled epoch
  (GRPO's and PPO's prompts).
- `BatchStream`: indices in batches of a fixed size; the tail of an epoch that does not fill a
  batch is dropped (supervised examples, distillation rows).
- `PairStream`: batches of preference-pair indices, a fresh shuffle every epoch and never more
  pairs than there are (reward model, DPO).

Under torchrun every rank holds the same stream and draws the same rows, then keeps its own share
(`r1kit.train.distributed.rank_slice`), so the streams never drift apart and one data position
serves every rank.
"""

from __future__ import annotations

import random
from typing import Any, Sequence

from r1kit.errors import R1kitError


def set_random_state(rng: random.Random, state: Any) -> None:
    """rng.setstate(state) for a state that went through a checkpoint (which may give lists where
    random.setstate wants tuples)."""
    rng.setstate(_tuples(state))


def _tuples(x: Any) -> Any:
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


class PromptStream:
    """Endless shuffled training rows, n at a time; its position is part of a checkpoint."""

    def __init__(self, rows: Sequence[dict[str, Any]], seed: int):
        self.rows, self.rng, self.order, self.pos = rows, random.Random(seed), [], 0

    def take(self, n: int) -> list[dict[str, Any]]:
        out = []
        while len(out) < n:
            if self.pos >= len(self.order):
                self.order, self.pos = list(range(len(self.rows))), 0
                self.rng.shuffle(self.order)
            out.append(self.rows[self.order[self.pos]])
            self.pos += 1
        return out

    def state_dict(self) -> dict[str, Any]:
        # `order` is replaced, never changed in place, so holding the list itself is safe.
        return {"order": self.order, "pos": self.pos, "rng": self.rng.getstate()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_rows(state["order"], len(self.rows))
        self.order, self.pos = list(state["order"]), int(state["pos"])
        set_random_state(self.rng, state["rng"])


class BatchStream:
    """Endless batches of `batch_size` indices in [0, n), reshuffled (in place) every epoch from
    `seed`; an epoch yields n // batch_size batches, or one batch of all n when n < batch_size."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.rng = n, batch_size, random.Random(seed)
        self.order, self.pos = list(range(n)), 0  # pos 0: the next take starts an epoch

    def take(self) -> list[int]:
        if self.pos == 0:
            self.rng.shuffle(self.order)
        if self.n < self.batch_size:
            return list(self.order)
        batch = self.order[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        if self.pos + self.batch_size > self.n:
            self.pos = 0
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"order": list(self.order), "pos": self.pos, "rng": self.rng.getstate()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_rows(state["order"], self.n)
        if len(state["order"]) != self.n:
            raise R1kitError(f"the checkpoint's data position holds {len(state['order'])} training rows but there are {self.n}; resume with the same data")
        self.order, self.pos = list(state["order"]), int(state["pos"])
        set_random_state(self.rng, state["rng"])


class PairStream:
    """Endless shuffled batches of pair indices in [0, n), reshuffled every epoch from `seed`."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.rng = n, min(batch_size, n), random.Random(seed)
        self.order: list[int] = []

    def take(self) -> list[int]:
        if len(self.order) < self.batch_size:
            self.order = list(range(self.n))
            self.rng.shuffle(self.order)
        picked, self.order = self.order[: self.batch_size], self.order[self.batch_size :]
        return picked

    def state_dict(self) -> dict[str, Any]:
        return {"order": self.order, "rng": self.rng.getstate()}  # `order` is replaced, never changed in place

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_rows(state["order"], self.n)
        self.order = list(state["order"])
        set_random_state(self.rng, state["rng"])


def _check_rows(order: Sequence[int], n: int) -> None:
    if order and max(order) >= n:
        raise R1kitError(f"the checkpoint's data position refers to {max(order) + 1} training rows but there are {n}; resume with the same data")
