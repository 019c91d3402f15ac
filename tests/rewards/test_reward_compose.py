"""RewardComposer: weighted sums, None handling, failing functions, metrics and spec errors."""

import logging
import math

import pytest

from r1kit.errors import R1kitError
from r1kit.rewards import RewardComposer

GOOD = "<think>a</think><answer>1</answer>"  # format 1.0, tag_count 1.0
HALF = "<think>a</think>"  # format 0.0, tag_count 0.5


def const_reward(completions, value=1.0, **columns):
    return [value] * len(completions)


def first_none(completions, **columns):
    return [None, 1.0, None]


def last_two(completions, **columns):
    return [None, 2.0, 3.0]


def fails_on_bad(completions, **columns):
    if "bad" in completions:
        raise ValueError("cannot score 'bad'")
    return [1.0] * len(completions)


def answer_only(completions, answer):
    """No **kwargs: it must receive only the columns it names."""
    return [float(c == a) for c, a in zip(completions, answer)]


def counting(completions, metrics, **columns):
    metrics["seen"] = len(completions)
    return [0.0] * len(completions)


def test_weighted_sum_per_function_and_metrics():
    composer = RewardComposer(
        [
            "format",
            {"name": "tag_count", "weight": 0.5},
            {"name": f"{__name__}:const_reward", "weight": 2.0, "kwargs": {"value": 0.25}},
        ]
    )
    result = composer([GOOD, HALF], {"answer": ["1", "1"]})
    # row 0: 1.0 + 0.5 * 1.0 + 2.0 * 0.25 = 2.0; row 1: 0.0 + 0.5 * 0.5 + 2.0 * 0.25 = 0.75
    assert result.total == [2.0, 0.75]
    assert result.per_function == {"format": [1.0, 0.0], "tag_count": [1.0, 0.5], "const_reward": [0.25, 0.25]}
    assert result.metrics == {
        "reward/format/mean": 0.5,
        "reward/format/none_frac": 0.0,
        "reward/format/errors": 0.0,
        "reward/tag_count/mean": 0.75,
        "reward/tag_count/none_frac": 0.0,
        "reward/tag_count/errors": 0.0,
        "reward/const_reward/mean": 0.25,
        "reward/const_reward/none_frac": 0.0,
        "reward/const_reward/errors": 0.0,
        "reward/mean": 1.375,
    }


def test_none_is_left_out_of_sums_and_means():
    composer = RewardComposer([first_none, {"name": f"{__name__}:last_two", "weight": 10.0}])
    result = composer(["a", "b", "c"], {})
    # row 0: nothing applies -> None; row 1: 1.0 + 10 * 2.0; row 2: 10 * 3.0
    assert result.total == [None, 21.0, 30.0]
    assert result.metrics["reward/first_none/mean"] == 1.0
    assert result.metrics["reward/first_none/none_frac"] == pytest.approx(2 / 3)
    assert result.metrics["reward/last_two/mean"] == 2.5
    assert result.metrics["reward/last_two/none_frac"] == pytest.approx(1 / 3)
    assert result.metrics["reward/mean"] == 25.5


def test_nan_counts_as_none():
    result = RewardComposer([lambda completions, **c: [math.nan, 1.0]])(["a", "b"], {})
    assert result.total == [None, 1.0]


def test_a_raising_function_voids_only_its_bad_rows_and_logs_them(caplog):
    composer = RewardComposer([fails_on_bad, {"name": f"{__name__}:const_reward", "kwargs": {"value": 0.5}}])
    with caplog.at_level(logging.WARNING, logger="r1kit.rewards.compose"):
        result = composer(["ok", "bad", "ok"], {})
    assert result.per_function["fails_on_bad"] == [1.0, None, 1.0]
    assert result.total == [1.5, 0.5, 1.5]  # the other reward still counts on the bad row
    assert result.metrics["reward/fails_on_bad/errors"] == 1.0
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "fails_on_bad" in warnings[0] and "ValueError: cannot score 'bad'" in warnings[0]
    assert all(r.exc_info is None for r in caplog.records if r.levelno >= logging.WARNING)  # a line, not a traceback


def always_raises(completions, **columns):
    raise KeyError("gold")


