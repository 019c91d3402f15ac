"""Linear layers through oneDNN (`accel.apply`, run.accel=auto): the same outputs and gradients as
`F.linear` to float rounding, taken only for large float32 products, and really taken there."""

import copy

import pytest
import torch
import torch.nn.functional as F
from rounding import gradient_atol
from torch.profiler import ProfilerActivity, profile
from transformers import Qwen2Config, Qwen2ForCausalLM

from r1kit.config import ModelArgs
from r1kit import accel
from r1kit.accel import onednn
from r1kit.models.load import training_options

pytestmark = [pytest.mark.numerics, pytest.mark.skipif(not onednn.onednn_available(), reason="this torch or CPU has no oneDNN linear")]

ROWS = onednn.MIN_ROWS


def onednn_calls(fn) -> int:
    """How many times calling `fn` ran oneDNN's linear kernel."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(event.name == "mkldnn::_linear_pointwise" for event in prof.events())


def ran_onednn(fn) -> bool:
    return onednn_calls(fn) > 0


def grads(fn, *tensors):
    tensors = [t.detach().clone().requires_grad_(True) if t is not None else None for t in tensors]
    out = fn(*tensors)
    out.square().sum().backward()
    return out.detach(), [t.grad for t in tensors if t is not None]


@pytest.mark.parametrize("bias", [True, False])
def test_linear_equals_f_linear_in_values_and_gradients(bias):
    torch.manual_seed(0)
    x = torch.randn(4, ROWS // 4, 160)  # 3-D input, as a model's hidden states
    weight, b = torch.randn(192, 160) * 0.1, torch.randn(192) if bias else None
    assert onednn.worth_it(x, weight)
    want, want_grads = grads(F.linear, x, weight, b)
    got, got_grads = grads(onednn.linear, x, weight, b)
    assert got.shape == want.shape == (4, ROWS // 4, 192)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert len(got_grads) == len(want_grads) == (3 if bias else 2)
    for g, w in zip(got_grads, want_grads):
        # Sums over the rows (weight, bias) or the outputs (input) in another order: a near-zero
        # element is off by the rounding of its large terms, so the tolerance is relative to the
        # gradient's largest element (rounding.py); a fixed 1e-4 was 90% used under MKL_CBWR=COMPATIBLE.
        torch.testing.assert_close(g, w, rtol=0, atol=gradient_atol(w))
    assert ran_onednn(lambda: onednn.linear(x, weight, b))


def test_small_bf16_and_autocast_products_stay_with_f_linear():
    x, weight = torch.randn(ROWS, 160), torch.randn(192, 160)
    assert not onednn.worth_it(x[: ROWS - 1], weight)  # too few rows
    assert not onednn.worth_it(torch.randn(ROWS, 64), torch.randn(192, 64))  # too few input features
    assert not onednn.worth_it(x, torch.randn(64, 160))  # too few output features
    assert not onednn.worth_it(x.bfloat16(), weight.bfloat16())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not onednn.worth_it(x, weight)
        out = onednn.linear(x, weight)
    assert out.dtype == torch.bfloat16  # autocast's product, as F.linear gives it
    assert not ran_onednn(lambda: onednn.linear(x[:100], weight))


def tiny_qwen2() -> Qwen2ForCausalLM:
    config = Qwen2Config(vocab_size=61, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config)


def forward_backward(model, ids):
    model.zero_grad(set_to_none=True)
    logits = model(ids).logits
    logits.square().mean().backward()
    return logits.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("lean_mlp", [True, False])
def test_a_model_trains_the_same_with_its_linears_through_onednn(lean_mlp):
    plain = tiny_qwen2()
    routed = accel.apply(training_options(copy.deepcopy(plain), ModelArgs(lean_mlp=lean_mlp)), "cpu", "auto")
    training_options(plain, ModelArgs(lean_mlp=lean_mlp))
    assert sum(onednn.routes(m) for m in routed.modules()) == 2 * 7 + 1  # q k v o gate up down, LM head
    assert not any(onednn.routes(m) for m in plain.modules())
    ids = torch.randint(0, 61, (16, ROWS // 16))
    want_logits, want = forward_backward(plain, ids)
    got_logits, got = forward_backward(routed, ids)
    torch.testing.assert_close(got_logits, want_logits, rtol=1e-4, atol=1e-5)
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-3, atol=1e-6, msg=name)
    # Per layer q, o, gate, up and down (the lean MLP's included) go through oneDNN; k and v (64
    # outputs) and the LM head (61) are below MIN_FEATURES. Backward adds each one's input gradient.
    assert onednn_calls(lambda: routed(ids)) == 2 * 5
    assert onednn_calls(lambda: forward_backward(routed, ids)) == 2 * 2 * 5


def test_a_deep_copy_routes_through_its_own_weights():
    model = accel.apply(training_options(tiny_qwen2(), ModelArgs()), "cpu", "auto")
    copied = copy.deepcopy(model)
    with torch.no_grad():
        for p in copied.parameters():
            p.mul_(0.5)
    ids = torch.randint(0, 61, (16, ROWS // 16))
    with torch.no_grad():
        assert not torch.allclose(model(ids).logits, copied(ids).logits)
    proj = copied.model.layers[0].self_attn.q_proj
    assert proj.forward.__self__ is proj


def test_a_frozen_weight_keeps_no_input_and_still_passes_the_input_gradient():
    torch.manual_seed(0)
    x = torch.randn(ROWS, 160, requires_grad=True)
    weight = torch.randn(192, 160) * 0.1  # frozen, as a LoRA base layer's
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = onednn.linear(x, weight)
    assert all(t.data_ptr() != x.data_ptr() for t in saved)
    out.square().sum().backward()
    want = x.detach().clone().requires_grad_(True)
    F.linear(want, weight).square().sum().backward()
    torch.testing.assert_close(x.grad, want.grad, rtol=1e-4, atol=1e-4)
