"""Mixed precision shared by every recipe: bf16 autocast over fp32 weights, chosen by `precision`
(`auto` = bf16 on a CUDA device that supports it, `fp32`, `bf16`)."""

from __future__ import annotations

import contextlib

import torch


def uses_bf16(device: torch.device, precision: str) -> bool:
    """Whether `precision` means bf16 autocast on `device`: bf16, or auto on a CUDA device with bf16."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())


def autocast(device: torch.device, precision: str):
    """bf16 autocast on devices that support it when precision is bf16 (or auto on CUDA)."""
    if uses_bf16(device, precision):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
