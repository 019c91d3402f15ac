"""Mini-batches and micro-batches: how a step's rows are cut into optimizer steps and passes.

- A **mini-batch** gets one optimizer step. `mini_batches(n, k)` cuts n rows into exactly k of
  them, sizes differing by at most one (6 rows in 4: 2, 2, 1, 1), so a pass takes the k steps the
  schedule counted and every DDP rank runs as many backward passes as the others.
- A **micro-batch** is one forward/backward pass. `backward_pieces` back-propagates a step's loss
  piece by piece, each piece's loss weighted (by the caller) by its share of the whole, so the
  accumulated gradient is the whole batch's (up to float rounding) while only one piece's
  activations are alive at a time. Under DDP only the last piece's backward all-reduces: the
  others run under `no_sync` (nanoGPT's gradient-accumulation trick).
"""

from __future__ import annotations

from contextlib import ExitStack, nullcontext
from typing import Callable, Sequence, TypeVar

import torch

from r1kit.train.distributed import SINGLE, Dist, all_finite

Piece = TypeVar("Piece")


def mini_batches(n: int, k: int) -> tuple[torch.Tensor, ...]:
    """Rows [0, n) in k mini-batches: shuffled with the global torch RNG when k > 1 (one
    permutation per call), in order when k = 1."""
    order = torch.randperm(n) if k > 1 else torch.arange(n)
    return order.tensor_split(k)


def row_pieces(rows: torch.Tensor, size: int) -> list[torch.Tensor]:
    """`rows` in consecutive pieces of at most `size` rows (one piece when size is 0 or larger)."""
    return [rows] if size <= 0 or size >= len(rows) else list(rows.split(size))


def backward_pieces(learners: torch.nn.Module | Sequence[torch.nn.Module], pieces: Sequence[Piece], loss_of: Callable[[Piece], torch.Tensor], dist: Dist = SINGLE) -> bool:
    """loss_of(piece).backward() for every piece, gradients accumulating; `loss_of` returns the
    piece's loss already weighted by its share of the step, and `learners` are the (possibly
    DDP-wrapped) models it trains. Returns whether every loss was finite on every rank: after a
    non-finite one nothing more is back-propagated (the caller drops the step's gradient), but the
    remaining pieces still run forward, so metrics stay complete."""
    learners = [learners] if isinstance(learners, torch.nn.Module) else list(learners)
    finite = True
    for i, piece in enumerate(pieces):
        with ExitStack() as stack:
            if i < len(pieces) - 1:  # no_sync covers forward and backward
                for learner in learners:
                    stack.enter_context(learner.no_sync() if hasattr(learner, "no_sync") else nullcontext())
            loss = loss_of(piece)
            finite = finite and all_finite(loss.detach(), dist)
            if finite:  # a NaN/inf loss is not even back-propagated
                loss.backward()
    return finite
