"""SwiGLU MLPs that keep half their activations for backward.

A Llama-family MLP computes `down(silu(gate(x)) * up(x))`. Through autograd that saves four
[tokens, intermediate] tensors per layer for backward: gate(x) (for SiLU), silu(gate(x)) and up(x)
(for the product) and the product (for the down projection's weight gradient). Two of them are
cheap functions of the other two, so `lean_swiglu` has the MLP save gate(x) and up(x) only and
recompute silu(gate(x)) * up(x) in backward: a [tokens, intermediate] SiLU and product per layer
more, in exchange for half the MLP's saved activations (a GRPO step of a 13M-parameter Qwen2 with
128-token completions: peak memory down by a fifth, benchmarks/NOTES.md). The gradients are the same
numbers: backward recomputes the forward's own ops on the same inputs.

Served: transformers' Llama, Qwen2, Qwen3 and Mistral MLPs with a SiLU activation. When the down
projection is not a plain `nn.Linear` (a LoRA layer, say) or carries hooks, only SiLU's output is
dropped (the product is saved by the down projection itself); under `torch.no_grad` the MLP runs
as written. A down projection that `r1kit.accel` routed to another kernel library carries that
library's products as its `linear_kernels` attribute, and the fused backward uses them too.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from transformers import activations

# The MLP classes whose forward is exactly `down_proj(act_fn(gate_proj(x)) * up_proj(x))`.
MLP_CLASSES = ("LlamaMLP", "Qwen2MLP", "Qwen3MLP", "MistralMLP")
def _plain_product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    # Under autocast the projections' outputs are already in the autocast dtype and F.linear
    # casts weight and bias to it; without it, everything is in the weight's dtype.
    return F.linear(x, weight, bias)


PLAIN_KERNELS = (_plain_product, torch.matmul)
"""(x, W, b -> x W^T + b, grad, W -> grad W): a plain down projection's products."""

# What `ACT2FN["silu"]` builds, across transformers versions.
SILU_CLASSES = tuple(c for c in (torch.nn.SiLU, getattr(activations, "SiLUActivation", None)) if c is not None)


class _SiLUMul(torch.autograd.Function):
    """silu(gate) * up, saving gate and up (not silu(gate))."""

    @staticmethod
    def forward(ctx, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(gate, up)
        return F.silu(gate).mul_(up)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        gate, up = ctx.saved_tensors
        silu = F.silu(gate)
        grad_up = grad * silu
        return _silu_grad(grad * up, gate, out=silu), grad_up


class _SiLUMulDown(torch.autograd.Function):
    """linear(silu(gate) * up, weight, bias), saving gate and up (not silu(gate) nor the product)."""

    @staticmethod
    def forward(ctx, gate: torch.Tensor, up: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, kernels: tuple) -> torch.Tensor:
        ctx.save_for_backward(gate, up, weight)
        ctx.has_bias, ctx.input_grad = bias is not None, kernels[1]
        product, _ = kernels
        return product(F.silu(gate).mul_(up), weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        gate, up, weight = ctx.saved_tensors
        silu = F.silu(gate)
        rows = grad.reshape(-1, grad.shape[-1])
        grad_weight = grad_bias = None
        if ctx.needs_input_grad[3] and ctx.has_bias:
            grad_bias = rows.sum(0).to(weight.dtype)
        weight_ = weight.to(grad.dtype)
        grad_product = ctx.input_grad(grad, weight_)
        if ctx.needs_input_grad[2]:  # a frozen projection (LoRA elsewhere) skips the product and this matmul
            product = silu * up
            grad_weight = (rows.t() @ product.reshape(-1, product.shape[-1])).to(weight.dtype)
            # Three [tokens, intermediate] buffers in all: the gradients reuse silu's and the product's.
            grad_up = torch.mul(grad_product, silu, out=product)
        else:
            grad_up = grad_product * silu
        grad_gate = _silu_grad(grad_product.mul_(up), gate, out=silu)
        return grad_gate, grad_up, grad_weight, grad_bias, None


def _silu_grad(grad: torch.Tensor, gate: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """d silu(gate) / d gate times `grad`, written into `out`."""
    return torch.ops.aten.silu_backward.grad_input(grad, gate, grad_input=out)


def _plain_linear(module: torch.nn.Module) -> bool:
    return type(module) is torch.nn.Linear and not (module._forward_hooks or module._forward_pre_hooks or module._backward_hooks)


def _lean_forward(self: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The MLP's forward, bound to each served module (a bound method, so a deep copy of the model
    binds it to the copy)."""
    gate, up, down = self.gate_proj(x), self.up_proj(x), self.down_proj
    if not torch.is_grad_enabled():
        return down(F.silu(gate) * up)
    if _plain_linear(down):
        return _SiLUMulDown.apply(gate, up, down.weight, down.bias, getattr(down, "linear_kernels", PLAIN_KERNELS))
    return down(_SiLUMul.apply(gate, up))


def servable(module: torch.nn.Module) -> bool:
    """Whether `module` is a SwiGLU MLP this module knows: one of MLP_CLASSES with a SiLU activation
    and a forward nobody replaced."""
    return (
        type(module).__name__ in MLP_CLASSES
        and type(getattr(module, "act_fn", None)) in SILU_CLASSES
        and "forward" not in vars(module)
        and all(hasattr(module, name) for name in ("gate_proj", "up_proj", "down_proj"))
    )


def lean_swiglu(model: torch.nn.Module) -> int:
    """Give every servable SwiGLU MLP in `model` the lean forward (see the module docstring);
    returns how many were changed (0 for a model without such MLPs, which is left as it was)."""
    mlps = [m for m in model.modules() if servable(m)]
    for mlp in mlps:
        mlp.forward = types.MethodType(_lean_forward, mlp)
    return len(mlps)
