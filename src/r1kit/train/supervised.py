"""Supervised next-token training shared by pretraining, cold-start SFT and SFT distillation.

Examples are (prompt, response) pairs. With `completion_only` the loss covers only response tokens
(prompt labels are -100), as cold-start SFT on chain-of-thought data wants. Batches are either
right-padded per example or packed: examples concatenated into rows of exactly `max_length` tokens
(attention crosses example boundaries, as in GPT-style packing; the labels still mask prompts).

The loss of a step is the sum of token losses over all micro-batches divided by the number of
target tokens in the whole step, so grad accumulation 1×8 and 8×1 give the same gradient.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch

from r1kit.algorithms.logprobs import final_hidden_states, head_logprobs, lm_head
from r1kit.config import OptimArgs
from r1kit.errors import R1kitError
from r1kit.report.logger import MetricLogger, console, format_line
from r1kit.train.optim import build_optimizer, build_scheduler, optimizer_step
from r1kit.train.precision import autocast
from r1kit.train.progress import progress_bar

IGNORE = -100


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]


def tokenize_examples(
    tokenizer,
    pairs: Sequence[tuple[str, str]],
    max_length: int,
    completion_only: bool = True,
    add_eos: bool = True,
) -> tuple[list[Example], int]:
    """Token ids and labels for (prompt, response) pairs; returns (examples, number truncated)."""
    examples, truncated = [], 0
    eos = [tokenizer.eos_token_id] if add_eos and tokenizer.eos_token_id is not None else []
    for prompt, response in pairs:
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
        r = tokenizer(response, add_special_tokens=False)["input_ids"] + eos
        ids = p + r
        labels = ([IGNORE] * len(p) if completion_only else list(p)) + r
        if len(ids) > max_length:
            truncated += 1
            ids, labels = ids[:max_length], labels[:max_length]
        if any(l != IGNORE for l in labels[1:]):
            examples.append(Example(ids, labels))
    if not examples:
        raise R1kitError(f"no training example has a response token within max_length={max_length}; raise max_length")
    return examples, truncated


def pack(examples: Sequence[Example], max_length: int) -> list[Example]:
    """Concatenate examples and cut into rows of exactly max_length tokens (the tail is dropped)."""
    ids: list[int] = []
    labels: list[int] = []
    for ex in examples:
        ids.extend(ex.input_ids)
        labels.extend(ex.labels)
    rows = [Example(ids[i : i + max_length], labels[i : i + max_length]) for i in range(0, len(ids) - max_length + 1, max_length)]
    return rows or [Example(ids, labels)]


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input_ids, attention_mask and labels [B, L]."""
    length = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), length), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), length), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def batches(examples: Sequence[Example], batch_size: int, seed: int) -> Iterator[list[Example]]:
    """Endless shuffled batches, reshuffled every epoch from `seed`."""
    rng = random.Random(seed)
    order = list(range(len(examples)))
    while True:
        rng.shuffle(order)
        for i in range(0, len(order) - batch_size + 1, batch_size):
            yield [examples[j] for j in order[i : i + batch_size]]
        if len(order) < batch_size:
            yield [examples[j] for j in order]


def token_loss_sum(model, batch: dict[str, torch.Tensor], chunked_head: bool = False) -> tuple[torch.Tensor, int]:
    """Sum of next-token cross-entropy over target tokens, and their count. With `chunked_head` the
    [B, L, V] logits are never built: the LM head scores the target positions' final hidden states
    a chunk at a time (`head_logprobs`)."""
    if chunked_head:
        with final_hidden_states(model) as kept:
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=1)
        targets = batch["labels"][:, 1:]
        scored = targets != IGNORE
        head = lm_head(model)
        logp, _ = head_logprobs(kept[-1][:, :-1][scored], head.weight, head.bias, targets[scored])
        return -logp.sum(), int(scored.sum())
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # [B, L, V]
    targets = batch["labels"][:, 1:]
    logits = logits[:, :-1]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=IGNORE, reduction="sum")
    return loss, int((targets != IGNORE).sum())


def train_supervised(
    model,
    examples: Sequence[Example],
    *,
    pad_id: int,
    steps: int,
    batch_size: int,
    grad_accum: int,
    optim: OptimArgs,
    logger: MetricLogger,
    seed: int = 0,
    precision: str = "auto",
    log_every: int = 1,
    eval_every: int = 0,
    on_eval: Callable[[int], dict[str, float]] | None = None,
    progress: bool = True,
    description: str = "train",
    chunked_head: bool = False,
) -> list[float]:
    """Train `model` for `steps` optimizer steps; returns the loss of every step. `chunked_head`:
    see `token_loss_sum`."""
    device = next(model.parameters()).device
    model.train()
    opt = build_optimizer(model.parameters(), optim)
    sched = build_scheduler(opt, optim, steps)
    stream = batches(examples, batch_size, seed)
    losses: list[float] = []
    with progress_bar(description, steps, progress) as bar:
        for step in range(1, steps + 1):
            t0 = time.perf_counter()
            micro = [collate(next(stream), pad_id) for _ in range(grad_accum)]
            n_tokens = sum(int((m["labels"][:, 1:] != IGNORE).sum()) for m in micro)
            total = 0.0
            for m in micro:
                m = {k: v.to(device) for k, v in m.items()}
                with autocast(device, precision):
                    loss_sum, _ = token_loss_sum(model, m, chunked_head)
                (loss_sum / n_tokens).backward()
                total += float(loss_sum.detach())
            grad_norm, lr = optimizer_step(model, opt, sched, optim.max_grad_norm)
            loss = total / n_tokens
            losses.append(loss)
            dt = time.perf_counter() - t0
            metrics: dict[str, Any] = {"loss/sft": loss, "grad_norm": grad_norm, "lr": lr, "perf/step_s": dt, "perf/tokens_per_s": n_tokens / dt}
            if on_eval is not None and eval_every and step % eval_every == 0 and step != steps:
                metrics.update({f"eval/{k}": v for k, v in on_eval(step).items()})
                model.train()
            if step % log_every == 0 or step == steps:
                logger.log(metrics, step)
            bar.advance(1, info=f"loss {loss:.3f}")
    if not progress:
        console.print(format_line(steps, {"loss/sft": losses[-1]}, ("loss/sft",)))
    return losses
