"""Log-softmax, entropy and LM-head log-probabilities computed a chunk of rows at a time.

Computing `log_softmax(logits)` in float32 materialises an [N, T, V] tensor (N rows x T tokens x
V ~ 150k vocabulary: gigabytes), and autograd keeps it alive until backward. The autograd
functions here walk over chunks of rows in forward and backward: each chunk is cast to float32,
divided by the sampling temperature, reduced with `logsumexp`, and dropped; backward recomputes
the chunk from the (model-dtype) logits it already holds and writes its gradient in place. Peak
extra memory is one chunk, whatever N is. `head_logprobs` goes one step further and never builds
the logits at all: it applies the LM head's weight to a chunk of final hidden states at a time
(the "fused linear cross-entropy" of Liger-Kernel). `r1kit.algorithms.logprobs` runs a model into
these.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

CHUNK_BYTES = 256 * 2**20
"""Default size of one float32 chunk of logits (256 MiB) when `chunk_rows` is not given."""


def selective_log_softmax(
    logits: torch.Tensor,
    index: torch.Tensor,
    temperature: float = 1.0,
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """log softmax(logits / temperature) at the chosen tokens, computed chunk by chunk over rows.

    logits  # [N, T, V] any float dtype (bf16 from the model is fine; maths is float32)
    index   # [N, T] long, the token whose log-prob is wanted at each position
    chunk_rows: rows per chunk; None picks as many as fit in `CHUNK_BYTES` of float32.
    Returns # [N, T] float32 (float64 if the logits are float64); differentiable w.r.t. logits.
    """
    rows = chunk_rows or default_chunk_rows(logits)
    return _SelectiveLogSoftmax.apply(logits, index, float(temperature), rows)


def entropy_from_logits(
    logits: torch.Tensor,
    temperature: float = 1.0,
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """Entropy H = -sum_v p_v log p_v of softmax(logits / temperature), chunk by chunk over rows.

    logits  # [N, T, V]
    Returns # [N, T] float32; differentiable (for an entropy bonus), with the same chunking.
    """
    rows = chunk_rows or default_chunk_rows(logits)
    return _Entropy.apply(logits, float(temperature), rows)


def head_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    index: torch.Tensor,
    temperature: float = 1.0,
    chunk_rows: int | None = None,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log softmax((hidden @ weight.T + bias) / temperature) at the chosen tokens, and with
    `with_entropy` the entropy, without ever holding more than a chunk of the logits.

    hidden  # [..., d] final hidden states (any float dtype)
    weight  # [V, d] the LM head; bias [V] or None
    index   # [...] long, the token whose log-prob is wanted at each position
    chunk_rows: positions per chunk; None picks as many as fit in `CHUNK_BYTES` of float32 logits.
    Returns (logp, entropy or None), both [...] float32 (float64 for float64 inputs); logp is
    differentiable w.r.t. hidden, weight and bias (logits recomputed chunk by chunk in backward),
    the entropy is not.

    The head runs in the autocast dtype when autocast is on (as the model's own head would), else in
    the weight's dtype; the softmax is float32, as in `selective_log_softmax`.
    """
    device_type = hidden.device.type
    dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else weight.dtype
    rows = chunk_rows or max(1, CHUNK_BYTES // (4 * weight.shape[0]))
    shape = index.shape
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])
    logp, entropy = _HeadLogprobs.apply(flat_hidden, weight, bias, index.reshape(-1), float(temperature), rows, dtype, with_entropy)
    return logp.view(shape), entropy.view(shape) if with_entropy else None


