"""Per-token log-probabilities and entropies of a causal LM, without a full-vocabulary blow-up.

The learner needs log pi(y_t | y_<t) for every completion token, and often the entropy of the
distribution at each step. Computing `log_softmax(logits)` in float32 materialises an [N, T, V]
tensor (N rows x T tokens x V ~ 150k vocabulary: gigabytes), and autograd keeps it alive until
backward. Here both forward and backward walk over chunks of rows: each chunk is cast to float32,
divided by the sampling temperature, reduced with `logsumexp`, and dropped; backward recomputes the
chunk from the (model-dtype) logits it already holds and writes its gradient in place. Peak extra
memory is one chunk, whatever N is.

The logits themselves are [N, T, V] in the model's dtype, and their gradient as large again. With
`chunked_head=True` they are never built either: the model's LM head is skipped (`logits_to_keep=1`),
its final hidden states [N, T, d] are taken instead, and `head_logprobs` applies the head's weight
to a chunk of tokens at a time, recomputing each chunk's logits in backward (the "fused linear
cross-entropy" of Liger-Kernel). It costs one more LM-head matmul in backward.

Temperature: the sampler draws from softmax(logits / temperature) computed in float32 (that is what
`transformers`' `generate` does), so the learner must score tokens the same way or the
importance ratio pi/pi_old is off even for identical weights.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from r1kit.algorithms.cache_argument import cache_argument, returned_cache

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


LOGIT_TRANSFORMS = {
    "final_logit_softcapping": None,  # Gemma 2 / 3: cap * tanh(logits / cap)
    "softcap": None,
    "logit_scale": 1.0,  # Cohere
    "logits_scaling": 1.0,  # Granite
    "output_multiplier": 1.0,
    "lm_head_multiplier": 1.0,  # Falcon-H1
}
"""Config attributes with which transformers models transform their logits after the LM head, and
the value at which each is the identity; `chunked_head_problem` refuses any other value."""


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


def lm_head(model: torch.nn.Module) -> torch.nn.Module | None:
    """The LM head (output embeddings) of a causal LM, looking through PEFT and DDP wrappers."""
    inner = inner_model(model)
    return inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None


def chunked_head_problem(model: torch.nn.Module) -> str | None:
    """Why `completion_logprobs(chunked_head=True)` cannot serve `model`, or None when it can.

    A model whose config caps or scales its logits (`LOGIT_TRANSFORMS`) is refused; and, checked
    rather than assumed, a 4-token forward's logits must equal the LM head applied to the final
    hidden state (a transform the list misses shows there, unless it is near the identity on small
    logits, as a cap of 30 is).
    """
    inner, head = inner_model(model), lm_head(model)
    if type(head) is not torch.nn.Linear:
        return f"its output layer is {type(head).__name__}, not a plain linear LM head (LoRA on the LM head is not served)"
    for config in (getattr(inner, "config", None), getattr(getattr(inner, "config", None), "text_config", None)):
        for name, identity in LOGIT_TRANSFORMS.items():
            value = getattr(config, name, None)
            if value is not None and value != identity:
                return f"its config sets {name}={value}, so its logits are not its LM head applied to the final hidden state"
    if "logits_to_keep" not in _forward_parameters(model) or inner.base_model is inner:
        return "its forward takes no logits_to_keep or has no separate decoder"
    ids = torch.arange(4, device=head.weight.device).remainder(head.weight.shape[0]).unsqueeze(0)
    was_training = model.training
    model.eval()  # no dropout: the check draws no random numbers
    try:
        with torch.no_grad(), final_hidden_states(model) as kept:
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    finally:
        model.train(was_training)
    if len(kept) != 1 or kept[0].shape[:2] != ids.shape:
        return "its decoder's output is not one final hidden state per token"
    own = head(kept[0])
    if not torch.allclose(own.float(), logits.float(), rtol=1e-3, atol=1e-3 * float(logits.abs().max()) + 1e-5):
        return "its logits are not its LM head applied to the final hidden state (capped or scaled logits)"
    return None


def completion_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    logits_to_keep: int,
    temperature: float = 1.0,
    chunk_rows: int | None = None,
    with_entropy: bool = False,
    share_prompts: bool = True,
    chunked_head: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Log-probs (and entropies) of the last `logits_to_keep` tokens of each row under `model`.

    input_ids       # [N, L] prompt + completion, prompts left-padded, completions right-padded
    attention_mask  # [N, L] 1 on real tokens
    Returns logp    # [N, logits_to_keep], or (logp, entropy) both [N, logits_to_keep]

    The model is any Hugging Face causal LM (also behind PEFT or DDP wrappers). The logits at
    position t predict token t+1, so the last token is never run and the LM head sees only the
    `logits_to_keep` positions that predict completion tokens (when the model's forward accepts
    `logits_to_keep`, which skips the LM head on the prompt). Position ids are derived from the
    attention mask exactly as `generate` derives them (cumsum - 1), so a left-padded prompt is
    scored at the positions it was sampled at.

    share_prompts: when rows repeat a prompt (the first L - logits_to_keep columns; a GRPO group's
    G samples, DPO's chosen and rejected), run each distinct prompt once and continue every row from
    a copy of its key/value cache, as the rollout engine does (see `shared_prompt_logits`). Same
    log-probs and gradients up to float rounding, less work; models that cannot (no KV cache in
    their forward, gradient checkpointing on) take the plain single forward.

    chunked_head: never build the [N, logits_to_keep, V] logits: take the final hidden states and
    apply the LM head chunk by chunk (`head_logprobs`). For models whose logits are their LM head
    applied to the last hidden state (`chunked_head_problem` says why not otherwise). The entropy is
    then not differentiable (it is for logging).
    """
    if not 0 < logits_to_keep < input_ids.shape[1]:
        raise ValueError(f"logits_to_keep={logits_to_keep} must be in [1, {input_ids.shape[1] - 1}]")
    k = logits_to_keep
    parts = shared_prompt_logits(model, input_ids, attention_mask, k, hidden=chunked_head) if share_prompts else None
    if parts is None:
        parts = [(_completion_logits(model, input_ids, attention_mask, k, hidden=chunked_head), input_ids[:, -k:])]
    if chunked_head:
        head = lm_head(model)
        scored = [head_logprobs(h, head.weight, head.bias, targets, temperature, chunk_rows, with_entropy) for h, targets in parts]
        logp = torch.cat([lp for lp, _ in scored], dim=1)
        return (logp, torch.cat([e for _, e in scored], dim=1)) if with_entropy else logp
    logp = torch.cat([selective_log_softmax(logits, targets, temperature, chunk_rows) for logits, targets in parts], dim=1)
    if not with_entropy:
        return logp
    return logp, torch.cat([entropy_from_logits(logits, temperature, chunk_rows) for logits, _ in parts], dim=1)


