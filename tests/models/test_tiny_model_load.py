"""Tiny models: a saved directory loads back through `load_model` with identical logits, the Qwen2
shape builds, parameter counts follow the config, and bad model paths are one clear error."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaForCausalLM, Qwen2ForCausalLM

from r1kit.errors import R1kitError
from r1kit.models.load import load_model
from r1kit.models.tiny import TinyModelConfig, build_tiny_model, save_tiny

PROMPT = "Q: 12+7=?\nA: <think>12+7=19</think>"


def expected_params(cfg: TinyModelConfig, vocab: int) -> int:
    """Parameters of a tiny Llama/Qwen2 worked out from its config."""
    h, layers = cfg.hidden_size, cfg.num_layers
    kv = cfg.num_kv_heads * (h // cfg.num_heads)  # key/value width under grouped-query attention
    inter = cfg.intermediate_size or 4 * h
    attn = h * h + 2 * h * kv + h * h  # q, k, v, o projections
    if cfg.arch == "qwen2":
        attn += h + 2 * kv  # Qwen2 has biases on q, k and v
    mlp = 3 * h * inter  # gate, up, down
    norms = 2 * h  # input and post-attention RMSNorm
    embeddings = vocab * h * (1 if cfg.tie_word_embeddings else 2)
    return embeddings + layers * (attn + mlp + norms) + h  # + the final norm


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.numerics
def test_saved_tiny_model_loads_back_with_identical_logits(tmp_path, char_tokenizer):
    cfg = TinyModelConfig(hidden_size=64, num_layers=2)
    built = build_tiny_model(char_tokenizer, cfg, seed=3).eval()
    built.save_pretrained(tmp_path)
    char_tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), dtype="float32", device="cpu").eval()
    assert isinstance(loaded, LlamaForCausalLM)
    assert built.state_dict().keys() == loaded.state_dict().keys()
    assert all(torch.equal(t, loaded.state_dict()[k]) for k, t in built.state_dict().items())  # saved losslessly, bit for bit
    # The same weights in other memory: a matmul may sum in another order there (MKL's results depend
    # on alignment, and loaded tensors are not 64-byte aligned), so the logits agree to float32 rounding.
    x = torch.tensor([char_tokenizer(PROMPT, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, built(x).logits)
    assert loaded.config.pad_token_id == char_tokenizer.pad_token_id
    assert loaded.config.eos_token_id == char_tokenizer.eos_token_id
    assert loaded.generation_config.pad_token_id == char_tokenizer.pad_token_id


def test_shared_fixture_model_is_two_layers_of_width_64(tiny_model_dir, char_tokenizer):
    model = load_model(str(tiny_model_dir), device="cpu")
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (2, 64)
    assert model.config.vocab_size == len(char_tokenizer)
    assert n_params(model) == expected_params(TinyModelConfig(hidden_size=64, num_layers=2), len(char_tokenizer))


def test_same_seed_builds_the_same_weights_and_another_seed_does_not(char_tokenizer):
    cfg = TinyModelConfig(hidden_size=32, num_layers=1)
    a, b, c = (build_tiny_model(char_tokenizer, cfg, seed=s) for s in (0, 0, 1))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.model.layers[0].self_attn.q_proj.weight, c.model.layers[0].self_attn.q_proj.weight)


def test_qwen2_arch_builds_with_qkv_biases_and_runs(tmp_path, char_tokenizer):
    cfg = TinyModelConfig(arch="qwen2", hidden_size=32, num_layers=1)
    model = build_tiny_model(char_tokenizer, cfg)
    assert isinstance(model, Qwen2ForCausalLM)
    assert model.model.layers[0].self_attn.q_proj.bias is not None
    assert n_params(model) == expected_params(cfg, len(char_tokenizer))
    x = torch.tensor([[5, 6, 7]])
    assert model(x).logits.shape == (1, 3, len(char_tokenizer))
    # The model half of a Qwen2 directory goes through load_model like any other.
    save_tiny(tmp_path, char_tokenizer, cfg, seed=0)
    assert isinstance(load_model(str(tmp_path), device="cpu"), Qwen2ForCausalLM)


def test_unknown_arch_is_an_error_listing_the_choices(char_tokenizer):
    with pytest.raises(R1kitError, match=r"unknown tiny model arch 'gpt2'; choose one of \['llama', 'qwen2'\]"):
        build_tiny_model(char_tokenizer, TinyModelConfig(arch="gpt2"))


@pytest.mark.parametrize(
    "cfg, low, high",
    [
        (TinyModelConfig(hidden_size=96, num_layers=2, num_heads=4, num_kv_heads=2), 0.25e6, 0.35e6),
        (TinyModelConfig(), 0.9e6, 1.1e6),  # the default shape
        (TinyModelConfig(hidden_size=512, num_layers=5, num_heads=8, num_kv_heads=4), 18e6, 22e6),
    ],
    ids=["0.3M", "default-1M", "20M"],
)
def test_parameter_count_follows_the_config_from_0_3M_to_20M(char_tokenizer, cfg, low, high):
    # Built on the meta device: shapes without memory or init time.
    with torch.device("meta"):
        model = build_tiny_model(char_tokenizer, cfg)
    count = n_params(model)
    assert count == expected_params(cfg, len(char_tokenizer))
    assert low <= count <= high


def test_empty_model_path_is_an_error_naming_model_path():
    with pytest.raises(R1kitError, match="no model given; set model.path"):
        load_model("")


def test_missing_model_directory_is_an_error_naming_the_path(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(R1kitError, match=r"model directory '.*no-such-model' does not exist; check model.path"):
        load_model(str(missing))


def test_directory_without_config_json_is_not_a_model(tmp_path):
    with pytest.raises(R1kitError, match="without config.json, so not a Hugging Face model"):
        load_model(str(tmp_path))


def test_unknown_dtype_is_an_error_listing_the_choices(tiny_model_dir):
    with pytest.raises(R1kitError, match=r"unknown dtype 'fp8'; choose one of \['bfloat16', 'float16', 'float32', 'auto'\]"):
        load_model(str(tiny_model_dir), dtype="fp8")


def test_bfloat16_dtype_is_applied(tiny_model_dir):
    model = load_model(str(tiny_model_dir), dtype="bfloat16", device="cpu")
    assert next(model.parameters()).dtype == torch.bfloat16


def mlp_calls_in_forward_and_backward(model, input_ids) -> int:
    """How often the first decoder layer's MLP runs during one forward + backward (counted in its
    forward itself: the recomputation in backward runs no module hooks)."""
    calls = []
    layer = model.get_base_model().model.layers[0] if hasattr(model, "get_base_model") else model.model.layers[0]
    forward = layer.mlp.forward
    layer.mlp.forward = lambda *args, **kwargs: calls.append(1) or forward(*args, **kwargs)
    try:
        model(input_ids=input_ids).logits.sum().backward()
    finally:
        del layer.mlp.forward  # back to the class's forward
    return len(calls)


@pytest.mark.numerics
def test_gradient_checkpointing_recomputes_layers_and_gives_the_same_gradients(tiny_model_dir):
    from r1kit.config import ModelArgs
    from r1kit.models.load import load_policy

    input_ids = torch.randint(0, 50, (2, 12))
    grads = {}
    for on in (False, True):
        model = load_policy(ModelArgs(path=str(tiny_model_dir), device="cpu", gradient_checkpointing=on)).train()
        assert mlp_calls_in_forward_and_backward(model, input_ids) == (2 if on else 1)  # recomputed in backward
        grads[on] = [p.grad.clone() for p in model.parameters()]
    for with_cp, without in zip(grads[True], grads[False]):
        torch.testing.assert_close(with_cp, without)


def test_gradient_checkpointing_under_lora_reaches_the_adapters(tiny_model_dir):
    pytest.importorskip("peft")
    from r1kit.config import ModelArgs
    from r1kit.models.load import load_policy

    model = load_policy(ModelArgs(path=str(tiny_model_dir), device="cpu", lora_r=4, gradient_checkpointing=True)).train()
    assert mlp_calls_in_forward_and_backward(model, torch.randint(0, 50, (2, 12))) == 2
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_b)


def test_a_model_without_gradient_checkpointing_is_a_one_line_error():
    from r1kit.config import ModelArgs
    from r1kit.models.load import training_options

    class NoCheckpointing(torch.nn.Module):
        def activation_checkpointing_enable(self, **kwargs):
            raise ValueError("NoCheckpointing does not support gradient checkpointing.")

    with pytest.raises(R1kitError, match=r"NoCheckpointing cannot use gradient checkpointing .*set model.gradient_checkpointing=false"):
        training_options(NoCheckpointing(), ModelArgs(gradient_checkpointing=True))


class _Loaded:
    """What a patched from_pretrained returns: records whether the model was moved afterwards."""

    def __init__(self):
        self.moved_to = None

    def to(self, device):
        self.moved_to = device
        return self


@pytest.mark.parametrize("accelerate", [True, False])
def test_an_accelerator_model_loads_straight_onto_its_device_when_accelerate_is_there(tiny_model_dir, monkeypatch, accelerate):
    from r1kit.models import load

    calls = []

    def from_pretrained(path, **kwargs):
        calls.append(kwargs)
        return _Loaded()

    monkeypatch.setattr(load.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    monkeypatch.setattr(load, "is_accelerate_available", lambda: accelerate)
    model = load.load_model(str(tiny_model_dir), "bfloat16", "cuda:1")
    if accelerate:  # weights go to the device as they load, never all in host memory
        assert calls[0]["device_map"] == "cuda:1" and model.moved_to is None
    else:  # loaded on the host, then moved
        assert "device_map" not in calls[0] and model.moved_to == torch.device("cuda:1")
    assert calls[0]["dtype"] == torch.bfloat16
    load.load_model(str(tiny_model_dir), "float32", "cpu")  # on the CPU: no device map, whatever is installed
    assert "device_map" not in calls[1]
