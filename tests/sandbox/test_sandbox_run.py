"""run_python / run_many on honest programs: correct code passes, wrong code fails with the right
counts, stdio tests compare stdout, limits and statuses are what the docs say."""


import pytest

from r1kit.errors import R1kitError
from r1kit.sandbox import run_many, run_python
from r1kit.sandbox.isolation import sandbox_problem

needs_bwrap = pytest.mark.skipif(sandbox_problem() is not None, reason=f"no bubblewrap sandbox: {sandbox_problem()}")

pytestmark = needs_bwrap

ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = ["assert add(2, 3) == 5", "assert add(-1, 1) == 0", "assert add('a', 'b') == 'ab'"]


def test_correct_code_passes_every_test():
    r = run_python(ADD, ADD_TESTS)
    assert (r.passed, r.total, r.status) == (3, 3, "ok")
    assert r.test_status == ("ok", "ok", "ok")
    assert r.fraction == 1.0


def test_wrong_code_fails_with_counts_and_a_note_naming_the_values():
    r = run_python("def add(a, b):\n    return a - b if a == 2 else a + b\n", ADD_TESTS)
    assert (r.passed, r.total, r.status) == (2, 3, "failed")
    assert r.test_status == ("failed", "ok", "ok")
    assert "got -1, expected 5" in r.stderr


def test_assert_tests_with_setup_and_non_literal_comparisons_run_as_written():
    code = "def rev(xs):\n    return xs[::-1]\n"
    tests = [
        "xs = [1, 2, 3]\nassert rev(xs) == [3, 2, 1]\nassert rev(rev(xs)) == xs",
        "for n in range(5):\n    assert rev(list(range(n))) == list(range(n))[::-1]",
        "assert rev([1, 2]) == [1, 2]",
    ]
    r = run_python(code, tests)
    assert r.test_status == ("ok", "ok", "failed")


def test_stdio_tests_compare_stdout_ignoring_trailing_whitespace():
    code = "a, b = map(int, input().split())\nprint(a + b)\nprint()\n"
    tests = [{"input": "1 2\n", "output": "3"}, {"input": "5 5", "output": "10  \n\n"}, {"input": "2 2", "output": "5"}]
    r = run_python(code, tests)
    assert r.test_status == ("ok", "ok", "failed")
    assert r.stdout.startswith("4")


def test_stdio_program_may_exit_zero_but_not_nonzero():
    tests = [{"input": "", "output": "hi"}]
    assert run_python("import sys\nprint('hi')\nsys.exit(0)", tests).status == "ok"
    assert run_python("print('hi')\nexit()", tests).status == "ok"
    assert run_python("import sys\nprint('hi')\nsys.exit(3)", tests).status == "error"


def test_stdio_column_shape_of_code_datasets_is_accepted():
    tests = {"inputs": ["3\n", "4\n"], "outputs": ["9\n", "16\n"]}
    assert run_python("n = int(input())\nprint(n * n)", tests).passed == 2


def test_syntax_error_is_reported_once_and_skips_the_rest():
    r = run_python("def add(a, b) return a", ADD_TESTS)
    assert r.status == "syntax_error"
    assert r.test_status == ("syntax_error", "skipped", "skipped")
    assert "SyntaxError" in r.stderr


def test_runtime_error_status_and_message():
    r = run_python("def add(a, b):\n    return undefined_name\n", ADD_TESTS[:1])
    assert r.status == "error" and "NameError" in r.stderr


def test_stop_on_failure_skips_after_the_first_failure():
    r = run_python("def add(a, b):\n    return 0\n", ADD_TESTS, stop_on_failure=True)
    assert r.test_status == ("failed", "skipped", "skipped")


def test_no_tests_runs_the_program_once():
    assert run_python("x = 1", []).status == "ok"
    assert run_python("raise ValueError('boom')", []).status == "error"


def test_common_standard_library_works_inside_the_sandbox():
    code = (
        "import collections, dataclasses, enum, functools, heapq, itertools, json, logging, math, random, re, typing\n"
        "P = collections.namedtuple('P', 'x y', defaults=[0])\n"
        "class N(typing.NamedTuple):\n    a: int\n"
        "@dataclasses.dataclass\nclass D:\n    x: int\n"
        "class E(enum.Enum):\n    A = 1\n"
        "@functools.lru_cache(None)\ndef fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n"
        "import sys, threading\nsys.setrecursionlimit(10000)\n"
        "def depth(n):\n    return 0 if n == 0 else 1 + depth(n - 1)\n"
    )
    test = "assert (P(1).y, N(2).a, D(3).x, E.A.value, fib(80), depth(5000)) == (0, 2, 3, 1, 23416728348467685, 5000)"
    r = run_python(code, test)
    assert r.status == "ok", r.stderr


def test_values_are_compared_as_plain_python_values():
    code = (
        "import collections\nP = collections.namedtuple('P', 'x y')\n"
        "def point():\n    return P(1, 2)\n"
        "def inf():\n    return float('inf')\n"
        "def mixed():\n    return {'a': {1, 2}, 'b': (1.5, None, b'x')}\n"
    )
    tests = ["assert point() == (1, 2)", "assert inf() == 1e999", "assert mixed() == {'b': (1.5, None, b'x'), 'a': {2, 1}}"]
    assert run_python(code, tests).test_status == ("ok", "ok", "ok")


def test_unknown_limit_is_one_clear_error():
    with pytest.raises(R1kitError, match="unknown sandbox limit 'memroy_mb'"):
        run_python(ADD, ADD_TESTS, memroy_mb=10)


def test_malformed_test_is_one_clear_error():
    with pytest.raises(R1kitError, match="not valid Python"):
        run_python(ADD, "assert add(1, 2) ==")


def test_run_many_keeps_input_order_and_runs_in_parallel():
    # Each program prints when its 0.4 s sleep began and ended (the host's clock): run one after the
    # other, no two sleeps would overlap; in parallel, each overlaps another.
    programs = [f"import time\nstart = time.time()\ntime.sleep(0.4)\nprint(start, time.time())\ndef f():\n    return {i}\n" for i in range(4)]
    tests = [[f"assert f() == {i}"] for i in range(4)]
    results = run_many(programs, tests, workers=4)
    assert [r.passed for r in results] == [1, 1, 1, 1]
    spans = [tuple(map(float, r.stdout.split())) for r in results]
    assert all(any(a < stop and b < end for j, (b, stop) in enumerate(spans) if j != i) for i, (a, end) in enumerate(spans))


def test_run_many_rejects_mismatched_lengths():
    with pytest.raises(R1kitError, match="2 programs but 1 test lists"):
        run_many(["x = 1", "x = 2"], [["assert x == 1"]])
