"""Built-in tasks: disjoint and reproducible splits, worked solutions that their own verifier
accepts, TinyZero's countdown scores, answer extraction, and parameter errors."""

from __future__ import annotations

import hashlib
import re

import pytest

from r1kit.data.tasks import TASKS, get_task
from r1kit.data.tasks.arithmetic import ArithmeticTask, _left_to_right
from r1kit.data.tasks.countdown import CountdownTask, evaluate_equation
from r1kit.errors import R1kitError

SEEDS = (0, 1, 2)


# -- splits ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("params", [{}, {"n_operands": 2, "digits": 1, "ops": "+-*"}, {"n_operands": [3, 4], "digits": 2}])
def test_arithmetic_train_and_test_prompts_are_disjoint_across_seeds(params):
    task = get_task("arithmetic", **params)
    train = {r["prompt"] for s in SEEDS for r in task.generate("train", 300, seed=s)}
    test = {r["prompt"] for s in SEEDS for r in task.generate("test", 25, seed=s)}
    assert len(test) >= 25
    assert not train & test


def test_countdown_train_and_test_problems_are_disjoint_across_seeds():
    task = get_task("countdown")
    train = [r for s in SEEDS for r in task.generate("train", 200, seed=s)]
    test = [r for s in SEEDS for r in task.generate("test", 25, seed=s)]
    # The split is by problem (the multiset of numbers and the target), so prompts differ too.
    key = lambda r: (tuple(sorted(r["nums"])), r["answer"])  # noqa: E731
    assert not {key(r) for r in train} & {key(r) for r in test}
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}


@pytest.mark.parametrize("name", ["arithmetic", "countdown"])
def test_same_seed_gives_the_same_rows_and_another_seed_other_rows(name):
    task = get_task(name)
    for split in ("train", "test"):
        assert task.generate(split, 40, seed=7) == task.generate(split, 40, seed=7)
        assert task.generate(split, 40, seed=7) != task.generate(split, 40, seed=8)


@pytest.mark.parametrize("name", ["arithmetic", "countdown"])
def test_test_split_has_no_repeats_and_asking_for_more_keeps_the_first_rows(name):
    task = get_task(name)
    rows = task.generate("test", 30, seed=0)
    assert len({r["prompt"] for r in rows}) == 30
    assert task.generate("test", 60, seed=0)[:30] == rows
    assert task.generate("train", 60, seed=0)[:30] == task.generate("train", 30, seed=0)


def test_a_tiny_problem_space_runs_out_of_test_problems_with_a_clear_error():
    # 1-digit a+b has 100 problems; about 10% of them (8) hash into the test split.
    task = get_task("arithmetic", n_operands=2, digits=1, ops="+")
    assert len(task.generate("test", 8)) == 8
    with pytest.raises(R1kitError, match=r"could only generate 8 distinct test problems of the 9 asked"):
        task.generate("test", 9)


def test_unknown_split_is_an_error():
    with pytest.raises(R1kitError, match="unknown split 'valid'; choose train or test"):
        get_task("arithmetic").generate("valid", 3)


# -- arithmetic verification ---------------------------------------------------------------------------


@pytest.mark.parametrize("params", [{}, {"n_operands": [2, 4], "digits": 2, "ops": "+-*"}, {"n_operands": 3, "ops": "*"}, {"terse_fraction": 0.5}])
def test_every_arithmetic_cot_scores_1_and_its_answer_is_the_value_of_the_prompt(params):
    task = get_task("arithmetic", **params)
    rows = task.generate("train", 200, seed=0) + task.generate("test", 20, seed=0)
    assert task.reward([r["cot"] for r in rows], [r["answer"] for r in rows]) == [1.0] * len(rows)
    for r in rows:
        expression = r["prompt"].removesuffix("=?")
        value, _ = evaluate_equation(expression)  # ordinary precedence: * before + and -
        assert value == int(r["answer"]), r
        assert task.extract_answer(r["cot"]) == r["answer"]