def default_chunk_rows(logits: torch.Tensor) -> int:
    """How many rows of `logits` [N, ...] fit in `CHUNK_BYTES` once cast to float32 (at least 1)."""
    bytes_per_row = max(1, logits[0].numel()) * 4
    return max(1, CHUNK_BYTES // bytes_per_row)


def row_chunks(n_rows: int, chunk_rows: int) -> Iterator[slice]:
    """Slices [0, k), [k, 2k), ... covering `n_rows` rows, k = `chunk_rows`."""
    for start in range(0, n_rows, chunk_rows):
        yield slice(start, min(start + chunk_rows, n_rows))


def _scaled(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """float32 (or float64) logits divided by the temperature, as the sampler computes them."""
    z = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return z / temperature if temperature != 1.0 else z


class _SelectiveLogSoftmax(torch.autograd.Function):
    """logp_t = z_t[index_t] - logsumexp(z_t), z = logits / T; d logp / dz = onehot - softmax(z)."""

    @staticmethod
    def forward(ctx, logits, index, temperature, chunk_rows):
        dtype = torch.promote_types(logits.dtype, torch.float32)
        logp = torch.empty(index.shape, dtype=dtype, device=logits.device)
        lse = torch.empty_like(logp)
        for rows in row_chunks(logits.shape[0], chunk_rows):
            z = _scaled(logits[rows], temperature)
            lse[rows] = torch.logsumexp(z, dim=-1)
            logp[rows] = z.gather(-1, index[rows].unsqueeze(-1)).squeeze(-1) - lse[rows]
        ctx.save_for_backward(logits, index, lse)
        ctx.temperature, ctx.chunk_rows = temperature, chunk_rows
        return logp

    @staticmethod
    def backward(ctx, grad_logp):
        logits, index, lse = ctx.saved_tensors
        grad = torch.empty_like(logits)
        dtype = lse.dtype
        for rows in row_chunks(logits.shape[0], ctx.chunk_rows):
            # One float32 chunk, worked on in place: the copy keeps float32 logits themselves intact.
            z = logits[rows].to(dtype, copy=True)
            if ctx.temperature != 1.0:
                z.div_(ctx.temperature)
            g = grad_logp[rows].unsqueeze(-1)  # [n, T, 1]
            gz = z.sub_(lse[rows].unsqueeze(-1)).exp_().mul_(-g)  # -softmax * g
            gz.scatter_add_(-1, index[rows].unsqueeze(-1), g)  # + onehot * g
            grad[rows] = gz.div_(ctx.temperature)
        return grad, None, None, None


class _Entropy(torch.autograd.Function):
    """H = logsumexp(z) - sum_v p_v z_v; dH/dz_v = -p_v (log p_v + H)."""

    @staticmethod
    def forward(ctx, logits, temperature, chunk_rows):
        dtype = torch.promote_types(logits.dtype, torch.float32)
        entropy = torch.empty(logits.shape[:-1], dtype=dtype, device=logits.device)
        lse = torch.empty_like(entropy)
        for rows in row_chunks(logits.shape[0], chunk_rows):
            z = _scaled(logits[rows], temperature)
            lse[rows] = torch.logsumexp(z, dim=-1)
            p = torch.exp(z - lse[rows].unsqueeze(-1))
            entropy[rows] = lse[rows] - (p * z).sum(-1)
        ctx.save_for_backward(logits, lse, entropy)
        ctx.temperature, ctx.chunk_rows = temperature, chunk_rows
        return entropy

    @staticmethod
    def backward(ctx, grad_entropy):
        logits, lse, entropy = ctx.saved_tensors
        grad = torch.empty_like(logits)
        for rows in row_chunks(logits.shape[0], ctx.chunk_rows):
            z = _scaled(logits[rows], ctx.temperature)
            log_p = z - lse[rows].unsqueeze(-1)
            gz = -torch.exp(log_p) * (log_p + entropy[rows].unsqueeze(-1))
            grad[rows] = gz.mul_(grad_entropy[rows].unsqueeze(-1)).div_(ctx.temperature)
        return grad, None, None


class _HeadLogprobs(torch.autograd.Function):
    """`head_logprobs` on flat [M, d] hidden states: logits z = (h W^T + b) / T one chunk of rows at a
    time; d logp / dz = onehot - softmax(z), then dh = dz W / T, dW = dz^T h / T, db = sum dz / T."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, index, temperature, chunk_rows, dtype, with_entropy):
        w = weight.to(dtype)
        b = None if bias is None else bias.to(dtype)
        M, exact = hidden.shape[0], torch.promote_types(dtype, torch.float32)
        logp = torch.empty(M, dtype=exact, device=hidden.device)
        lse = torch.empty_like(logp)
        entropy = torch.empty_like(logp) if with_entropy else logp.new_empty(0)
        for rows in row_chunks(M, chunk_rows):
            z = torch.nn.functional.linear(hidden[rows].to(dtype), w, b).to(exact)
            if temperature != 1.0:
                z.div_(temperature)
            lse[rows] = torch.logsumexp(z, dim=-1)
            logp[rows] = z.gather(-1, index[rows].unsqueeze(-1)).squeeze(-1) - lse[rows]
            if with_entropy:
                p = (z - lse[rows].unsqueeze(-1)).exp_()
                entropy[rows] = lse[rows] - torch.linalg.vecdot(p, z)
        ctx.save_for_backward(hidden, weight, bias, index, lse)
        ctx.temperature, ctx.chunk_rows, ctx.dtype = temperature, chunk_rows, dtype
        ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy):
        hidden, weight, bias, index, lse = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        dtype, temperature = ctx.dtype, ctx.temperature
        w = weight.to(dtype)
        b = None if bias is None else bias.to(dtype)
        grad_h = torch.empty_like(hidden) if need_h else None
        exact = lse.dtype
        grad_w = torch.zeros(weight.shape, dtype=exact, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=exact, device=bias.device) if need_b else None
        for rows in row_chunks(hidden.shape[0], ctx.chunk_rows):
            h = hidden[rows].to(dtype)
            z = torch.nn.functional.linear(h, w, b).to(exact)
            if temperature != 1.0:
                z.div_(temperature)
            g = grad_logp[rows].unsqueeze(-1)  # [m, 1]
            gz = z.sub_(lse[rows].unsqueeze(-1)).exp_().mul_(-g)  # -softmax * g
            gz.scatter_add_(-1, index[rows].unsqueeze(-1), g)  # + onehot * g
            if temperature != 1.0:
                gz.div_(temperature)
            if need_b:
                grad_b += gz.sum(0)
            gz = gz.to(dtype)
            if need_h:
                grad_h[rows] = gz @ w
            if need_w:
                if dtype == exact:
                    grad_w.addmm_(gz.t(), h)
                else:  # a low-precision product, accumulated in float32
                    grad_w += gz.t() @ h
        return (
            grad_h,
            None if grad_w is None else grad_w.to(weight.dtype),
            None if grad_b is None else grad_b.to(bias.dtype),
            None, None, None, None, None,
        )  # fmt: skip