def _completion_logits(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, k: int, hidden: bool = False) -> torch.Tensor:
    """Logits [N, k, V] that predict the last k tokens, from one forward over all but the last token
    (with `hidden`, the final hidden states [N, k, d] instead)."""
    accepted = _forward_parameters(model)
    kwargs: dict = {"input_ids": input_ids[:, :-1], "attention_mask": attention_mask[:, :-1]}
    if "position_ids" in accepted:
        kwargs["position_ids"] = position_ids_from_mask(attention_mask)[:, :-1]
    if "use_cache" in accepted:
        kwargs["use_cache"] = False
    return _last_positions(model, k, hidden, **kwargs)[1]


def _last_positions(model: torch.nn.Module, k: int, hidden: bool, **kwargs) -> tuple:
    """(the model's output, its logits at the last k positions [N, k, V]); with `hidden`, the final
    hidden states there [N, k, d] instead, the LM head run on one position only."""
    if hidden:
        with final_hidden_states(model) as kept:
            out = model(**kwargs, logits_to_keep=1)
        return out, kept[-1][:, -k:]
    if "logits_to_keep" in _forward_parameters(model):
        kwargs["logits_to_keep"] = k
    out = model(**kwargs)
    return out, out.logits[:, -k:]


@contextmanager
def final_hidden_states(model: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    """Inside, every forward of `model` appends its final hidden state [N, T, d] (the decoder's
    output, after the final norm: what the LM head is applied to) to the yielded list."""
    kept: list[torch.Tensor] = []

    def keep(module, args, output):
        kept.append(output[0] if isinstance(output, tuple) else output.last_hidden_state)

    handle = inner_model(model).base_model.register_forward_hook(keep)
    try:
        yield kept
    finally:
        handle.remove()


def shared_prompt_logits(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, k: int, hidden: bool = False
) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """Completion logits with each distinct prompt run once, or None where that does not apply.

    The prompt is the first P = L - k columns (ids and mask). The U distinct prompts go through the
    model once (U rows, not N) with a KV cache; the cache's rows are then indexed out to the N rows
    (a differentiable gather: gradients of every row flow back into its prompt's single forward)
    and the completions continue from it. With B prompts x G samples this runs the prompt part on B
    rows instead of B x G, forward and backward.

    Returns [(logits [N, 1, V], targets [N, 1]), (logits [N, k-1, V], targets [N, k-1])] (the second
    part absent when k = 1), the logits predicting the first completion token and the rest (with
    `hidden`, the final hidden states [N, ., d] in their place); None
    when no prompt repeats, the model's forward takes no KV cache or position ids, it has
    gradient checkpointing on (its forward then refuses a cache while training), or its layers are
    compiled (`model.compile`: a cache through compiled layers recompiles them layer by layer).
    """
    accepted = _forward_parameters(model)
    cache_name = cache_argument(accepted)
    if cache_name is None or not {"use_cache", "position_ids"} <= accepted:
        return None
    inner = inner_model(model)
    if (inner.training and _checkpointing(inner)) or _compiled(inner):
        return None
    N, L = input_ids.shape
    P = L - k
    prompts = torch.cat([input_ids[:, :P], attention_mask[:, :P].to(input_ids.dtype)], dim=1)
    distinct, row_prompt = torch.unique(prompts, dim=0, return_inverse=True)  # row_prompt [N]: index into distinct
    if distinct.shape[0] == N:
        return None
    first = row_prompt.new_full((distinct.shape[0],), N).scatter_reduce_(0, row_prompt, torch.arange(N, device=input_ids.device), "amin")
    positions = position_ids_from_mask(attention_mask)
    head, last = _last_positions(
        model, 1, hidden, input_ids=input_ids[first, :P], attention_mask=attention_mask[first, :P], position_ids=positions[first, :P], use_cache=True
    )
    cache = returned_cache(head)
    if k > 1 and not hasattr(cache, "batch_select_indices"):
        return None  # a legacy tuple cache (old transformers): the plain forward instead
    parts = [(last[row_prompt], input_ids[:, P : P + 1])]
    if k > 1:
        cache.batch_select_indices(row_prompt)  # [U, ...] -> [N, ...]: each row gets its prompt's keys and values
        _, rest = _last_positions(
            model, k - 1, hidden,
            input_ids=input_ids[:, P:-1], attention_mask=attention_mask[:, :-1], position_ids=positions[:, P:-1], use_cache=True, **{cache_name: cache},
        )  # fmt: skip
        parts.append((rest, input_ids[:, P + 1 :]))
    return parts


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids as `generate` makes them: count of real tokens so far minus 1, 0 on padding.

    attention_mask  # [N, L]
    Returns         # [N, L] long
    """
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 0)


def inner_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model behind PEFT and DDP wrappers."""
    inner = model
    while True:
        if hasattr(inner, "get_base_model"):
            inner = inner.get_base_model()
        elif isinstance(getattr(inner, "module", None), torch.nn.Module):
            inner = inner.module
        else:
            return inner


def _checkpointing(model: torch.nn.Module) -> bool:
    """Whether a transformers model has activation (gradient) checkpointing on."""
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):  # the first from transformers 5
        if hasattr(type(model), name):
            return bool(getattr(model, name))
    return False


def _compiled(model: torch.nn.Module) -> bool:
    """Whether any module of `model` was compiled in place (`nn.Module.compile`, as
    `model.compile` compiles the decoder layers)."""
    return any(getattr(m, "_compiled_call_impl", None) is not None for m in model.modules())


def _forward_parameters(model: torch.nn.Module) -> set[str]:
    """Names the innermost model's forward accepts (looking through PEFT and DDP wrappers)."""
    return set(inspect.signature(inner_model(model).forward).parameters)


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
