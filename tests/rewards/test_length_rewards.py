"""Length-shaping rewards against hand-computed values: DAPO overlong, cosine scaling, repetition."""

import math

import pytest

from r1kit.errors import R1kitError
from r1kit.rewards.length import cosine_reward, overlong_reward, repetition_reward


# L_max = 100, L_cache = 20: free up to 80, then (80 - n) / 20, then -1.
@pytest.mark.parametrize(
    "length, expected",
    [(0, 0.0), (79, 0.0), (80, 0.0), (85, -0.25), (90, -0.5), (99, -0.95), (100, -1.0), (101, -1.0), (500, -1.0)],
)
def test_overlong_soft_punishment_in_tokens(length, expected):
    rewards = overlong_reward(["ignored"], max_length=100, cache_length=20, completion_lengths=[length])
    assert rewards == [pytest.approx(expected)]


def test_overlong_counts_completion_ids_then_characters():
    ids = [[1] * 90, [1] * 10]
    assert overlong_reward(["x", "y"], max_length=100, cache_length=20, completion_ids=ids) == [-0.5, 0.0]
    # no token column: characters of the text
    assert overlong_reward(["a" * 90, "a" * 100], max_length=100, cache_length=20) == [-0.5, -1.0]


@pytest.mark.parametrize("max_length, cache_length", [(100, 0), (100, 101), (100, -5)])
def test_overlong_rejects_a_cache_outside_the_length(max_length, cache_length):
    with pytest.raises(R1kitError, match="cache_length"):
        overlong_reward(["x"], max_length=max_length, cache_length=cache_length)


# Cosine, L = 100, defaults: correct 1.0 -> 0.5, wrong -1.0 -> -0.5, exceed -1.0.
# value(t) = end + 0.5 * (start - end) * (1 + cos(pi * t / L))
QUARTER = 0.5 * (1 + math.cos(math.pi / 4))  # 0.853553...


@pytest.mark.parametrize(
    "length, correct, expected",
    [
        (0, True, 1.0),
        (50, True, 0.75),  # halfway between 1.0 and 0.5
        (25, True, 0.5 + 0.5 * QUARTER),  # 0.926777
        (99, True, 0.5 + 0.5 * 0.5 * (1 + math.cos(math.pi * 0.99))),
        (100, True, -1.0),  # reached L: truncated, `exceed`
        (0, False, -1.0),
        (50, False, -0.75),
        (25, False, -0.5 - 0.5 * QUARTER),  # -0.926777: short wrong answers are punished most
        (150, False, -1.0),
        (10, None, None),  # correctness unknown -> not applicable
    ],
)
def test_cosine_scaling_with_a_correct_column(length, correct, expected):
    rewards = cosine_reward(["x"], max_length=100, correct=[correct], completion_lengths=[length])
    assert rewards == [expected if expected is None else pytest.approx(expected)]


def test_cosine_takes_correctness_from_the_math_verifier():
    # "\boxed{4}" is 9 characters; with L = 18 that is halfway: correct 0.75, wrong -0.75.
    completions = ["\\boxed{4}", "\\boxed{5}", "\\boxed{4}"]
    rewards = cosine_reward(completions, max_length=18, answer=["4", "4", "???"])
    assert rewards == [pytest.approx(0.75), pytest.approx(-0.75), None]


def test_cosine_paper_parameters():
    # Yeo et al. 2025: correct 2 -> 1, wrong -10 -> 0, exceed -10.
    params = dict(max_length=100, correct_start=2.0, correct_end=1.0, wrong_start=-10.0, wrong_end=0.0, exceed=-10.0)
    rewards = cosine_reward(["x"] * 3, correct=[True, False, False], completion_lengths=[50, 50, 100], **params)
    assert rewards == [pytest.approx(1.5), pytest.approx(-5.0), -10.0]


@pytest.mark.parametrize(
    "text, ngram_size, max_penalty, expected",
    [
        ("the cat sat on the mat", 3, -1.0, 0.0),  # 4 trigrams, all distinct
        ("a b c a b c", 3, -1.0, -0.25),  # 4 trigrams, 3 distinct: 1 - 3/4
        ("A b C a B c", 3, -1.0, -0.25),  # case-insensitive
        ("go go go go go", 3, -1.0, -2 / 3),  # 3 trigrams, 1 distinct
        ("a b c a b c", 3, -2.0, -0.5),
        ("a b c a b c", 1, -1.0, -0.5),  # 6 words, 3 distinct
        ("a b", 3, -1.0, 0.0),  # shorter than one n-gram
        ("", 3, -1.0, 0.0),
    ],
)
def test_repetition_penalty(text, ngram_size, max_penalty, expected):
    assert repetition_reward([text], ngram_size=ngram_size, max_penalty=max_penalty) == [pytest.approx(expected)]


def test_repetition_rejects_a_positive_penalty():
    with pytest.raises(R1kitError, match="max_penalty"):
        repetition_reward(["a a a"], max_penalty=1.0)