def test_arithmetic_cot_writes_each_partial_result():
    task = ArithmeticTask(n_operands=3, digits=2, ops="+-")
    row = next(r for r in task.generate("train", 50, seed=0) if "+" in r["prompt"] and "-" in r["prompt"])
    think = row["cot"].split("<think>")[1].split("</think>")[0]
    steps = think.split(" ")
    assert len(steps) == 2  # 3 operands -> 2 partial results
    first_value = steps[0].split("=")[1]
    assert steps[1].startswith(first_value)
    assert steps[1].split("=")[1] == row["answer"]


def test_arithmetic_terse_fraction_mixes_one_step_and_worked_solutions_the_same_way_every_time():
    task = ArithmeticTask(n_operands=3, digits=1, ops="+", terse_fraction=0.3)
    rows = task.generate("train", 1000, seed=0)
    thinks = {r["prompt"]: r["cot"].split("<think>")[1].split("</think>")[0] for r in rows}
    terse = [p for p, t in thinks.items() if " " not in t]
    # 3+4+5=?  ->  terse `3+4+5=12`; worked `3+4=7 7+5=12`
    assert all(thinks[p] == f"{p.removesuffix('=?')}={task.extract_answer(thinks[p])}" for p in terse)
    assert 0.25 < len(terse) / len(thinks) < 0.35  # 1,000 draws over ~900 distinct problems
    # the style belongs to the problem, not to the draw: another seed agrees on shared problems
    again = {r["prompt"]: r["cot"] for r in task.generate("train", 300, seed=7)}
    assert all(again[p] == next(r["cot"] for r in rows if r["prompt"] == p) for p in again if p in thinks)
    assert all(" " in r["cot"] for r in ArithmeticTask(n_operands=3, digits=1, ops="+").generate("train", 100, seed=0))


def test_the_demo_corpus_is_unchanged_byte_for_byte():
    # The wordless corpus every cached base was pretrained on (the demo's base: 20,000 documents).
    docs = ArithmeticTask(n_operands=3, digits=1, ops="+").pretrain_documents(20000, seed=0, style_weights=[0.3, 0.1, 0.6])
    assert hashlib.sha256("\n".join(docs).encode()).hexdigest()[:16] == "5e4de6ac42415d5c"


def test_a_bilingual_corpus_words_every_worked_solution_in_one_language_or_switches_a_share():
    styles = [0.3, 0.1, 0.6]
    plain = ArithmeticTask(n_operands=3, digits=1, ops="+").pretrain_documents(2000, seed=0, style_weights=styles)
    task = ArithmeticTask(n_operands=3, digits=1, ops="+", languages=["en", "el"], code_switch=0.1)
    docs = task.pretrain_documents(2000, seed=0, style_weights=styles)
    style = lambda d: "bare" if d.split("A: ")[1].isdigit() else "tagged" if "<think>" in d else "untagged"  # noqa: E731
    assert [d.split("A: ")[0] for d in docs] == [d.split("A: ")[0] for d in plain]  # the same problems ...
    assert [style(d) for d in docs] == [style(d) for d in plain]  # ... in the same styles
    counts = {"en": 0, "el": 0, "switched": 0}
    for doc in (d for d in docs if style(d) != "bare"):
        prompt, response = doc.removeprefix("Q: ").split("\nA: ")
        answer = task.extract_answer(response)
        assert task.reward([response], [answer])[0] == 1.0 and answer == str(_left_to_right(prompt.removesuffix("=?")))
        words = re.sub(r"</?\w+>|[\d+=]", " ", response).split()  # `then`/`μετά` between the two steps, `so`/`άρα` before the answer
        assert len(words) == 2 and words[0] in ("then", "μετά") and words[1] in ("so", "άρα"), doc
        langs = {"then": "en", "so": "en", "μετά": "el", "άρα": "el"}
        counts[langs[words[0]] if langs[words[0]] == langs[words[1]] else "switched"] += 1
    worked = sum(counts.values())  # about 1,400: a share's sd is at most 0.014
    assert 0.06 < counts["switched"] / worked < 0.14 and 0.4 < counts["en"] / (counts["en"] + counts["el"]) < 0.6


