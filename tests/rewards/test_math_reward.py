"""The `math` reward: answer extraction, math-verify equivalence, None / extraction-failure
accounting, and timeouts that work off the main thread."""

import logging
import multiprocessing
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from r1kit.errors import R1kitError
from r1kit.rewards import math as math_module
from r1kit.rewards.math import call_with_deadline, extract_answer, extract_final_answer, gold_answer, math_reward

EQUIVALENT = [
    # (completion, gold)
    ("\\boxed{\\frac{1}{2}}", "0.5"),
    ("<answer>1/2</answer>", "\\frac12"),
    ("<answer>0.5</answer>", "\\frac{1}{2}"),
    ("<answer>\\{2,1\\}</answer>", "{1,2}"),
    ("\\boxed{\\{1, 2\\}}", "\\{2,1\\}"),
    ("<answer>[1,2)</answer>", "[1,2)"),
    ("<answer>(-\\infty, 3]</answer>", "(-\\infty,3]"),
    ("#### 42", "42"),
    ("<answer>3.0</answer>", "3"),
    ("<answer>1,234</answer>", "1234"),
    ("<think>8 = 4*2</think><answer>\\boxed{2\\sqrt{2}}</answer>", "\\sqrt{8}"),
    ("<answer>x = 5</answer>", "5"),
    ("<answer>The answer is 3</answer>", "3"),
    ("<answer>\\frac{\\pi}{2}", "\\pi/2"),  # unclosed block: generation stopped on </answer>
    # gold columns holding whole solutions (GSM8K, MATH)
    ("<answer>72</answer>", "She sold 48/2 = 24 clips in May.\n#### 72"),
    ("so \\boxed{5}.", "Hence $x = \\boxed{5}$."),
    # the <answer> block beats an earlier \boxed, the last \boxed beats an earlier one
    ("First guess \\boxed{1}. <answer>2</answer>", "2"),
    ("\\boxed{1}, no wait, \\boxed{2}", "2"),
]

NOT_EQUIVALENT = [
    ("\\boxed{0.51}", "0.5"),
    ("<answer>12</answer>", "21"),
    ("<answer>(1,2]</answer>", "[1,2]"),  # open vs closed left end
    ("<answer>[1,2)</answer>", "[1,2]"),  # open vs closed right end
    ("\\boxed{\\{1,3\\}}", "{1,2}"),
    ("<answer>5</answer>", "She sold 48/2 = 24 clips in May.\n#### 72"),
]


@pytest.mark.parametrize("completion, gold", EQUIVALENT)
def test_equivalent_answers_score_one(completion, gold):
    assert math_reward([completion], answer=[gold]) == [1.0]


@pytest.mark.parametrize("completion, gold", NOT_EQUIVALENT)
def test_near_misses_score_zero(completion, gold):
    metrics = {}
    assert math_reward([completion], answer=[gold], metrics=metrics) == [0.0]
    assert metrics.get("extract_fail", 0) == 0  # rejected on the maths, not on extraction


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>a</think><answer> 7 </answer>", "7"),
        ("<answer>1</answer> <answer>2</answer>", "2"),
        ("<answer>so \\boxed{\\frac{1}{2}} it is</answer>", "\\frac{1}{2}"),
        ("\\boxed{\\{1,\\{2\\}\\}}", "\\{1,\\{2\\}\\}"),
        ("steps...\n#### 1,234\n", "1,234"),
        ("\\boxed{unclosed", None),
        ("The answer is 42", None),
    ],
)
def test_extract_answer_order_and_shapes(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "gold, expected",
    [("42", "42"), ("Thus $\\boxed{\\frac{3}{4}}$.", "\\frac{3}{4}"), ("4+4 = 8\n#### 8", "8"), (7, "7")],
)
def test_gold_answer_takes_the_answer_out_of_a_solution(gold, expected):
    assert gold_answer(gold) == expected


