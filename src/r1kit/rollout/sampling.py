"""Choosing the next token for a whole batch at once: temperature, top-k, top-p, greedy.

Everything is a torch op over the batch, so the per-token cost does not grow with the number of
rows. The log-prob returned for a token is taken under log_softmax(logits / temperature), before
top-k / top-p truncation: that is the distribution the learner can recompute from a forward pass,
which is what importance ratios and KL terms need.
"""

from __future__ import annotations

import torch

from r1kit.rollout.engine import SamplingParams


def sample_next(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per row.

    logits: [N, V] float32. Returns tokens [N] long and their log-probs [N] float32 under
    log_softmax(logits / temperature) (log_softmax(logits) when greedy).
    """
    if params.greedy:
        logp = torch.log_softmax(logits, dim=-1)
        tokens = logp.argmax(dim=-1)
    else:
        logp = torch.log_softmax(logits / params.temperature if params.temperature != 1.0 else logits, dim=-1)
        tokens = _draw(_truncate(logp, params.top_k, params.top_p), generator)
    return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)


def _truncate(logp: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """logp [N, V] with tokens outside the top-k and the top-p nucleus set to -inf."""
    if top_k and top_k < logp.shape[-1]:
        kth = logp.topk(top_k, dim=-1).values[:, -1:]  # [N, 1]
        logp = logp.masked_fill(logp < kth, float("-inf"))
    if top_p < 1.0:
        logp = logp.masked_fill(_outside_nucleus(logp, top_p), float("-inf"))
    return logp


def _outside_nucleus(logp: torch.Tensor, top_p: float) -> torch.Tensor:
    """[N, V] bool: True for tokens not in the smallest set whose probability reaches top_p."""
    sorted_logp, order = logp.sort(dim=-1, descending=True)
    # softmax, not exp: after top-k the remaining mass is renormalised, as in HF and vLLM.
    probs = sorted_logp.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # the most likely token has 0 before it: always kept
    drop_sorted = mass_before >= top_p
    return torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)


def _draw(logp: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """[N] long: one token per row drawn from softmax(logp) (logp [N, V], -inf allowed).

    The exponential race: argmax p_i / E_i with E_i ~ Exp(1) picks i with probability p_i (the
    Gumbel-max trick in another form). E = -log(U) from torch.rand, which on CPU is several times
    faster than Tensor.exponential_ and than torch.multinomial.
    """
    probs = logp.exp()  # unnormalised after truncation; argmax below does not care about scale
    race = torch.rand(probs.shape, generator=generator, device=probs.device).log_().neg_()
    return probs.div_(race).argmax(dim=-1)
