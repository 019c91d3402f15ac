"""Scalar-head models: a causal LM's backbone with a linear head giving one number per token.

Reward models and PPO's value model are both `AutoModelForSequenceClassification` with
`num_labels=1`, loaded from an ordinary causal-LM directory: transformers builds
`LlamaForSequenceClassification` / `Qwen2ForSequenceClassification` / ... from the causal LM's
weights (the backbone is shared by name; the `score` head is new). That is what TRL's reward and
value models are, and the saved directory loads anywhere with `AutoModelForSequenceClassification`.

transformers' own forward pools the score of the last token that is not `pad_token_id`. Here the
head is applied at every position instead (`token_scalars`) and pooled by the attention mask
(`last_token_scalar`), because

- the Christiano et al. (2017) reward loss and PPO's value model need a number per token, and
- pooling by the mask stays right when the pad token equals the eos token (Qwen), where pooling by
  pad id would skip a real eos.

Shapes: B rows, L tokens. Inputs may be left-padded, right-padded or both (a left-padded prompt
followed by a right-padded completion, as the rollout engine lays them out): position ids come
from the attention mask, as in `generate`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, PreTrainedModel
from transformers.utils import logging as hf_logging

from r1kit.algorithms import masked_sum, position_ids_from_mask
from r1kit.algorithms.logprobs import inner_model
from r1kit.errors import R1kitError
from r1kit.models.load import DTYPES, _check_exists, resolve_device


def load_scalar_model(path_or_id: str, pad_token_id: int | None, dtype: str = "float32", device: str = "auto") -> PreTrainedModel:
    """A `...ForSequenceClassification` with one output, from a causal-LM or reward-model directory.

    pad_token_id: set on the config when the checkpoint has none (transformers refuses batches
    without it); pass the tokenizer's.
    """
    _check_exists(path_or_id)
    if dtype != "auto" and dtype not in DTYPES:
        raise R1kitError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES) + ['auto']}")
    try:
        with _quiet_transformers():  # "score.weight newly initialised" is expected from a causal LM
            model = AutoModelForSequenceClassification.from_pretrained(
                path_or_id, num_labels=1, dtype="auto" if dtype == "auto" else DTYPES[dtype]
            )
    except OSError as e:
        raise R1kitError(f"could not load a model from {path_or_id!r} ({str(e).splitlines()[0]}); check the path or hub id") from None
    except ValueError as e:  # an architecture without a sequence-classification head
        raise R1kitError(
            f"{path_or_id!r} cannot be loaded as a scalar-head model ({str(e).splitlines()[0]}); "
            "use a model family with a ForSequenceClassification class (Llama, Qwen2, Mistral, GPT-2 ...)"
        ) from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = pad_token_id
    return model.to(resolve_device(device))


def token_scalars(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The head's output at every position.

    input_ids, attention_mask  # [B, L]
    Returns                    # [B, L] float32; values at padding are meaningless (mask them)

    A model wrapped in DDP or PEFT, or sharded by FSDP, is called through its own forward (DDP
    needs it to all-reduce the gradients; PEFT routes the head to its trained copy; FSDP gathers
    the embeddings and the head around the root's forward): the whole model runs, and the head's
    output at every position (which its forward computes before pooling) is taken from a hook.
    """
    from torch.distributed.fsdp import FSDPModule

    inner = inner_model(model)
    if inner is not model or isinstance(model, FSDPModule):
        kept: list[torch.Tensor] = []
        handle = _head(inner).register_forward_hook(lambda module, args, output: kept.append(output))
        try:
            model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask), use_cache=False)
        finally:
            handle.remove()
        return kept[-1].squeeze(-1).float()
    backbone = getattr(model, model.base_model_prefix)
    hidden = backbone(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    ).last_hidden_state  # [B, L, H]
    return _head(model)(hidden).squeeze(-1).float()


def last_token_scalar(scalars: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The value at each row's last real token (the sequence's reward).

    scalars, attention_mask  # [B, L]; rows may be left- or right-padded
    Returns                  # [B]
    """
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    last = (positions * (attention_mask != 0)).argmax(dim=1)  # rightmost position with mask 1
    return scalars.gather(1, last.unsqueeze(1)).squeeze(1)


POOLINGS = ("last", "sum")


def sequence_scalar(scalars: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor, pooling: str = "last") -> torch.Tensor:
    """One reward per sequence from per-token outputs.

    scalars, attention_mask  # [B, L]
    completion_mask          # [B, C], the completion is the last C columns
    pooling: "last" the value at the last real token (Bradley-Terry reward models, InstructGPT);
             "sum" the sum over completion tokens (Christiano et al. 2017: the return of the
             trajectory under per-step rewards).
    Returns                  # [B]
    """
    if pooling == "last":
        return last_token_scalar(scalars, attention_mask)
    if pooling == "sum":
        return masked_sum(scalars[:, -completion_mask.shape[1] :], completion_mask, dim=-1)
    raise R1kitError(f"unknown reward pooling {pooling!r}; choose one of {list(POOLINGS)}")


def save_scalar_model(model: PreTrainedModel, tokenizer, path: str | Path) -> Path:
    """Write the model and tokenizer as an HF directory (loads with AutoModelForSequenceClassification)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def _head(model: PreTrainedModel) -> torch.nn.Module:
    """The linear head of a ForSequenceClassification model (`score` in most families)."""
    for name in ("score", "classifier"):
        head = getattr(model, name, None)
        if isinstance(head, torch.nn.Module):
            return head
    raise R1kitError(f"{type(model).__name__} has no `score` head; use a decoder family such as Llama or Qwen2")


@contextlib.contextmanager
def _quiet_transformers():
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
