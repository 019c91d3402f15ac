"""The `code` reward: extraction of the final program, scoring, metrics, and the refusal to run
without bubblewrap unless the user opts in to unsafe execution."""

import pytest

from r1kit.errors import R1kitError
from r1kit.rewards.code import code_reward, extract_code
from r1kit.sandbox import UnsafeCodeExecutionWarning, isolation
from r1kit.sandbox.isolation import sandbox_problem

needs_bwrap = pytest.mark.skipif(sandbox_problem() is not None, reason=f"no bubblewrap sandbox: {sandbox_problem()}")

SQUARE = "def square(x):\n    return x * x\n"
TESTS = ["assert square(2) == 4", "assert square(-3) == 9", "assert square(0) == 0", "assert square(5) == 25"]


def test_extracts_the_last_python_block_after_thinking():
    text = (
        "<think>draft:\n```python\ndef square(x):\n    return 0\n```</think>\n"
        "Here it is:\n```python\ndef square(x):\n    return x + x\n```\nand finally\n```py\n" + SQUARE + "```"
    )
    assert extract_code(text) == SQUARE


def test_extraction_falls_back_to_untagged_block_then_answer_tag():
    assert extract_code("```\n" + SQUARE + "```\n```cpp\nint main() {}\n```") == SQUARE
    assert extract_code("<think>hm</think><answer>" + SQUARE + "</answer>") == SQUARE
    assert extract_code("<answer>\n" + SQUARE) == SQUARE  # rollout stopped on </answer>
    assert extract_code("<think>```python\nx = 1\n```</think> no code here") is None
    assert extract_code("just words") is None


@needs_bwrap
def test_scores_fraction_passed_with_status_and_no_code_metrics():
    completions = [
        "```python\n" + SQUARE + "```",
        "```python\ndef square(x):\n    return abs(x) * 2 if x > 0 else x * x\n```",  # passes 3 of 4: 0, -3, 2 ok
        "I don't know.",
        [{"role": "assistant", "content": "```python\nwhile True:\n    pass\n```"}],
        "```python\n" + SQUARE + "```",
    ]
    tests = [TESTS, TESTS, TESTS, TESTS[:1], None]
    metrics = {}
    scores = code_reward(completions, tests, timeout_s=1.0, metrics=metrics)
    assert scores == [1.0, 0.75, 0.0, 0.0, None]
    assert metrics == {"status/ok": 1, "status/failed": 1, "no_code": 1, "status/timeout": 1}


@needs_bwrap
def test_all_or_nothing_gives_one_or_zero():
    completions = ["```python\n" + SQUARE + "```", "```python\ndef square(x):\n    return 4\n```"]
    assert code_reward(completions, [TESTS, TESTS], all_or_nothing=True) == [1.0, 0.0]


@needs_bwrap
def test_stdio_rows_and_json_encoded_tests():
    code = "```python\nn = int(input())\nprint(n * n)\n```"
    tests = ['{"inputs": ["3\\n", "4\\n"], "outputs": ["9\\n", "16\\n"]}', [{"input": "5", "output": "24"}]]
    assert code_reward([code, code], tests) == [1.0, 0.0]


def test_missing_tests_column_and_malformed_row_are_clear_errors():
    with pytest.raises(R1kitError, match="needs a `tests` column"):
        code_reward(["x"])
    with pytest.raises(R1kitError, match="row 1 of the `tests` column: test is not valid Python"):
        code_reward(["```python\nx = 1\n```"] * 2, [["assert x == 1"], ["assert x =="]])


def test_missing_bwrap_refuses_naming_the_bubblewrap_package(monkeypatch):
    monkeypatch.delenv(isolation.UNSAFE_ENV, raising=False)
    monkeypatch.setattr(isolation, "find_bwrap", lambda: None)
    with pytest.raises(R1kitError, match=r"bwrap` was not found.*apt-get install -y bubblewrap.*R1KIT_UNSAFE_CODE_EXEC=1"):
        code_reward(["```python\n" + SQUARE + "```"], [TESTS])
    from r1kit.sandbox import run_python

    r = run_python(SQUARE, TESTS)
    assert (r.status, r.passed, r.total) == ("sandbox_unavailable", 0, 4) and "bubblewrap" in r.stderr


def test_bwrap_that_cannot_start_refuses_too(monkeypatch):
    monkeypatch.delenv(isolation.UNSAFE_ENV, raising=False)
    monkeypatch.setattr(isolation, "find_bwrap", lambda: "/nonexistent/bwrap")
    with pytest.raises(R1kitError, match="bubblewrap"):
        code_reward(["```python\n" + SQUARE + "```"], [TESTS])


def test_unsafe_opt_in_runs_without_bwrap_and_warns_on_every_call(monkeypatch):
    monkeypatch.setattr(isolation, "find_bwrap", lambda: None)
    monkeypatch.setenv(isolation.UNSAFE_ENV, "1")
    completions = ["```python\n" + SQUARE + "```", "```python\ndef square(x):\n    return 4\n```"]
    with pytest.warns(UnsafeCodeExecutionWarning) as record:
        assert code_reward(completions, [TESTS, TESTS]) == [1.0, 0.25]
        assert code_reward(completions[:1], [TESTS[:1]]) == [1.0]
    assert len([w for w in record if issubclass(w.category, UnsafeCodeExecutionWarning)]) == 2
    monkeypatch.delenv(isolation.UNSAFE_ENV)
    with pytest.warns(UnsafeCodeExecutionWarning):  # the argument is the other way to opt in
        assert code_reward(completions[:1], [TESTS[:1]], unsafe=True) == [1.0]
