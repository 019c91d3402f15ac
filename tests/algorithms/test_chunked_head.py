"""The chunked LM head (`head_logprobs`, `completion_logprobs(chunked_head=True)`) against the model's
own logits: same log-probs, entropies and gradients, without the [N, T, V] logits ever being built."""

import pytest
import torch
from transformers import Gemma2Config, Gemma2ForCausalLM, GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

from r1kit.algorithms.logprobs import chunked_head_problem, completion_logprobs, head_logprobs, selective_log_softmax
from r1kit.config import ModelArgs
from r1kit.errors import R1kitError
from r1kit.models.load import load_policy, load_trainable
from r1kit.train.supervised import IGNORE, token_loss_sum

pytestmark = pytest.mark.numerics


def reference(hidden, weight, bias, index, temperature):
    """log-probs and entropies the textbook way: full logits, log_softmax."""
    z = torch.nn.functional.linear(hidden, weight, bias)
    z = z.to(torch.promote_types(z.dtype, torch.float32)) / temperature
    logp_all = torch.log_softmax(z, -1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp_all.gather(-1, index.unsqueeze(-1)).squeeze(-1), entropy


@pytest.mark.parametrize("chunk_rows", [1, 4, None])
@pytest.mark.parametrize("dtype, temperature, with_bias", [(torch.float64, 0.7, True), (torch.float32, 1.0, False)])
def test_head_logprobs_equal_the_full_logits_with_gradients(chunk_rows, dtype, temperature, with_bias):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 5, 8, generator=g, dtype=dtype, requires_grad=True)
    weight = torch.randn(11, 8, generator=g, dtype=dtype, requires_grad=True)
    bias = torch.randn(11, generator=g, dtype=dtype, requires_grad=True) if with_bias else None
    index = torch.randint(0, 11, (3, 5), generator=g)
    upstream = torch.randn(3, 5, generator=g, dtype=dtype)

    got, got_entropy = head_logprobs(hidden, weight, bias, index, temperature, chunk_rows, with_entropy=True)
    assert head_logprobs(hidden, weight, bias, index, temperature, chunk_rows)[1] is None
    grads = torch.autograd.grad((got * upstream).sum(), [hidden, weight] + ([bias] if with_bias else []))
    want, want_entropy = reference(hidden, weight, bias, index, temperature)
    want_grads = torch.autograd.grad((want * upstream).sum(), [hidden, weight] + ([bias] if with_bias else []))

    assert got.shape == got_entropy.shape == (3, 5)
    torch.testing.assert_close(got, want.to(got.dtype))
    torch.testing.assert_close(got_entropy, want_entropy.to(got.dtype).detach())
    assert not got_entropy.requires_grad  # for logging only
    for a, b in zip(grads, want_grads):
        torch.testing.assert_close(a, b)


def test_head_logprobs_under_bf16_autocast_round_as_the_models_own_head():
    # Under autocast the model's head runs in bf16; the chunked head must score the same bf16 logits.
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(4, 6, 16, generator=g, requires_grad=True)
    weight = torch.randn(40, 16, generator=g, requires_grad=True)
    index = torch.randint(0, 40, (4, 6), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, _ = head_logprobs(hidden, weight, None, index, chunk_rows=5)
        logits = torch.nn.functional.linear(hidden, weight)
        assert logits.dtype == torch.bfloat16
        want = selective_log_softmax(logits, index)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    grad_got = torch.autograd.grad(got.sum(), [hidden, weight])
    grad_want = torch.autograd.grad(want.sum(), [hidden, weight])
    for a, b in zip(grad_got, grad_want):
        assert a.dtype == b.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2)  # bf16 products, summed in another order


def tiny_qwen2(tie=False):
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tie
    )
    return Qwen2ForCausalLM(config).eval()


def tiny_gpt2():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=32, n_embd=16, n_layer=1, n_head=2, n_positions=16, bos_token_id=0, eos_token_id=0)).eval()


def tiny_qwen2_lora():
    peft = pytest.importorskip("peft")
    return peft.get_peft_model(tiny_qwen2(), peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"])).eval()


def tiny_gemma2(cap: float | None = 5.0):
    torch.manual_seed(0)
    config = Gemma2Config(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
        final_logit_softcapping=cap,
    )  # fmt: skip
    return Gemma2ForCausalLM(config).eval()


class ScaledLogits(Qwen2ForCausalLM):
    """A model that scales its logits after the head, with nothing in its config saying so."""

    def forward(self, input_ids=None, attention_mask=None, logits_to_keep=0, **kwargs):
        out = super().forward(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=logits_to_keep, **kwargs)
        out.logits = out.logits * 3.0
        return out


def grouped_batch():
    """6 rows from 3 prompts (left-padded to 5 columns), completions of 4 tokens right-padded."""
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(1, 32, (n,), generator=g) for n in (5, 3, 4)]
    ids = torch.zeros(6, 9, dtype=torch.long)
    mask = torch.zeros(6, 9, dtype=torch.long)
    for row, p in enumerate([0, 1, 2, 0, 2, 1]):
        ids[row, 5 - len(prompts[p]) : 5] = prompts[p]
        mask[row, 5 - len(prompts[p]) : 5] = 1
        length = 4 - row % 2
        ids[row, 5 : 5 + length] = torch.randint(1, 32, (length,), generator=g)
        mask[row, 5 : 5 + length] = 1
    return ids, mask


