"""selective_log_softmax / entropy_from_logits / completion_logprobs against plain torch."""

import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

from r1kit.algorithms.logprobs import completion_logprobs, entropy_from_logits, selective_log_softmax

pytestmark = pytest.mark.numerics


def reference_logp(logits, index, temperature=1.0):
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return torch.log_softmax(logits / temperature, -1).gather(-1, index.unsqueeze(-1)).squeeze(-1)


def test_selective_log_softmax_hand_values():
    # logits [0, ln 3] -> softmax [1/4, 3/4]; token 1 -> ln(3/4) = -0.287682
    # temperature 2 -> [0, ln 3 / 2] = [0, ln sqrt 3] -> p1 = sqrt3 / (1 + sqrt3) = 0.633975
    #   -> ln 0.633975 = -0.455746
    logits = torch.tensor([[[0.0, math.log(3.0)]]])
    index = torch.tensor([[1]])
    assert selective_log_softmax(logits, index).item() == pytest.approx(-0.287682, abs=1e-6)
    assert selective_log_softmax(logits, index, temperature=2.0).item() == pytest.approx(-0.455746, abs=1e-6)


@pytest.mark.parametrize("chunk_rows", [1, 2, 5, None])
@pytest.mark.parametrize("dtype, temperature", [(torch.float64, 0.7), (torch.float32, 1.0)])
def test_selective_log_softmax_chunked_equals_log_softmax_gather_with_grad(chunk_rows, dtype, temperature):
    torch.manual_seed(0)
    logits = torch.randn(5, 3, 7, dtype=dtype, requires_grad=True)
    original = logits.detach().clone()
    index = torch.randint(0, 7, (5, 3))
    weights = torch.randn(5, 3, dtype=dtype)

    got = selective_log_softmax(logits, index, temperature=temperature, chunk_rows=chunk_rows)
    (got * weights).sum().backward()
    grad_got, logits.grad = logits.grad, None
    want = reference_logp(logits, index, temperature=temperature)
    (want * weights).sum().backward()

    torch.testing.assert_close(got, want)
    torch.testing.assert_close(grad_got, logits.grad)
    assert torch.equal(logits.detach(), original)  # backward works on copies, never on the logits


def test_selective_log_softmax_bf16_logits_are_scored_in_float32():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 11).to(torch.bfloat16)
    index = torch.randint(0, 11, (2, 3))
    got = selective_log_softmax(logits, index)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, reference_logp(logits, index))


def test_entropy_hand_values():
    # [0, ln 3] -> p = [1/4, 3/4]: H = 1/4 ln 4 + 3/4 ln(4/3) = 0.346574 + 0.215762 = 0.562335
    # uniform over 8 tokens: H = ln 8 = 2.079442
    logits = torch.tensor([[[0.0, math.log(3.0)]]])
    assert entropy_from_logits(logits).item() == pytest.approx(0.562335, abs=1e-6)
    assert entropy_from_logits(torch.zeros(1, 1, 8)).item() == pytest.approx(2.079442, abs=1e-6)


