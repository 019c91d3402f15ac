"""A value model for the search, trained on rollout outcomes as AlphaZero trains v(s) on game results.

Every prefix on the way to a verified solution (the search's nodes, then the finished text) is an
example whose target is that solution's verdict, 1 or 0: the model learns the probability that a
prefix ends in a correct answer. It is a scalar-head model (`r1kit.models.value_head`, the same
kind as PPO's value model and the reward models); its logit at a prefix's last token, through a
sigmoid, is the value.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from r1kit.models.value_head import last_token_scalar, token_scalars
from r1kit.search.mcts import SearchResult


def value_examples(prompt_ids: Sequence[int], result: SearchResult) -> list[tuple[list[int], float]]:
    """(prompt-and-prefix token ids, outcome) for each prefix on the way to each verified solution:
    the prompt alone, every node on the solution's path, and the whole solution."""
    out: list[tuple[list[int], float]] = []
    for s in result.solutions:
        if not s.verified:
            continue
        prefixes = [[]] + [n.tokens() for n in s.node.path()]
        if prefixes[-1] != s.tokens:
            prefixes.append(s.tokens)
        out.extend((list(prompt_ids) + p, s.value) for p in prefixes)
    return out


def pad_right(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask), each [B, L]: the rows right-padded to the longest."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def value_logits(model, rows: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    """[B] the value head's logit at each row's last token."""
    device = next(model.parameters()).device
    ids, mask = pad_right(rows, pad_id)
    ids, mask = ids.to(device), mask.to(device)
    return last_token_scalar(token_scalars(model, ids, mask), mask)


def value_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of sigmoid(logits) [B] against outcomes in [0, 1] [B], averaged."""
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))


def train_value_step(model, optimizer: torch.optim.Optimizer, batch: Sequence[tuple[list[int], float]], pad_id: int) -> float:
    """One optimizer step of the value model on (ids, outcome) examples; returns the loss."""
    model.train()
    logits = value_logits(model, [ids for ids, _ in batch], pad_id)
    loss = value_loss(logits, torch.tensor([t for _, t in batch], device=logits.device))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


class ValueModel:
    """`ids -> value`: sigmoid of the head's logit at the last token, for `LMStepModel(value=...)`."""

    def __init__(self, model, pad_id: int):
        self.model, self.pad_id = model, pad_id

    @torch.inference_mode()
    def __call__(self, ids: list[int]) -> float:
        self.model.eval()
        return float(torch.sigmoid(value_logits(self.model, [ids], self.pad_id))[0])
