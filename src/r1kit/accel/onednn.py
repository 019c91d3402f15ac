"""Large float32 linear layers through oneDNN on x86 CPUs.

PyTorch's float32 `F.linear` on a CPU calls MKL's sgemm. The oneDNN library that ships inside
PyTorch runs the same products faster on some CPUs once the weight is reordered into its blocked
layout (measured on an AVX-512 AMD EPYC for the learner's products of a 13M-parameter Qwen2,
including the reorder: docs/BENCHMARKS.md. For small products oneDNN's
per-call cost wins over its kernels, so only products over `MIN_ROWS` rows with both weight
dimensions at least `MIN_FEATURES` take this path; everything else is `F.linear` as before.

`onednn_linears(model)` (called by `r1kit.accel.apply` on CPU models) gives every plain `nn.Linear`
of a model a forward that does this, with its own backward: the input gradient (grad @ W) through
oneDNN on the transposed weight, the weight gradient (grad^T @ x) through MKL, which was the faster
of the two for it. Weights are reordered at every call, so a weight the optimizer has just updated
is always the one used. Float32 outside autocast only (bf16 autocast keeps `F.linear`, whose
products autocast casts); same sums in another order, so outputs differ from MKL's by float
rounding. A served layer also carries `KERNELS` as its `linear_kernels` attribute, through which a
module that computes the layer's product itself (the lean SwiGLU MLP, `r1kit.models.swiglu`) takes
the same route.
"""

from __future__ import annotations

import functools
import platform
import types

import torch
import torch.nn.functional as F

MIN_ROWS = 2048
"""Fewest rows (tokens) of a product that goes through oneDNN."""
MIN_FEATURES = 128
"""Fewest input and output features of a weight whose products go through oneDNN."""

_MARK = "_r1kit_onednn"


@functools.cache
def onednn_available() -> bool:
    """Whether this torch has oneDNN's packed linear and runs on x86-64, the only CPUs it was
    measured on (elsewhere oneDNN may sit on another backend, Arm's Compute Library say)."""
    if platform.machine().lower() not in ("x86_64", "amd64") or not torch.backends.mkldnn.is_available():
        return False
    try:
        weight = torch.ones(2, 3)
        packed = torch.ops.mkldnn._reorder_linear_weight(weight, 1)
        out = torch.ops.mkldnn._linear_pointwise(torch.ones(1, 3), packed, None, "none", [], "")
    except (AttributeError, RuntimeError, NotImplementedError):  # a build without these ops
        return False
    return bool(torch.equal(out, torch.full((1, 2), 3.0)))


def worth_it(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether x @ weight^T (weight [out, in]) goes through oneDNN: a CPU float32 product outside
    autocast, large enough (module docstring), on a torch and CPU that have it."""
    return (
        x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and weight.dim() == 2
        and min(weight.shape) >= MIN_FEATURES
        and x.numel() >= MIN_ROWS * x.shape[-1]
        and not torch.is_autocast_enabled("cpu")
        and onednn_available()
    )


def product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weight^T + bias through oneDNN, no autograd: x [..., in], weight [out, in] -> [..., out]."""
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), rows.shape[0])
    out = torch.ops.mkldnn._linear_pointwise(rows, packed, None if bias is None else bias.contiguous(), "none", [], "")
    return out.view(*x.shape[:-1], weight.shape[0])


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear(x, weight, bias)`, through oneDNN when `worth_it` (differentiable either way)."""
    if worth_it(x, weight):
        return _Linear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


def input_grad(grad: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """grad @ weight (the input gradient of a linear layer): grad [..., out], weight [out, in]."""
    if worth_it(grad, weight):
        return product(grad, weight.t())
    return grad @ weight


class _Linear(torch.autograd.Function):
    """y = x W^T + b through oneDNN; dx = dy W through oneDNN, dW = dy^T x and db through MKL."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        # As autograd does for F.linear: x only for a weight gradient, the weight only for x's.
        ctx.save_for_backward(x if ctx.needs_input_grad[1] else None, weight if ctx.needs_input_grad[0] else None)
        ctx.has_bias = bias is not None
        return product(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        rows = grad.reshape(-1, grad.shape[-1])
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = input_grad(grad, weight)
        if ctx.needs_input_grad[1]:
            grad_weight = rows.t() @ x.reshape(-1, x.shape[-1])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = rows.sum(0)
        return grad_x, grad_weight, grad_bias


KERNELS = (linear, input_grad)
"""(x, W, b -> x W^T + b, grad, W -> grad W) through oneDNN where worth it: what a served layer
hands a module that computes its product itself (module docstring)."""


def _forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """The forward `onednn_linears` binds to each served layer (a bound method, so a deep copy of
    the model, as the GRPO reference is, binds it to the copy)."""
    return linear(x, self.weight, self.bias)


def routes(module: torch.nn.Module) -> bool:
    """Whether `module` is a linear layer `onednn_linears` served."""
    return bool(getattr(module, _MARK, False))


def onednn_linears(model: torch.nn.Module) -> int:
    """Give every plain `nn.Linear` of `model` (its own forward, no hooks) the routing forward
    (module docstring); returns how many (0 where oneDNN is not available: the model is left
    as it was)."""
    if not onednn_available():
        return 0
    served = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear and "forward" not in vars(module):
            module.forward = types.MethodType(_forward, module)
            module.linear_kernels = KERNELS
            setattr(module, _MARK, True)
            served += 1
    return served