def test_arithmetic_with_multiplication_after_a_sum_is_parenthesised():
    from r1kit.data.tasks.arithmetic import Problem

    assert Problem((2, 3, 4), ("+", "*")).expression == "(2+3)*4"
    assert Problem((2, 3, 4), ("+", "*")).value == 20
    assert Problem((2, 3, 4), ("*", "+")).expression == "2*3+4"
    assert Problem((2, 3, 4, 5), ("-", "*", "*")).expression == "(2-3)*4*5"
    assert Problem((2, 3, 4, 5, 6), ("+", "*", "-", "*")).expression == "((2+3)*4-5)*6"
    assert Problem((2, 3, 4, 5, 6), ("+", "*", "-", "*")).value == 90


@pytest.mark.parametrize(
    "completion, gold, reward",
    [
        ("<think>3+4=7</think><answer>7</answer>", "7", 1.0),
        ("<think>3+4=7</think><answer> 7 </answer>", "7", 1.0),
        ("<think>5-7=-2</think><answer>-2</answer>", "-2", 1.0),
        ("<answer>8</answer>", "7", 0.0),
        ("<answer>7 or 8</answer>", "7", 0.0),  # the tagged answer must be exactly one integer
        ("3+4 is 7", "7", 1.0),  # without tags, the last integer counts
        ("it is 7, no 8", "7", 0.0),
        ("no digits here", "7", 0.0),
        ("<answer>7</answer>", None, None),  # no gold answer: not applicable
        ("<answer>7</answer>", " ", None),
    ],
)
def test_arithmetic_reward_cases(completion, gold, reward):
    assert get_task("arithmetic").reward([completion], [gold]) == [reward]


def test_arithmetic_reward_accepts_chat_message_completions():
    chat = [[{"role": "assistant", "content": "<answer>12</answer>"}]]
    assert get_task("arithmetic").reward(chat, ["12"]) == [1.0]


@pytest.mark.parametrize(
    "text, answer",
    [
        ("<think>1+1=2</think><answer>2</answer>", "2"),
        ("<answer>1</answer> then <answer>-3</answer>", "-3"),  # the last block counts
        ("<answer>007</answer>", "7"),  # canonical integer form
        ("<answer>x</answer> 5", None),  # a tagged non-answer is not rescued by later text
        ("<answer>4 2</answer>", None),
        ("12 then 13", "13"),
        ("nothing", None),
    ],
)
def test_arithmetic_extract_answer(text, answer):
    assert get_task("arithmetic").extract_answer(text) == answer


# -- countdown verification -------------------------------------------------------------------------


def test_every_countdown_cot_scores_1():
    task = get_task("countdown")
    rows = task.generate("train", 200, seed=0) + task.generate("test", 20, seed=0)
    scores = task.reward([r["cot"] for r in rows], [r["answer"] for r in rows], nums=[r["nums"] for r in rows])
    assert scores == [1.0] * len(rows)


@pytest.mark.parametrize(
    "completion, reward",
    [
        ("<think>ok</think><answer>(3+4)*2</answer>", 1.0),
        ("<answer> 2 * (4 + 3) </answer>", 1.0),  # order and spaces do not matter
        ("<answer>(3+4)+2</answer>", 0.1),  # well-formed, uses each number once, wrong value (9)
        ("<answer>(3+3)+8</answer>", 0.1),  # value 14 but reuses 3 and invents 8
        ("<answer>(3+4)*2*1</answer>", 0.1),  # an extra number
        ("<answer>7*2</answer>", 0.1),  # 14, but does not use 3 and 4
        ("(3+4)*2", 0.0),  # no tags
        ("<answer>seven times two</answer>", 0.0),  # not an equation
        ("<answer>(3+4)*2=14</answer>", 0.0),
        ("<answer>3/(4-4)</answer>", 0.0),  # division by zero is not an equation
    ],
)
def test_countdown_reward_is_1_correct_01_wrong_equation_0_otherwise(completion, reward):
    assert get_task("countdown").reward([completion], ["14"], nums=[[3, 4, 2]]) == [reward]