@pytest.mark.parametrize(
    "texts, expected",
    [
        (["\\boxed{0.5}", "<answer>1/2</answer>", "<answer>\\frac12</answer>", "<answer>50\\%</answer>"], "1/2"),
        (["#### 3.0", "#### 3", "<answer>x = 3</answer>"], "3"),
        (["\\boxed{\\sqrt{8}}", "\\boxed{2\\sqrt{2}}"], "2*sqrt(2)"),
        (["<answer>\\{2,1\\}</answer>", "<answer>{1, 2}</answer>"], "{1, 2}"),
        (["<answer>???</answer>"], "???"),  # unparseable: as written
        (["no final answer"], None),
    ],
)
def test_extract_final_answer_gives_one_voting_key_per_equivalent_answer(texts, expected):
    assert [extract_final_answer(t) for t in texts] == [expected] * len(texts)


def test_rows_without_gold_are_not_applicable():
    assert math_reward(["\\boxed{1}", "\\boxed{1}"], answer=[None, "1"]) == [None, 1.0]


def test_solution_column_is_accepted_as_gold():
    assert math_reward(["\\boxed{4}", "\\boxed{5}"], solution=["$4$", "$4$"]) == [1.0, 0.0]


def test_missing_gold_column_is_a_user_error():
    with pytest.raises(R1kitError, match="answer"):
        math_reward(["\\boxed{4}"], prompt=["2+2?"])


def test_unextractable_completion_scores_zero_and_is_counted():
    metrics = {}
    rewards = math_reward(
        ["The answer is 42", "\\boxed{42}", "<answer>???</answer>"], answer=["42"] * 3, metrics=metrics
    )
    assert rewards == [0.0, 1.0, 0.0]
    assert metrics["extract_fail"] == 2


def test_unparseable_gold_gives_none_and_exactly_one_warning(caplog):
    metrics = {}
    with caplog.at_level(logging.WARNING, logger="r1kit.rewards.math"):
        rewards = math_reward(["\\boxed{1}"] * 4, answer=["???", "???", "1", "\\frac{"], metrics=metrics)
    assert rewards == [None, None, 1.0, None]
    assert metrics["gold_unparseable"] == 3
    assert len([r for r in caplog.records if r.name == "r1kit.rewards.math"]) == 1


def test_chat_message_completions_are_read_from_the_last_message():
    completion = [{"role": "assistant", "content": "<answer>7</answer>"}]
    assert math_reward([completion], answer=["7"]) == [1.0]


def _batch():
    completions = [c for c, _ in EQUIVALENT[:6]] + [c for c, _ in NOT_EQUIVALENT[:3]]
    golds = [g for _, g in EQUIVALENT[:6]] + [g for _, g in NOT_EQUIVALENT[:3]]
    return completions, golds, [1.0] * 6 + [0.0] * 3


def test_reward_is_correct_when_called_from_worker_threads():
    completions, golds, expected = _batch()
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: math_reward(completions, answer=golds), range(4)))
    assert results == [expected] * 4


def _score_in_worker(args):
    completions, golds = args
    return math_reward(completions, answer=golds)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_reward_is_correct_inside_a_daemonic_worker_process():
    completions, golds, expected = _batch()
    with multiprocessing.get_context("fork").Pool(1) as pool:  # Pool workers are daemonic
        assert pool.map(_score_in_worker, [(completions, golds)]) == [expected]


def _spin(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return True


def test_call_with_deadline_raises_and_stops_the_overdue_thread():
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        call_with_deadline(lambda: _spin(30), timeout_s=0.2)
    assert time.monotonic() - start < 5
    deadline = time.monotonic() + 5
    while any(t.name == "r1kit-math-verify" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(t.name == "r1kit-math-verify" for t in threading.enumerate())


def test_call_with_deadline_returns_value_and_reraises_errors():
    assert call_with_deadline(lambda: 3, timeout_s=5) == 3
    with pytest.raises(ZeroDivisionError):
        call_with_deadline(lambda: 1 / 0, timeout_s=5)


def test_a_row_that_times_out_scores_zero_and_is_counted(monkeypatch):
    monkeypatch.setattr(math_module, "is_equivalent", lambda gold, span: _spin(30))
    metrics = {}
    with ThreadPoolExecutor(max_workers=1) as pool:  # off the main thread, where signal.alarm fails
        rewards = pool.submit(math_reward, ["\\boxed{1}"], answer=["1"], timeout_s=0.2, metrics=metrics).result()
    assert rewards == [0.0]
    assert metrics["timeout"] == 1
