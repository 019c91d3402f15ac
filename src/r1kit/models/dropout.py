"""Dropout off, for the models reinforcement learning trains.

A policy gradient needs the learner to score a rollout as the rollout engine sampled it. The engine
samples in eval mode, without dropout, and the frozen reference is in eval mode too; a learner in
train mode with GPT-2's 0.1 dropout scores the same tokens under a randomly thinned network, so the
importance ratio of an unchanged policy is not 1 and the KL to the reference is not 0 at the first
step. TRL (`disable_dropout_in_model`) and verl train RL with dropout off for this reason.
"""

from __future__ import annotations

import torch


def disable_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """`model` with every dropout probability set to 0, in memory (its config, and so the saved
    model, keep theirs): `nn.Dropout` modules (GPT-2's, PEFT's lora_dropout) and the float
    `attention_dropout` of the attention layers that pass it to their kernel (Llama, Qwen2)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0
    return model
