"""Batched sampling and the RolloutBatch / SamplingParams contract, on hand-made numbers."""

from __future__ import annotations

import math

import pytest
import torch

from r1kit.errors import R1kitError
from r1kit.rollout import RolloutBatch, SamplingParams
from r1kit.rollout.sampling import _draw, _truncate, sample_next

# probabilities 0.4, 0.3, 0.2, 0.1
LOGP = torch.tensor([[0.4, 0.3, 0.2, 0.1]]).log()
NEG_INF = float("-inf")


def kept(logp: torch.Tensor) -> list[int]:
    return torch.isfinite(logp[0]).nonzero().flatten().tolist()


def test_top_k_keeps_the_k_most_likely():
    assert kept(_truncate(LOGP, top_k=2, top_p=1.0)) == [0, 1]


def test_top_p_keeps_the_smallest_set_reaching_p():
    # mass before each token: 0, 0.4, 0.7, 0.9 -> top_p=0.5 keeps tokens whose mass before < 0.5
    assert kept(_truncate(LOGP, top_k=0, top_p=0.5)) == [0, 1]
    assert kept(_truncate(LOGP, top_k=0, top_p=0.75)) == [0, 1, 2]
    assert kept(_truncate(LOGP, top_k=0, top_p=0.01)) == [0]


def test_top_p_after_top_k_uses_the_renormalised_mass():
    # top_k=2 leaves 0.4/0.7 = 0.571 and 0.429: top_p=0.55 keeps only the first
    assert kept(_truncate(LOGP, top_k=2, top_p=0.55)) == [0]


def test_truncation_applies_per_row():
    logp = torch.tensor([[0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4]]).log()
    out = _truncate(logp, top_k=1, top_p=1.0)
    assert torch.isfinite(out).tolist() == [[True, False, False, False], [False, False, False, True]]


def test_draw_follows_the_distribution():
    rows = 20_000
    generator = torch.Generator().manual_seed(0)
    tokens = _draw(LOGP.expand(rows, -1).clone(), generator)
    freq = torch.bincount(tokens, minlength=4).float() / rows
    # binomial standard error at p=0.4 is sqrt(0.24/20000) = 0.0035; allow ~4 sigma
    assert torch.allclose(freq, torch.tensor([0.4, 0.3, 0.2, 0.1]), atol=0.015)


def test_draw_never_picks_a_removed_token():
    generator = torch.Generator().manual_seed(0)
    logp = torch.tensor([[NEG_INF, 0.0, NEG_INF]]).expand(1000, -1).clone()
    assert (_draw(logp, generator) == 1).all()


def test_sampled_logprob_is_tempered_and_untruncated():
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    params = SamplingParams(temperature=0.5, top_k=1)
    tokens, logp = sample_next(logits, params, torch.Generator().manual_seed(0))
    assert tokens.tolist() == [0]
    # log_softmax([4, 2, 0])[0] = -log(1 + e^-2 + e^-4)
    assert logp.item() == pytest.approx(-math.log(1 + math.exp(-2) + math.exp(-4)), abs=1e-6)


def test_greedy_takes_the_argmax_with_untempered_logprob():
    logits = torch.tensor([[0.0, 3.0, 1.0]])
    tokens, logp = sample_next(logits, SamplingParams(temperature=0.0), torch.Generator())
    assert tokens.tolist() == [1]
    assert logp.item() == pytest.approx(-math.log(1 + math.exp(-3) + math.exp(-2)), abs=1e-6)


@pytest.mark.parametrize(
    "field, value",
    [("temperature", -1.0), ("top_p", 0.0), ("top_p", 1.5), ("top_k", -1), ("max_new_tokens", 0), ("n", 0), ("stop", "</a>"), ("stop", [""])],
)
def test_bad_sampling_params_name_the_field(field, value):
    with pytest.raises(R1kitError, match=field):
        SamplingParams(**{field: value})


def small_batch() -> RolloutBatch:
    return RolloutBatch(
        prompt_ids=torch.tensor([[0, 5], [6, 7]]),
        prompt_mask=torch.tensor([[0, 1], [1, 1]]),
        completion_ids=torch.tensor([[8, 1, 0], [9, 9, 9]]),
        completion_mask=torch.tensor([[1, 1, 0], [1, 1, 1]]),
        logprobs=torch.tensor([[-0.5, -0.25, 0.0], [-1.0, -1.0, -1.0]]),
        finish_reason=["eos", "length"],
        prompt_index=[0, 0],
        group_size=2,
        pad_token_id=0,
    )


def test_input_ids_and_attention_mask_join_prompt_and_completion():
    batch = small_batch()
    assert batch.input_ids.tolist() == [[0, 5, 8, 1, 0], [6, 7, 9, 9, 9]]
    assert batch.attention_mask.tolist() == [[0, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    assert batch.completion_lengths.tolist() == [2, 3]
    assert len(batch) == 2


def test_to_moves_tensors_and_keeps_lists():
    moved = small_batch().to("meta")
    assert moved.completion_ids.device.type == "meta"
    assert moved.finish_reason == ["eos", "length"]