@pytest.mark.parametrize("share_prompts", [True, False], ids=["shared", "plain"])
@pytest.mark.parametrize("make_model", [tiny_qwen2, lambda: tiny_qwen2(tie=True), tiny_gpt2, tiny_qwen2_lora], ids=["qwen2", "qwen2-tied", "gpt2", "qwen2-lora"])
def test_chunked_head_gives_the_models_logprobs_entropies_and_gradients(make_model, share_prompts):
    model = make_model()
    ids, mask = grouped_batch()
    k = 4
    upstream = torch.randn(6, k, generator=torch.Generator().manual_seed(5))
    results, grads = [], []
    for chunked in (False, True):
        model.zero_grad(set_to_none=True)
        logp, entropy = completion_logprobs(
            model, ids, mask, k, temperature=0.7, with_entropy=True, share_prompts=share_prompts, chunked_head=chunked, chunk_rows=5 if chunked else None
        )
        (logp * upstream * mask[:, -k:]).sum().backward()
        results.append((logp.detach(), entropy.detach()))
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    torch.testing.assert_close(results[1], results[0], rtol=1e-5, atol=1e-6)
    assert grads[1].keys() == grads[0].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6, msg=name)


def head_positions(model, call):
    """The number of positions of every call of `model`'s LM head module during `call()`."""
    seen = []
    head = model.get_output_embeddings()
    handle = head.register_forward_hook(lambda module, args, out: seen.append(out.shape[1]))
    try:
        call()
    finally:
        handle.remove()
    return seen


def test_chunked_head_never_runs_the_head_over_the_completion():
    model = tiny_qwen2()
    ids, mask = grouped_batch()
    plain = head_positions(model, lambda: completion_logprobs(model, ids, mask, 4, share_prompts=False))
    chunked = head_positions(model, lambda: completion_logprobs(model, ids, mask, 4, share_prompts=False, chunked_head=True))
    shared = head_positions(model, lambda: completion_logprobs(model, ids, mask, 4, chunked_head=True))
    assert plain == [4]
    assert chunked == [1]  # the model's own head sees one position; the chunks go through its weight
    assert shared == [1, 1]  # the prompts' forward and the continuation's


def test_chunked_head_problem_accepts_plain_heads_and_names_what_it_refuses():
    for model in (tiny_qwen2(), tiny_qwen2(tie=True), tiny_gpt2(), tiny_qwen2_lora(), tiny_gemma2(cap=None)):
        assert chunked_head_problem(model) is None, type(model).__name__
    assert "its config sets final_logit_softcapping=5.0" in chunked_head_problem(tiny_gemma2(cap=5.0))
    assert "capped or scaled logits" in chunked_head_problem(ScaledLogits(tiny_qwen2().config).eval())  # found by running it
    peft = pytest.importorskip("peft")
    on_head = peft.get_peft_model(tiny_qwen2(), peft.LoraConfig(r=2, target_modules=["q_proj", "lm_head"]))
    assert "not a plain linear LM head" in chunked_head_problem(on_head)
    training = tiny_gpt2().train()
    assert chunked_head_problem(training) is None and training.training  # its mode is put back


def test_loading_a_model_the_chunked_head_cannot_serve_is_one_clear_error(tmp_path):
    tiny_gemma2(cap=5.0).save_pretrained(tmp_path / "gemma2")
    tiny_qwen2().save_pretrained(tmp_path / "qwen2")
    with pytest.raises(R1kitError, match=r"model.chunked_lm_head cannot serve Gemma2ForCausalLM: its config sets final_logit_softcapping=5.0.*; set model.chunked_lm_head=false"):
        load_trainable(ModelArgs(path=str(tmp_path / "gemma2"), device="cpu", chunked_lm_head=True))
    assert load_trainable(ModelArgs(path=str(tmp_path / "gemma2"), device="cpu")) is not None  # off: loads
    pytest.importorskip("peft")
    args = ModelArgs(path=str(tmp_path / "qwen2"), device="cpu", chunked_lm_head=True, lora_r=2, lora_target_modules=["q_proj", "lm_head"])
    with pytest.raises(R1kitError, match=r"cannot serve Qwen2ForCausalLM: .*LoRA on the LM head"):
        load_policy(args)


def test_sft_loss_through_the_chunked_head_equals_the_plain_cross_entropy():
    model = tiny_qwen2(tie=True)
    ids = torch.randint(1, 32, (3, 7), generator=torch.Generator().manual_seed(2))
    labels = ids.clone()
    labels[:, :3] = IGNORE  # prompts
    labels[2, 5:] = IGNORE  # padding
    mask = torch.ones_like(ids)
    mask[2, 5:] = 0
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    out = []
    for chunked in (False, True):
        model.zero_grad(set_to_none=True)
        loss, count = token_loss_sum(model, batch, chunked_head=chunked)
        loss.backward()
        out.append((loss.detach(), count, {n: p.grad.clone() for n, p in model.named_parameters()}))
    assert out[0][1] == out[1][1] == 10
    torch.testing.assert_close(out[1][0], out[0][0])
    for name in out[0][2]:
        torch.testing.assert_close(out[1][2][name], out[0][2][name], rtol=1e-4, atol=1e-6, msg=name)
