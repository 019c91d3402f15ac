"""Per-step labels for process reward models: the arithmetic task's step checker, Math-Shepherd
labels from a scripted policy, and step-labelled JSONL files."""

import json

import pytest

from r1kit.data.step_labels import checker_labels, load_labelled_steps, shepherd_labels
from r1kit.data.tasks.arithmetic import TASK
from r1kit.errors import R1kitError

ROW = {"prompt": "7+8+6=?", "answer": "21"}
RIGHT = "15+6=21</think><answer>21</answer>"
WRONG = "15+6=20</think><answer>20</answer>"


class ScriptedPolicy:
    """Returns fixed completions per prefix and records what it was asked."""

    def __init__(self, script):
        self.script, self.asked = script, []

    def complete(self, prompts, prefixes, n):
        self.asked.extend(zip(prompts, prefixes))
        return [self.script[p][:n] for p in prefixes]


def test_arithmetic_step_checker_marks_the_first_slip_and_everything_after():
    steps = [["<think>7+8=15", RIGHT], ["<think>7+8=16", "16+6=22</think><answer>22</answer>"], ["<think>7+8=15", WRONG],
             ["<think>7+8+6=21</think><answer>21</answer>"], ["<think>8+6=14", "14+7=21</think><answer>21</answer>"]]  # fmt: skip
    assert checker_labels(TASK.check_steps, [ROW] * 5, steps) == [[1, 1], [0, 0], [1, 0], [1], [0, 0]]


def test_math_shepherd_labels_from_a_scripted_policy():
    solutions = [["<think>7+8=15", "15+6=20</think>", "<answer>20</answer>"], ["<think>7+8=15", RIGHT]]
    script = {
        # From "<think>7+8=15 ": 3 of 4 completions reach 21.
        "<think>7+8=15 ": [RIGHT, RIGHT, WRONG, RIGHT],
        # From the slip, nothing reaches 21.
        "<think>7+8=15 15+6=20</think> ": ["<answer>20</answer>"] * 3 + ["<answer>19</answer>"],
    }
    policy = ScriptedPolicy(script)
    soft = shepherd_labels(policy, TASK.reward, [ROW, ROW], solutions, " ", n=4, mode="soft")
    # Solution 0: step 1 -> 3/4; step 2 -> 0/4; step 3 is the last: the solution itself (20) is wrong.
    # Solution 1: step 1 -> 3/4 (the same prefix); the last step: the solution is right.
    assert soft == [[0.75, 0.0, 0.0], [0.75, 1.0]]
    # The last steps are verified without asking the policy; the others once per solution.
    assert [p for _, p in policy.asked] == ["<think>7+8=15 ", "<think>7+8=15 15+6=20</think> ", "<think>7+8=15 "]
    assert {q for q, _ in policy.asked} == {"7+8+6=?"}
    hard = shepherd_labels(ScriptedPolicy(script), TASK.reward, [ROW, ROW], solutions, " ", n=4, mode="hard")
    assert hard == [[1.0, 0.0, 0.0], [1.0, 1.0]]
    # n=2 takes the first two completions: RIGHT, RIGHT -> 1.0
    assert shepherd_labels(ScriptedPolicy(script), TASK.reward, [ROW], solutions[:1], " ", n=2)[0] == [1.0, 0.0, 0.0]


def test_shepherd_refuses_a_policy_that_returns_too_few_completions():
    with pytest.raises(R1kitError, match="n=4"):
        shepherd_labels(ScriptedPolicy({"a ": ["x"]}), TASK.reward, [ROW], [["a", "b"]], " ", n=4)


def test_labelled_steps_file(tmp_path):
    path = tmp_path / "steps.jsonl"
    path.write_text(json.dumps({"prompt": "1+1=?", "steps": ["1+1=2", "so 2"], "labels": [True, 0.5]}) + "\n")
    assert load_labelled_steps(path)[0]["labels"] == [1.0, 0.5]
    path.write_text(json.dumps({"prompt": "1+1=?", "steps": ["1+1=2"], "labels": [1, 0]}) + "\n")
    with pytest.raises(R1kitError, match="row 1.*same length"):
        load_labelled_steps(path)
    path.write_text(json.dumps({"prompt": "1+1=?", "steps": ["1+1=2"], "labels": [2]}) + "\n")
    with pytest.raises(R1kitError, match=r"\[0, 1\]"):
        load_labelled_steps(path)
