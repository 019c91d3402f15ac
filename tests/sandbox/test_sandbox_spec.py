"""Host-side test specs (no sandbox needed): which asserts are split, what the sandbox sees, and how
reported values and stdout are compared."""

import pytest

from r1kit.errors import R1kitError
from r1kit.sandbox.spec import AssertTest, StdioTest, parse_tests, parse_value, split_asserts, stdout_matches, value_mismatch


def test_literal_side_of_top_level_equality_asserts_never_reaches_the_sandbox():
    t = split_asserts("x = 3\nassert f(x) == [1, 2]\nassert 'secret' == g(1)\nassert f(1) == y\nassert h()")
    assert t.expected == ([1, 2], "secret")
    assert "[1, 2]" not in t.source and "secret" not in t.source
    assert "__r1kit_check__(0, f(x))" in t.source and "__r1kit_check__(1, g(1))" in t.source
    assert "assert f(1) == y" in t.source and "assert h()" in t.source  # not splittable: run as written


def test_nested_and_compound_asserts_are_left_alone():
    source = "def check(f):\n    assert f(1) == 2\nfor i in range(3):\n    assert f(i) == i\nassert f(0) == 0 or False\nassert 1 == 1"
    assert split_asserts(source) == AssertTest(source)


def test_values_must_be_reported_exactly_once_and_equal():
    t = AssertTest("...", (5, "a"))
    assert value_mismatch(t, {0: ["5"], 1: ["'a'"]}) is None
    assert "expected 5" in value_mismatch(t, {0: ["6"], 1: ["'a'"]})
    assert "reported 0 times" in value_mismatch(t, {0: ["5"]})
    assert "reported 2 times" in value_mismatch(t, {0: ["5", "5"], 1: ["'a'"]})
    assert value_mismatch(t, {0: ["5"], 1: ["'a'"], 2: ["1"]}) is not None
    assert "not a built-in type" in value_mismatch(t, {0: ["!unrepresentable"], 1: ["'a'"]})
    assert value_mismatch(t, {0: ["__import__('os')"], 1: ["'a'"]}) is not None  # never evaluated


def test_reported_values_parse_like_python_literals_including_non_finite_floats():
    assert parse_value("[inf, -inf, (1+2j), {1, 2}, set(), None, b'x']") == [float("inf"), float("-inf"), 1 + 2j, {1, 2}, set(), None, b"x"]
    nan = parse_value("nan")
    assert nan != nan


def test_stdout_comparison_ignores_trailing_whitespace_only():
    assert stdout_matches("1 2  \n3\n\n\n", "1 2\n3")
    assert stdout_matches("a\r\nb\r\n", "a\nb\n")
    assert not stdout_matches("1  2\n", "1 2\n")
    assert not stdout_matches("\n1\n", "1\n")


def test_accepted_test_shapes():
    assert parse_tests(None) == [] and parse_tests("") == [] and parse_tests([]) == []
    assert parse_tests({"input": "1", "output": "2"}) == [StdioTest("1", "2")]
    assert parse_tests([{"input": ["a", "b"], "output": 3}]) == [StdioTest("a\nb", "3")]
    assert parse_tests('{"inputs": ["1", "2"], "outputs": ["3", "4"]}') == [StdioTest("1", "3"), StdioTest("2", "4")]
    assert parse_tests('["assert f() == 1", "assert g()"]')[1] == AssertTest("assert g()")
    assert parse_tests("assert f() == 1") == [AssertTest("__r1kit_check__(0, f())", (1,))]


@pytest.mark.parametrize(
    "bad, message",
    [
        ("assert f(", "not valid Python"),
        ({"inputs": ["1"], "outputs": []}, "1 inputs but 0 outputs"),
        ({"inputs": [[1]], "outputs": [2], "fn_name": "f"}, "call-based tests"),
        ({"stdin": "1"}, "needs the keys `input` and `output`"),
        ([3], "got int"),
        (3.5, "got float"),
    ],
)
def test_malformed_tests_are_one_clear_error(bad, message):
    with pytest.raises(R1kitError, match=message):
        parse_tests(bad)
