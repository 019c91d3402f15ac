"""The optimisation loop shared by the recipes that train on preference pairs (reward model, DPO).

Each step takes the next batch of pair indices, collates those pairs, asks the recipe for the loss
and its metrics, back-propagates, takes the shared optimizer step (clip, skip a non-finite update,
schedule), evaluates every `run.eval_every` steps and logs. The recipe owns only its loss and its
evaluation.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import torch

from r1kit.config import OptimArgs, RunArgs
from r1kit.data.preference import EncodedPair, PairBatch, PairStream, collate_pairs
from r1kit.report.logger import MetricLogger, console, format_line
from r1kit.train.optim import optimizer_step
from r1kit.train.progress import progress_bar

StepLoss = Callable[[list[int], PairBatch], tuple[torch.Tensor, dict[str, float]]]
"""(indices of the batch's pairs, the collated batch on the device) -> (loss, metrics)."""


def fit_pairs(
    name: str,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    pairs: Sequence[EncodedPair],
    stream: PairStream,
    step_loss: StepLoss,
    run_eval: Callable[[], dict[str, float]],
    logger: MetricLogger,
    optim: OptimArgs,
    run: RunArgs,
    steps: int,
    pad_id: int,
    device: torch.device,
    loss_key: str,
    line_keys: tuple[str, ...],
) -> None:
    """`steps` optimizer steps over `pairs`; evaluation metrics are logged under `eval/`."""
    model.train()
    with progress_bar(name, steps, run.progress) as bar:
        for step in range(1, steps + 1):
            t0 = time.perf_counter()
            idx = stream.take()
            batch = collate_pairs([pairs[i] for i in idx], pad_id).to(device)
            loss, metrics = step_loss(idx, batch)
            loss.backward()
            grad_norm, lr = optimizer_step(model, opt, sched, optim.max_grad_norm)
            metrics.update({"grad_norm": grad_norm, "lr": lr, "perf/step_s": time.perf_counter() - t0})
            if run.eval_every and step % run.eval_every == 0 and step != steps:
                metrics.update(prefixed(run_eval()))
                model.train()
            if step % run.log_every == 0 or step == steps:
                logger.log(metrics, step)
            bar.advance(1, info=f"loss {metrics[loss_key]:.3f}")
            if not run.progress and step % max(1, run.log_every) == 0:
                console.print(format_line(step, metrics, line_keys))


def prefixed(metrics: dict[str, float]) -> dict[str, float]:
    """Evaluation metrics as logged: `eval/<name>`."""
    return {f"eval/{k}": v for k, v in metrics.items()}