def test_a_failing_function_warns_once_however_many_batches_it_fails(caplog):
    composer = RewardComposer([fails_on_bad, always_raises], stop_after=0)
    with caplog.at_level(logging.WARNING, logger="r1kit.rewards.compose"):
        for _ in range(5):
            result = composer(["ok", "bad"], {})
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2  # one line per function, at its first failure
    assert result.metrics["reward/always_raises/errors"] == 2.0 and result.metrics["reward/fails_on_bad/errors"] == 1.0
    assert result.total == [1.0, None]


def test_a_function_failing_on_every_row_of_stop_after_batches_stops_with_its_exception():
    composer = RewardComposer([always_raises, {"name": f"{__name__}:const_reward"}], stop_after=3)
    composer(["a", "b"], {})
    composer(["a", "b"], {})
    with pytest.raises(R1kitError, match=r"reward 'always_raises' raised on every row of 3 steps in a row \(KeyError: 'gold'\)"):
        composer(["a", "b"], {})


def test_a_batch_with_one_good_row_restarts_the_count():
    composer = RewardComposer([fails_on_bad], stop_after=2)
    for batch in (["bad"], ["bad", "ok"], ["bad"], ["bad", "ok"], ["bad"]):  # never two all-failing batches in a row
        composer(batch, {})
    assert composer.failing["fails_on_bad"] == 1
    with pytest.raises(R1kitError, match="fails_on_bad"):
        composer(["bad", "bad"], {})


def test_a_negative_stop_after_is_one_clear_error():
    with pytest.raises(R1kitError, match=r"reward_failure_steps=-1 must be 0 \(never stop\) or a number of steps"):
        RewardComposer(["format"], stop_after=-1)


@pytest.mark.parametrize(
    "fn, message",
    [
        (lambda completions, **c: [1.0], "returned 1 values for 2 completions"),
        (lambda completions, **c: [1.0, "high"], "returned 'high'"),
        (lambda completions, **c: 1.0, "not a list"),
    ],
)
def test_a_malformed_return_value_is_an_error_naming_the_function(fn, message):
    def liar(completions, **columns):
        return fn(completions)

    with pytest.raises(R1kitError, match=message) as error:
        RewardComposer([liar])(["a", "b"], {})
    assert "liar" in str(error.value)


def test_a_user_error_inside_a_function_stops_the_run():
    with pytest.raises(R1kitError, match="answer"):
        RewardComposer(["math"])(["\\boxed{1}"], {"prompt": ["p"]})


def test_counts_reported_through_metrics_are_namespaced():
    result = RewardComposer(["math", counting])(["\\boxed{1}", "no answer here"], {"answer": ["1", "1"]})
    assert result.per_function["math"] == [1.0, 0.0]
    assert result.metrics["reward/math/extract_fail"] == 1.0
    assert result.metrics["reward/counting/seen"] == 2.0


def test_functions_without_kwargs_get_only_their_columns():
    result = RewardComposer([answer_only])(["4", "5"], {"answer": ["4", "4"], "prompt": ["p", "p"]})
    assert result.total == [1.0, 0.0]


def test_duplicate_names_get_a_suffix():
    composer = RewardComposer(["format", {"name": "format", "kwargs": {"think_prefilled": True}}])
    assert composer.names == ["format", "format_2"]
    result = composer(["a</think><answer>1</answer>"], {})
    assert result.per_function == {"format": [0.0], "format_2": [1.0]}


@pytest.mark.parametrize(
    "specs, message",
    [
        ([], "non-empty list"),
        ("math", "non-empty list"),
        ([{"name": "format", "wieght": 2}], "unknown key 'wieght'"),
        ([{"weight": 2}], "no 'name'"),
        ([{"name": "format", "weight": "high"}], "weight must be a number"),
        ([{"name": "format", "kwargs": {"think_prefiled": True}}], "no parameter 'think_prefiled'.*think_prefilled"),
        (["nope"], "unknown reward 'nope'"),
    ],
)
def test_bad_specs_fail_at_construction(specs, message):
    with pytest.raises(R1kitError, match=message):
        RewardComposer(specs)


def test_a_column_of_the_wrong_length_is_an_error():
    with pytest.raises(R1kitError, match="column 'answer' has 1 values for 2"):
        RewardComposer(["math"])(["a", "b"], {"answer": ["1"]})
