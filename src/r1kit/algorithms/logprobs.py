"""Per-token log-probabilities and entropies of a causal LM, without a full-vocabulary blow-up.

The learner needs log pi(y_t | y_<t) for every completion token, and often the entropy of the
distribution at each step. `completion_logprobs` runs the model and hands its logits to the
row-chunked log-softmax and entropy of `chunked.py`, so no [N, T, V] float32 tensor is ever built.

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
from r1kit.algorithms.chunked import entropy_from_logits, head_logprobs, selective_log_softmax

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
