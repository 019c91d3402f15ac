"""Lean SwiGLU MLPs (`model.lean_mlp`): the same outputs and gradients to the bit as the model's own
MLP, with half the MLP activations kept for backward."""

import copy

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

from r1kit.config import ModelArgs
from r1kit.models.load import training_options
from r1kit.models.swiglu import lean_swiglu

pytestmark = pytest.mark.numerics

SHAPE = dict(vocab_size=53, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=96)
MODELS = {
    "qwen2": lambda: Qwen2ForCausalLM(Qwen2Config(**SHAPE)),
    "llama-mlp-bias": lambda: LlamaForCausalLM(LlamaConfig(**SHAPE, mlp_bias=True)),
    "qwen3": lambda: Qwen3ForCausalLM(Qwen3Config(**SHAPE, head_dim=8)),
    "mistral": lambda: MistralForCausalLM(MistralConfig(**SHAPE)),
}


def forward_backward(model, ids, autocast=False):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(ids).logits
    logits.float().square().mean().backward()
    return logits.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("arch", list(MODELS))
def test_lean_mlp_gives_the_same_logits_and_gradients_to_the_bit(arch, autocast):
    torch.manual_seed(0)
    model = MODELS[arch]()
    lean = copy.deepcopy(model)
    assert lean_swiglu(lean) == 2
    ids = torch.randint(0, 53, (3, 9))
    want_logits, want = forward_backward(model, ids, autocast)
    got_logits, got = forward_backward(lean, ids, autocast)
    assert torch.equal(got_logits, want_logits)
    assert got.keys() == want.keys() and len(got) == len(list(model.parameters()))
    for name in want:
        assert torch.equal(got[name], want[name]), name
    with torch.no_grad():  # inference takes the MLP as written
        assert torch.equal(lean(ids).logits, model(ids).logits)


def saved_bytes(model, ids):
    """Bytes autograd keeps for backward during one forward (each saved tensor's storage once)."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(ids).logits.sum().backward()
    return sum(storages.values())


def test_lean_mlp_keeps_two_intermediate_tensors_per_layer_fewer():
    torch.manual_seed(0)
    model = MODELS["qwen2"]()
    lean = copy.deepcopy(model)
    lean_swiglu(lean)
    ids = torch.randint(0, 53, (4, 16))
    one = 4 * 16 * SHAPE["intermediate_size"] * 4  # a float32 [rows, tokens, intermediate] tensor
    # The model's MLP keeps gate(x), silu(gate(x)), up(x) and the product; the lean one gate(x) and up(x).
    assert saved_bytes(model, ids) - saved_bytes(lean, ids) == 2 * one * SHAPE["num_hidden_layers"]


@pytest.mark.parametrize("targets", [["gate_proj", "up_proj", "down_proj"], ["q_proj", "v_proj"]])
def test_lean_mlp_under_lora_keeps_the_adapters_gradients(targets):
    # LoRA on the MLP: its down projection is no plain linear layer; LoRA on attention only: the MLP's
    # projections are frozen plain linear layers, whose weight gradient the lean MLP must not produce.
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = MODELS["llama-mlp-bias"]()
    lean_base = copy.deepcopy(base)
    lean_swiglu(lean_base)  # as load_policy does: training options on the base, then the adapters
    config = LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False)
    model, lean = get_peft_model(base, config), get_peft_model(lean_base, copy.deepcopy(config))
    lean.load_state_dict(model.state_dict())
    ids = torch.randint(0, 53, (2, 7))
    want_logits, want = forward_backward(model, ids)
    got_logits, got = forward_backward(lean, ids)
    assert torch.equal(got_logits, want_logits)
    assert got.keys() == want.keys() and got and all("lora_" in name for name in got)
    assert all(any(target in name for name in got) for target in targets)
    for name in want:
        assert torch.equal(got[name], want[name]), name


def test_a_deep_copy_runs_its_own_weights():
    # GRPO and PPO build their frozen reference with copy.deepcopy(policy).
    torch.manual_seed(0)
    model = MODELS["llama-mlp-bias"]()
    lean_swiglu(model)
    ref = copy.deepcopy(model)
    ids = torch.randint(0, 53, (2, 5))
    before = model(ids).logits.detach()
    with torch.no_grad():
        for p in ref.parameters():
            p.mul_(1.5)
    torch.testing.assert_close(model(ids).logits.detach(), before, rtol=0, atol=0)
    assert not torch.allclose(ref(ids).logits, before)
    ref(ids).logits.sum().backward()
    assert all(p.grad is None for p in model.parameters())
    assert ref.model.layers[0].mlp.down_proj.weight.grad is not None


def test_other_mlps_are_left_alone_and_the_option_turns_it_off():
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=53, n_embd=32, n_layer=2, n_head=4, n_positions=16))
    assert lean_swiglu(gpt2) == 0
    assert all("forward" not in vars(m) for m in gpt2.modules())

    on, off = MODELS["qwen2"](), MODELS["qwen2"]()
    training_options(on, ModelArgs(lean_mlp=True))
    training_options(off, ModelArgs(lean_mlp=False))
    assert sum("forward" in vars(m) for m in on.modules()) == 2
    assert not any("forward" in vars(m) for m in off.modules())
    assert lean_swiglu(on) == 0  # already lean: nothing is wrapped twice
