"""Frozen models beside the one being trained: the KL reference of GRPO and PPO, the teacher of
distillation.

A frozen model is in eval mode and its parameters need no gradient. The reference starts as the
policy's starting weights: a copy of them (`frozen_copy`), or, under LoRA, no copy at all: the
policy with its adapters disabled is exactly the base (`AdapterDisabledReference`). A resumed run
reloads it (`load_frozen`) from model.path, or from the checkpoint when the recipe changed it
(GRPO's reference reset).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from r1kit import accel
from r1kit.config import ModelArgs
from r1kit.models.load import load_model
from r1kit.models.lora import AdapterDisabledReference, is_peft_model


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """`model` in eval mode with every parameter's requires_grad off."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen deep copy of `model` as it is now."""
    return freeze(copy.deepcopy(model))


def load_frozen(args: ModelArgs, path: str | Path | None = None, device: str | torch.device | None = None) -> torch.nn.Module:
    """The causal LM at `path` (default args.path) in args.dtype on `device` (default
    args.device), frozen, its weights in memory of their own (as a copy's are: `own_memory`)."""
    from r1kit.train.run import own_memory

    return own_memory(freeze(load_model(str(path or args.path), args.dtype, str(device or args.device), args.attn_implementation)))


def reference_model(policy: torch.nn.Module, args: ModelArgs, checkpoint: Path | None = None):
    """The reference of `policy` (a callable model): the policy with its adapters disabled under
    LoRA; else a frozen copy of the starting policy, or on resume (`checkpoint`) the checkpoint's
    `ref/` when the run saved one, otherwise args.path reloaded."""
    if is_peft_model(policy):
        return AdapterDisabledReference(policy)
    if checkpoint is None:
        return frozen_copy(policy)
    saved = checkpoint / "ref"
    device = next(policy.parameters()).device
    return accel.apply(load_frozen(args, saved if saved.is_dir() else None, device), device, accel.current())  # routed as a copy of the policy is
