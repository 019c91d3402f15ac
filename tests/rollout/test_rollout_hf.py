"""HFEngine against model.generate, a full forward pass, and its own contract."""

from __future__ import annotations

import pytest
import torch
from rollout_tiny import EOS, PAD

from r1kit.errors import R1kitError
from r1kit.rollout import HFEngine, RolloutEngine, SamplingParams

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=12)


def engine(model, tokenizer=None, eos=()) -> HFEngine:
    return HFEngine(model, tokenizer=tokenizer, pad_token_id=PAD, eos_token_id=list(eos))


def test_hf_engine_is_a_rollout_engine(model):
    assert isinstance(engine(model), RolloutEngine)


def test_same_seed_gives_identical_completions(model, prompts):
    params = SamplingParams(temperature=1.0, max_new_tokens=16, n=4, seed=7)
    a, b = engine(model).generate(prompts, params), engine(model).generate(prompts, params)
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert torch.equal(a.logprobs, b.logprobs)


def test_different_seed_gives_different_completions(model, prompts):
    a = engine(model).generate(prompts, SamplingParams(max_new_tokens=16, n=4, seed=1))
    b = engine(model).generate(prompts, SamplingParams(max_new_tokens=16, n=4, seed=2))
    assert not torch.equal(a.completion_ids, b.completion_ids)


def test_the_n_samples_of_a_prompt_differ(model, prompts):
    batch = engine(model).generate(prompts, SamplingParams(max_new_tokens=16, n=4, seed=0))
    group = batch.completion_ids[:4]
    assert len({tuple(row.tolist()) for row in group}) == 4


def test_sampling_leaves_the_global_rng_alone(model, prompts):
    state = torch.random.get_rng_state()
    engine(model).generate(prompts, SamplingParams(max_new_tokens=4, seed=0))
    assert torch.equal(state, torch.random.get_rng_state())


@pytest.mark.numerics
def test_greedy_equals_hf_generate_token_for_token(model, prompts):
    batch = engine(model).generate(prompts, GREEDY)
    for i, prompt in enumerate(prompts):
        reference = model.generate(
            torch.tensor([prompt]), do_sample=False, max_new_tokens=GREEDY.max_new_tokens, pad_token_id=PAD, eos_token_id=None
        )[0, len(prompt) :]
        assert batch.completion_ids[i].tolist() == reference.tolist()


@pytest.mark.numerics
def test_left_padded_batch_gives_each_prompt_its_own_greedy_completion(model, prompts):
    batch = engine(model).generate(prompts, GREEDY)
    for i, prompt in enumerate(prompts):
        alone = engine(model).generate([prompt], GREEDY)
        assert batch.completion_ids[i].tolist() == alone.completion_ids[0].tolist()
        assert torch.allclose(batch.logprobs[i], alone.logprobs[0], atol=1e-5)


@pytest.mark.numerics
def test_n_samples_equal_the_prompt_repeated_n_times(model, prompts):
    """Prefilling each prompt once and repeating its KV cache changes nothing."""
    params = SamplingParams(max_new_tokens=10, n=3, seed=5)
    once = engine(model).generate(prompts, params)
    repeated = engine(model).generate([p for p in prompts for _ in range(3)], SamplingParams(max_new_tokens=10, n=1, seed=5))
    assert torch.equal(once.completion_ids, repeated.completion_ids)
    assert torch.allclose(once.logprobs, repeated.logprobs, atol=1e-6)


def test_rows_are_grouped_by_prompt(model, prompts):
    batch = engine(model).generate(prompts, SamplingParams(max_new_tokens=4, n=3, seed=0))
    assert batch.prompt_index == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert batch.group_size == 3
    for row, i in enumerate(batch.prompt_index):
        real = batch.prompt_ids[row][batch.prompt_mask[row].bool()]
        assert real.tolist() == prompts[i]