@pytest.mark.parametrize("chunk_rows", [1, 3])
def test_entropy_chunked_equals_autograd_formula_with_grad(chunk_rows):
    torch.manual_seed(1)
    logits = torch.randn(4, 2, 6, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(4, 2, dtype=torch.float64)

    got = entropy_from_logits(logits, temperature=1.3, chunk_rows=chunk_rows)
    (got * weights).sum().backward()
    grad_got, logits.grad = logits.grad, None
    logp = torch.log_softmax(logits / 1.3, -1)
    want = -(logp.exp() * logp).sum(-1)
    (want * weights).sum().backward()

    torch.testing.assert_close(got, want)
    torch.testing.assert_close(grad_got, logits.grad)


def tiny_qwen2():
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    return Qwen2ForCausalLM(config).eval()


@pytest.fixture(scope="module")
def tiny_model():
    return tiny_qwen2()


def test_completion_logprobs_equals_full_forward_log_softmax(tiny_model):
    torch.manual_seed(0)
    input_ids = torch.randint(0, 32, (3, 9))
    attention_mask = torch.ones_like(input_ids)
    k = 4  # the last 4 tokens are the completion; logits at positions 4..7 predict tokens 5..8
    with torch.no_grad():
        logits = tiny_model(input_ids=input_ids, attention_mask=attention_mask).logits
        want = reference_logp(logits[:, -k - 1 : -1], input_ids[:, -k:], temperature=0.9)
        got, entropy = completion_logprobs(
            tiny_model, input_ids, attention_mask, k, temperature=0.9, with_entropy=True
        )
        chunked = completion_logprobs(tiny_model, input_ids, attention_mask, k, temperature=0.9, chunk_rows=1)
    assert got.shape == entropy.shape == (3, 4)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(chunked, got)
    torch.testing.assert_close(entropy, entropy_from_logits(logits[:, -k - 1 : -1], temperature=0.9))


class NoLogitsToKeep(torch.nn.Module):
    """A causal LM whose forward takes only input_ids and attention_mask (the fallback path)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask)


def test_completion_logprobs_falls_back_when_model_lacks_logits_to_keep(tiny_model):
    torch.manual_seed(1)
    input_ids = torch.randint(0, 32, (2, 7))
    attention_mask = torch.ones_like(input_ids)
    with torch.no_grad():
        want = completion_logprobs(tiny_model, input_ids, attention_mask, 3)
        got = completion_logprobs(NoLogitsToKeep(tiny_model), input_ids, attention_mask, 3)
    torch.testing.assert_close(got, want)


def tiny_gpt2():
    """GPT-2 has learned absolute positions, so wrong position ids change its outputs (RoPE
    models like Qwen2 only see relative positions and are blind to a uniform shift)."""
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=32, n_embd=16, n_layer=1, n_head=2, n_positions=16, bos_token_id=0, eos_token_id=0
    )
    return GPT2LMHeadModel(config).eval()


def test_completion_logprobs_left_padding_does_not_change_logprobs():
    # Row 1 is row 0's last 4 tokens left-padded by 2. Position ids from the attention mask put
    # its real tokens at positions 0..3, as generate does, so its completion scores must equal
    # those of the same 4 tokens unpadded (a plain forward would put them at 2..5: off by ~0.3).
    model = tiny_gpt2()
    torch.manual_seed(2)
    tokens = torch.randint(1, 32, (6,))
    input_ids = torch.stack([tokens, torch.cat([torch.zeros(2, dtype=torch.long), tokens[2:]])])
    attention_mask = torch.tensor([[1] * 6, [0, 0, 1, 1, 1, 1]])
    alone = tokens[2:].unsqueeze(0)
    with torch.no_grad():
        padded = completion_logprobs(model, input_ids, attention_mask, 2)
        unpadded = completion_logprobs(model, alone, torch.ones_like(alone), 2)
        naive = model(input_ids=input_ids, attention_mask=attention_mask).logits[1, -3:-1]
    torch.testing.assert_close(padded[1], unpadded[0])
    assert not torch.allclose(reference_logp(naive, tokens[-2:]), unpadded[0], atol=1e-3)


def test_completion_logprobs_gradient_reaches_the_model(tiny_model):
    input_ids = torch.randint(0, 32, (2, 5))
    logp = completion_logprobs(tiny_model, input_ids, torch.ones_like(input_ids), 2, chunk_rows=1)
    logp.sum().backward()
    grad = tiny_model.lm_head.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    tiny_model.zero_grad(set_to_none=True)


def recorded(module, call, what):
    """what(args, output) for every forward of `module` during `call()`."""
    seen = []
    handle = module.register_forward_hook(lambda module, args, out: seen.append(what(args, out)))
    try:
        call()
    finally:
        handle.remove()
    return seen


def lm_head_positions(model, call):
    """How many positions the LM head of `model` was run on during `call()`."""
    return recorded(model.lm_head, call, lambda args, out: out.shape[1])


def test_only_the_logits_to_keep_positions_reach_the_lm_head_also_behind_peft():
    peft = pytest.importorskip("peft")
    model = tiny_qwen2()
    input_ids = torch.randint(0, 32, (2, 9))
    attention_mask = torch.ones_like(input_ids)
    wrapped = peft.get_peft_model(tiny_qwen2(), peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        want = completion_logprobs(model, input_ids, attention_mask, 3)
        got = completion_logprobs(wrapped, input_ids, attention_mask, 3)
        plain = lm_head_positions(model, lambda: completion_logprobs(model, input_ids, attention_mask, 3))
        behind_peft = lm_head_positions(
            wrapped.get_base_model(), lambda: completion_logprobs(wrapped, input_ids, attention_mask, 3)
        )
    assert plain == behind_peft == [3]  # the 3 positions that predict completion tokens, not all 9
    torch.testing.assert_close(got, want)  # same seed, and LoRA starts as the identity (B = 0)


def grouped_batch(seed=3):
    """8 rows from 3 prompts (groups of 3, 2 and 3 rows, not adjacent): prompts left-padded to 6
    columns, completions of 5 tokens right-padded."""
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(1, 32, (n,), generator=g) for n in (6, 4, 5)]
    which = [0, 1, 2, 0, 2, 1, 0, 2]
    ids = torch.zeros(8, 11, dtype=torch.long)
    mask = torch.zeros(8, 11, dtype=torch.long)
    for row, p in enumerate(which):
        prompt = prompts[p]
        ids[row, 6 - len(prompt) : 6] = prompt
        mask[row, 6 - len(prompt) : 6] = 1
        length = 5 - row % 3  # completions of 5, 4 and 3 tokens
        ids[row, 6 : 6 + length] = torch.randint(1, 32, (length,), generator=g)
        mask[row, 6 : 6 + length] = 1
    return ids, mask


def input_rows(model, call):
    """The [rows, tokens] shape of every forward `call()` makes through `model`'s embeddings."""
    return recorded(model.get_input_embeddings(), call, lambda args, out: tuple(args[0].shape))


def tiny_qwen2_lora():
    peft = pytest.importorskip("peft")
    return peft.get_peft_model(tiny_qwen2(), peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"])).eval()


@pytest.mark.parametrize("make_model", [tiny_qwen2, tiny_gpt2, tiny_qwen2_lora], ids=["qwen2", "gpt2", "qwen2-lora"])
def test_shared_prompts_give_the_same_logprobs_entropies_and_gradients(make_model):
    # GPT-2's learned positions make any position slip in the continuation visible. Eval mode:
    # GPT-2's dropout would make two forwards differ; gradients flow all the same.
    model = make_model()
    ids, mask = grouped_batch()
    k = 5
    grads = []
    results = []
    for share in (False, True):
        model.zero_grad(set_to_none=True)
        logp, entropy = completion_logprobs(model, ids, mask, k, temperature=0.7, with_entropy=True, share_prompts=share)
        ((logp * mask[:, -k:]).sum() + entropy.mean()).backward()
        results.append((logp.detach(), entropy.detach()))
        grads.append([p.grad.clone() for p in model.parameters() if p.requires_grad])
    torch.testing.assert_close(results[1], results[0], rtol=1e-5, atol=1e-5)
    for shared, plain in zip(grads[1], grads[0]):
        torch.testing.assert_close(shared, plain, rtol=1e-4, atol=1e-6)
    # The shared path ran the 3 distinct prompts once, then the 8 rows' completions but their last token.
    shapes = input_rows(model, lambda: completion_logprobs(model, ids, mask, k))
    assert shapes == [(3, 6), (8, 4)]


def test_shared_prompts_with_a_one_token_completion_and_without_repeats(tiny_model):
    ids, mask = grouped_batch()
    with torch.no_grad():
        one = completion_logprobs(tiny_model, ids[:, :7], mask[:, :7], 1)
        want = completion_logprobs(tiny_model, ids[:, :7], mask[:, :7], 1, share_prompts=False)
        assert input_rows(tiny_model, lambda: completion_logprobs(tiny_model, ids[:, :7], mask[:, :7], 1)) == [(3, 6)]
        distinct = [0, 1, 2]  # one row per prompt: nothing to share, one plain forward
        assert input_rows(tiny_model, lambda: completion_logprobs(tiny_model, ids[distinct], mask[distinct], 5)) == [(3, 10)]
    torch.testing.assert_close(one, want)


def test_gradient_checkpointing_takes_the_plain_forward():
    model = tiny_qwen2().train()
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable  # renamed in transformers 5
    enable()
    ids, mask = grouped_batch()
    shapes = input_rows(model, lambda: completion_logprobs(model, ids, mask, 5).sum().backward())
    assert shapes[0] == (8, 10)  # one forward over every row (recomputed in backward)