def test_countdown_division_is_exact_not_floating_point():
    # 7 / 3 * 3 is exactly 7 over fractions; floats would give 7.000000000000001 or 6.999...
    assert get_task("countdown").reward(["<answer>7/3*3</answer>"], ["7"], nums=[[7, 3, 3]]) == [1.0]


def test_countdown_reward_without_nums_is_an_error():
    with pytest.raises(R1kitError, match="needs a `nums` column"):
        get_task("countdown").reward(["<answer>1+2</answer>"], ["3"])


@pytest.mark.parametrize(
    "text, answer",
    [
        ("<answer> (3 + 4) * 2 </answer>", "(3+4)*2"),
        ("<answer>1+2</answer><answer>3*1</answer>", "3*1"),
        ("(3+4)*2", None),
        ("<answer></answer>", None),
    ],
)
def test_countdown_extract_answer(text, answer):
    assert get_task("countdown").extract_answer(text) == answer


def test_evaluate_equation_returns_value_and_numbers_used():
    assert evaluate_equation("(15*12)+2") == (182, [15, 12, 2])
    assert evaluate_equation("__import__('os')") is None
    assert evaluate_equation("2**10") is None  # power is not one of + - * /


# -- parameters ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("arithmetic", {"n_operands": 1}, "n_operands must be >= 2"),
        ("arithmetic", {"n_operands": [3, 2]}, "n_operands must be >= 2"),
        ("arithmetic", {"digits": 0}, "digits >= 1"),
        ("arithmetic", {"ops": "/"}, "ops drawn from '\\+-\\*'"),
        ("arithmetic", {"ops": ""}, "ops drawn from"),
        ("arithmetic", {"terse_fraction": 1.5}, "terse_fraction must be in \\[0, 1\\]"),
        ("arithmetic", {"languages": ["en", "fr"]}, "languages must be drawn from \\['el', 'en'\\]"),
        ("arithmetic", {"languages": "en"}, "languages must be drawn from"),
        ("arithmetic", {"languages": ["en"], "code_switch": 0.1}, "two or more languages"),
        ("arithmetic", {"languages": ["en", "el"], "code_switch": 1.5}, "code_switch in \\[0, 1\\]"),
        ("countdown", {"n_numbers": 1}, "n_numbers >= 2"),
        ("countdown", {"max_number": 1}, "max_number >= 2"),
        ("countdown", {"ops": "^"}, "ops drawn from"),
    ],
)
def test_bad_task_params_are_an_error(name, params, message):
    with pytest.raises(R1kitError, match=message):
        get_task(name, **params)
    with pytest.raises(R1kitError, match=message):
        TASKS[name].generate("train", 3, **params)


def test_misspelt_task_param_is_an_error_listing_the_valid_ones():
    with pytest.raises(R1kitError, match=r"n_operand.*task 'arithmetic'.*n_operands, digits, ops"):
        get_task("arithmetic", n_operand=2)


def test_task_param_of_the_wrong_type_is_an_error_not_a_type_error():
    with pytest.raises(R1kitError, match="task 'arithmetic'"):
        get_task("arithmetic", digits="two")


def test_unknown_task_is_an_error_listing_the_tasks():
    with pytest.raises(R1kitError, match=r"unknown task 'arithmetik'; built-in tasks are \[.*'arithmetic', .*'countdown'.*\]") as e:
        get_task("arithmetik")
    assert "data.path" in str(e.value)


def test_get_task_without_params_returns_the_default_instance_and_with_params_a_new_one():
    assert get_task("arithmetic") is TASKS["arithmetic"]
    task = get_task("countdown", n_numbers=4)
    assert isinstance(task, CountdownTask) and task.n_numbers == 4
    assert all(len(r["nums"]) == 4 for r in task.generate("train", 10))


def test_arithmetic_strict_reward_counts_only_tagged_answers():
    from r1kit.data.tasks import get_task

    task = get_task("arithmetic")
    completions = ["<think>2+3=5</think><answer>5</answer>", "2+3=5. So 5", "<answer>6</answer>"]
    assert task.reward(completions, ["5", "5", "5"]) == [1.0, 1.0, 0.0]
    assert task.reward(completions, ["5", "5", "5"], strict=True) == [1.0, 0.0, 0.0]