def test_prompts_are_left_padded(model, prompts):
    batch = engine(model).generate(prompts, GREEDY)
    assert batch.prompt_ids[1].tolist() == [PAD, PAD, PAD, 10, 11]
    assert batch.prompt_mask[1].tolist() == [0, 0, 0, 1, 1]


def first_new_token(row: list[int], start: int) -> tuple[int, int]:
    """(position, token) of the first token at or after `start` that does not occur earlier."""
    for j in range(start, len(row)):
        if row[j] not in row[:j]:
            return j, row[j]
    raise AssertionError("no fresh token in the greedy completion; pick another prompt")


def test_eos_ends_the_row_and_the_mask_covers_the_eos(model, prompts):
    free = engine(model).generate(prompts, GREEDY)
    j, eos = first_new_token(free.completion_ids[0].tolist(), start=2)

    batch = engine(model, eos=[eos]).generate(prompts, GREEDY)
    assert batch.finish_reason[0] == "eos"
    assert batch.completion_lengths[0].item() == j + 1
    assert batch.completion_mask[0, : j + 1].tolist() == [1] * (j + 1)
    assert batch.completion_ids[0, j].item() == eos
    assert (batch.completion_ids[0, j + 1 :] == PAD).all()
    assert (batch.completion_mask[0, j + 1 :] == 0).all()
    assert (batch.logprobs[0, j + 1 :] == 0).all()
    assert batch.completion_ids[0, : j + 1].tolist() == free.completion_ids[0, : j + 1].tolist()


def test_generation_stops_when_every_row_is_done(model):
    """With every token an eos, all rows end at the first step and the loop stops there."""
    batch = engine(model, eos=range(40)).generate([[5, 6], [7]], SamplingParams(max_new_tokens=50, n=2, seed=0))
    assert batch.completion_ids.shape == (4, 1)
    assert batch.finish_reason == ["eos"] * 4


def test_max_new_tokens_gives_length(model, prompts):
    batch = engine(model).generate(prompts, SamplingParams(max_new_tokens=9, n=2, seed=0))
    assert batch.completion_ids.shape == (6, 9)
    assert batch.finish_reason == ["length"] * 6
    assert batch.completion_mask.sum().item() == 6 * 9


def test_stop_token_id_ends_the_row_with_stop(model, prompts):
    free = engine(model).generate(prompts, GREEDY)
    j, token = first_new_token(free.completion_ids[2].tolist(), start=1)
    batch = engine(model).generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=12, stop_token_ids=[token]))
    assert batch.finish_reason[2] == "stop"
    assert batch.completion_lengths[2].item() == j + 1


def test_stop_string_ends_the_row_with_stop_and_keeps_its_tokens(model, tokenizer, prompts):
    free = engine(model, tokenizer).generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=20))
    text = free.texts[0]
    # A 2-character stop string that first occurs at index k of the greedy text: two tokens long,
    # so it spans a token boundary.
    k = next(k for k in range(3, len(text) - 1) if text[k : k + 2] not in text[: k + 1])
    stop = text[k : k + 2]

    batch = engine(model, tokenizer).generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=20, stop=[stop]))
    assert batch.finish_reason[0] == "stop"
    assert batch.texts[0] == text[: k + 2]
    assert batch.completion_lengths[0].item() == k + 2  # one token per character


def test_stop_string_works_when_sampling_too(model, tokenizer, prompts):
    params = SamplingParams(max_new_tokens=40, n=4, seed=3, stop=["a", "e"])
    batch = engine(model, tokenizer).generate(prompts, params)
    for text, reason in zip(batch.texts, batch.finish_reason):
        if reason == "stop":
            assert text[-1] in "ae" and "a" not in text[:-1] and "e" not in text[:-1]
        else:
            assert "a" not in text and "e" not in text
    assert "stop" in batch.finish_reason


