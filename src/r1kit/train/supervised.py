"""Supervised next-token training shared by pretraining, cold-start SFT and SFT distillation.

Examples are (prompt, response) pairs. With `completion_only` the loss covers only response tokens
(prompt labels are -100), as cold-start SFT on chain-of-thought data wants. Batches are either
right-padded per example or packed: examples concatenated into rows of exactly `max_length` tokens
(attention crosses example boundaries, as in GPT-style packing; the labels still mask prompts).

The loss of a step is the sum of token losses over all micro-batches divided by the number of
target tokens in the whole step, so grad accumulation 1×8 and 8×1 give the same gradient; under
torchrun every rank takes its share of each micro-batch and divides by the tokens of all ranks'
shares (times the number of ranks, since DDP averages), so K ranks give the one-process gradient.

`fit_supervised` is the training loop, inside a run's skeleton (r1kit/train/run.py): resumable,
interruptible, data-parallel under torchrun.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from r1kit.algorithms.logprobs import final_hidden_states, head_logprobs, lm_head
from r1kit.config import OptimArgs
from r1kit.data.stream import BatchStream
from r1kit.errors import R1kitError
from r1kit.train import distributed as dist_
from r1kit.train.distributed import SINGLE, Dist, rank_slice
from r1kit.train.microbatch import backward_pieces
from r1kit.train.optim import optimizer_step
from r1kit.train.precision import autocast

IGNORE = -100


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    row: int = -1
    """The index of the (prompt, response) pair it was made from; -1 for a packed row."""


def tokenize_examples(
    tokenizer,
    pairs: Sequence[tuple[str, str]],
    max_length: int,
    completion_only: bool = True,
    add_eos: bool = True,
) -> tuple[list[Example], int]:
    """Token ids and labels for (prompt, response) pairs; returns (examples, number truncated)."""
    return tokenize_segments(tokenizer, [[(p, False), (r, True)] for p, r in pairs], max_length, completion_only, add_eos)


def tokenize_segments(
    tokenizer,
    examples: Sequence[Sequence[tuple[str, bool]]],
    max_length: int,
    completion_only: bool = True,
    add_eos: bool = True,
) -> tuple[list[Example], int]:
    """Token ids and labels for examples given as [(text, trainable), ...] segments (a prompt and
    a response, or a conversation's turns: `r1kit.data.chat`); returns (examples, number truncated).

    Each segment is tokenized on its own, so a token never straddles a segment boundary. With
    `completion_only` only trainable segments carry labels. `add_eos` ends the example with the
    eos token unless its last trainable segment already holds it (a chat template's end of turn).
    """
    out, truncated = [], 0
    for row, segments in enumerate(examples):
        ids: list[int] = []
        labels: list[int] = []
        last: list[int] = []
        for text, trainable in segments:
            piece = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
            ids += piece
            labels += piece if trainable or not completion_only else [IGNORE] * len(piece)
            last = piece if trainable else last
        if add_eos and tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in last:
            ids, labels = ids + [tokenizer.eos_token_id], labels + [tokenizer.eos_token_id]
        if len(ids) > max_length:
            truncated += 1
            ids, labels = ids[:max_length], labels[:max_length]
        if any(l != IGNORE for l in labels[1:]):
            out.append(Example(ids, labels, row))
    if not out:
        raise R1kitError(f"no training example has a response token within max_length={max_length}; raise max_length")
    return out, truncated


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


def fit_supervised(
    run,
    model: torch.nn.Module,
    examples: Sequence[Example],
    *,
    steps: int,
    batch_size: int,
    grad_accum: int,
    optim: OptimArgs,
    precision: str = "auto",
    chunked_head: bool = False,
    evaluate: Callable[[], dict[str, float]] | None = None,
    loss_key: str = "loss/sft",
) -> None:
    """`steps` optimizer steps of `model` on `examples` in `run` (a `r1kit.train.run.Run`), each
    over grad_accum micro-batches of batch_size examples. Logs `loss_key` (the step's mean token
    loss), and keeps the first and the last in run.results (`loss_first`, `loss_last`)."""
    learner = run.learner(model)
    opt, sched = run.optimizer(model.parameters(), optim, steps)
    stream = BatchStream(len(examples), batch_size, run.config.run.seed)
    run.track(stream=stream)
    pad = run.tokenizer.pad_token_id
    model.train()
    with run.loop(steps, evaluate=evaluate, model=model, line_keys=(loss_key,)) as loop:
        for step in loop:
            micro = [collate([examples[i] for i in rank_slice(stream.take(), run.dist, "batch_size")], pad) for _ in range(grad_accum)]
            with loop.guard:
                loss, tokens, finite = supervised_backward(learner, micro, run.dist, precision, chunked_head)
                grad_norm, lr = optimizer_step(learner, opt, sched, optim.max_grad_norm, finite)
                run.results.setdefault("loss_first", loss)
                run.results["loss_last"] = loss
                loop.end_step(step, {loss_key: loss, "grad_norm": grad_norm, "lr": lr}, tokens=tokens)


def supervised_backward(learner, micro: Sequence[dict[str, torch.Tensor]], dist: Dist = SINGLE, precision: str = "auto", chunked_head: bool = False) -> tuple[float, int, bool]:
    """Back-propagate one step's loss (token losses summed over the micro-batches, over the step's
    target tokens on every rank); returns (that loss, this rank's target tokens, whether every
    micro-batch's loss was finite)."""
    device = next(learner.parameters()).device
    tokens = sum(int((m["labels"][:, 1:] != IGNORE).sum()) for m in micro)
    per_rank = dist_.sum_float(tokens, dist) / dist.world_size  # DDP averages over ranks: divide by T / K
    total = 0.0

    def loss_of(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        nonlocal total
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(device, precision):
            loss_sum, _ = token_loss_sum(learner, batch, chunked_head)
        total += float(loss_sum.detach())
        return loss_sum / per_rank

    finite = backward_pieces(learner, micro, loss_of, dist)
    return dist_.sum_float(total, dist) / (per_rank * dist.world_size), tokens, finite
