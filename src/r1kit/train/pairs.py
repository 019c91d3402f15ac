"""The optimisation loop shared by the recipes that train on preference pairs (reward model, DPO).

Each step takes the next batch of pair indices (this rank's share of it under torchrun), asks the
recipe for the loss and its metrics micro-batch by micro-batch, back-propagates, and takes the
shared optimizer step (clip, skip a non-finite update, schedule); the run's step loop evaluates,
logs and checkpoints. The recipe owns only its loss and its evaluation.

A loss is a mean over pairs, so a micro-batch's loss is weighted by its share of the step's pairs
and the accumulated gradient is the whole batch's; so are the metrics (means over pairs).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from r1kit.config import OptimArgs
from r1kit.data.preference import EncodedPair, PairBatch, collate_pairs
from r1kit.data.stream import PairStream
from r1kit.train.distributed import rank_slice
from r1kit.train.microbatch import backward_pieces
from r1kit.train.optim import optimizer_step
from r1kit.train.precision import autocast

StepLoss = Callable[[torch.nn.Module, list[int], PairBatch], tuple[torch.Tensor, dict[str, float]]]
"""(the learner, indices of the batch's pairs, the collated batch on the device) -> (mean loss
over those pairs, metrics)."""


def fit_pairs(
    run,
    model: torch.nn.Module,
    pairs: Sequence[EncodedPair],
    step_loss: StepLoss,
    *,
    steps: int,
    batch_size: int,
    optim: OptimArgs,
    micro_batch_pairs: int = 0,
    precision: str = "auto",
    evaluate: Callable[[], dict[str, float]] | None = None,
    line_keys: tuple[str, ...] = (),
) -> None:
    """`steps` optimizer steps of `model` over `pairs` in `run` (a `r1kit.train.run.Run`),
    batch_size pairs a step in passes of at most micro_batch_pairs (0: the whole batch)."""
    learner = run.learner(model)
    opt, sched = run.optimizer(model.parameters(), optim, steps)
    stream = PairStream(len(pairs), batch_size, run.config.run.seed)
    run.track(stream=stream)
    pad, device = run.tokenizer.pad_token_id, next(model.parameters()).device
    model.train()
    with run.loop(steps, evaluate=evaluate, model=model, line_keys=line_keys) as loop:
        for step in loop:
            idx = rank_slice(stream.take(), run.dist, "batch_size")
            pieces = [idx[i : i + micro_batch_pairs] for i in range(0, len(idx), micro_batch_pairs)] if micro_batch_pairs else [idx]
            metrics: dict[str, float] = {}

            def loss_of(piece: list[int]) -> torch.Tensor:
                batch = collate_pairs([pairs[i] for i in piece], pad).to(device)
                with autocast(device, precision):
                    loss, m = step_loss(learner, piece, batch)
                share = len(piece) / len(idx)
                for k, v in m.items():
                    metrics[k] = metrics.get(k, 0.0) + share * v
                return loss * share if len(pieces) > 1 else loss

            with loop.guard:
                finite = backward_pieces(learner, pieces, loss_of, run.dist)
                grad_norm, lr = optimizer_step(learner, opt, sched, optim.max_grad_norm, finite)
                loop.end_step(step, {**metrics, "grad_norm": grad_norm, "lr": lr})


def prefixed(metrics: dict[str, float]) -> dict[str, float]:
    """Evaluation metrics as logged: `eval/<name>`."""
    return {f"eval/{k}": v for k, v in metrics.items()}