def test_stop_strings_without_a_tokenizer_are_an_error(model, prompts):
    with pytest.raises(R1kitError, match="tokenizer"):
        engine(model).generate(prompts, SamplingParams(max_new_tokens=4, stop=["ab"]))


def test_texts_are_decoded_completions(model, tokenizer, prompts):
    batch = engine(model, tokenizer, eos=[EOS]).generate(prompts, SamplingParams(max_new_tokens=8, n=2, seed=0))
    for row, text in enumerate(batch.texts):
        ids = batch.completion_ids[row][batch.completion_mask[row].bool()].tolist()
        assert text == tokenizer.decode(ids, skip_special_tokens=True)


def test_top_k_1_equals_greedy(model, prompts):
    greedy = engine(model).generate(prompts, GREEDY)
    top1 = engine(model).generate(prompts, SamplingParams(temperature=1.0, top_k=1, max_new_tokens=12, seed=0))
    assert torch.equal(greedy.completion_ids, top1.completion_ids)


def test_tiny_top_p_equals_greedy(model, prompts):
    greedy = engine(model).generate(prompts, GREEDY)
    nucleus = engine(model).generate(prompts, SamplingParams(temperature=0.8, top_p=1e-6, max_new_tokens=12, seed=0))
    assert torch.equal(greedy.completion_ids, nucleus.completion_ids)


def learner_logprobs(model, batch, temperature: float) -> torch.Tensor:
    """What the learner computes: a full forward over prompt+completion. Returns [N, C]."""
    input_ids, attention_mask = batch.input_ids, batch.attention_mask
    positions = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions).logits
    P, C = batch.prompt_ids.shape[1], batch.completion_ids.shape[1]
    logp = torch.log_softmax(logits[:, P - 1 : P + C - 1].float() / temperature, dim=-1)
    return logp.gather(-1, batch.completion_ids[..., None]).squeeze(-1) * batch.completion_mask


@pytest.mark.numerics
@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, 0, 1.0), (0.7, 5, 0.9)])
def test_logprobs_equal_a_full_forward_pass(model, prompts, temperature, top_k, top_p):
    # eos=3 ends some rows early, so masked positions are covered too.
    params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, max_new_tokens=16, n=3, seed=0)
    batch = engine(model, eos=[3]).generate(prompts, params)
    assert torch.allclose(batch.logprobs, learner_logprobs(model, batch, temperature), atol=1e-5)
    assert (batch.logprobs[batch.completion_mask == 0] == 0).all()


@pytest.mark.numerics
def test_greedy_logprobs_are_untempered(model, prompts):
    batch = engine(model).generate(prompts, GREEDY)
    assert torch.allclose(batch.logprobs, learner_logprobs(model, batch, 1.0), atol=1e-5)


def test_train_mode_is_restored(prompts):
    from rollout_tiny import tiny_qwen2

    model = tiny_qwen2().train()
    engine(model).generate(prompts, SamplingParams(max_new_tokens=2, seed=0))
    assert model.training


def test_empty_prompt_is_an_error(model):
    with pytest.raises(R1kitError, match="prompt 1 is empty"):
        engine(model).generate([[5], []], GREEDY)


def test_pad_and_eos_come_from_the_tokenizer(model, tokenizer):
    e = HFEngine(model, tokenizer)
    assert (e.pad_token_id, e.eos_token_ids) == (PAD, [EOS])


def test_rollout_tensors_can_enter_the_learners_backward_pass(prompts):
    """Tensors made under inference_mode cannot be saved for backward; the batch holds ordinary ones."""
    from rollout_tiny import tiny_qwen2

    model = tiny_qwen2().train()
    batch = engine(model).generate(prompts, SamplingParams(max_new_tokens=4, seed=0))
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    loss = (logits[:, -4:, 0] * batch.completion_mask).sum() + (logits[:, -4:, 1] * batch.logprobs).sum()
    loss.backward()
    assert model.lm_head.weight.grad is not None
