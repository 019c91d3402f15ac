"""The built-in code task: every reference solution passes its hidden tests in the sandbox, the
splits are disjoint and reproducible, and the task's reward is the code reward."""

import pytest

from r1kit.data.tasks.code import PROBLEMS, SPLITS, TASK, CodeTask
from r1kit.errors import R1kitError
from r1kit.sandbox import run_many
from r1kit.sandbox.isolation import sandbox_problem
from r1kit.sandbox.spec import parse_tests

needs_bwrap = pytest.mark.skipif(sandbox_problem() is not None, reason=f"no bubblewrap sandbox: {sandbox_problem()}")


def test_thirty_two_problems_with_host_checked_tests_only():
    assert len(PROBLEMS) == 32 and len({p.name for p in PROBLEMS}) == 32
    for p in PROBLEMS:
        specs = parse_tests(list(p.tests))
        assert all(len(s.expected) >= 1 for s in specs), p.name  # every assert hides its literal
        assert p.name in p.prompt and p.example in p.prompt


@needs_bwrap
def test_every_reference_solution_passes_and_a_stub_passes_none():
    results = run_many([p.solution for p in PROBLEMS], [list(p.tests) for p in PROBLEMS])
    assert [r.status for r in results] == ["ok"] * len(PROBLEMS), [(p.name, r.stderr) for p, r in zip(PROBLEMS, results) if r.status != "ok"]
    stubs = [f"def {p.name}(*args):\n    return None\n" for p in PROBLEMS]
    stub_results = run_many(stubs, [list(p.tests) for p in PROBLEMS], stop_on_failure=True)
    assert sum(r.passed for r in stub_results) <= 2  # second_largest's None cases only


def test_splits_are_disjoint_fixed_and_seed_only_orders():
    train, test = {p.name for p in SPLITS["train"]}, {p.name for p in SPLITS["test"]}
    assert len(train) == 24 and len(test) == 8 and not train & test
    for seed in range(5):
        assert {r["entry_point"] for r in TASK.generate("train", 60, seed)} == train
        assert {r["entry_point"] for r in TASK.generate("test", 8, seed)} == test
    assert TASK.generate("train", 10, 1) == TASK.generate("train", 10, 1)
    assert TASK.generate("train", 10, 1) != TASK.generate("train", 10, 2)
    row = TASK.generate("test", 1, 0)[0]
    assert set(row) == {"prompt", "answer", "tests", "entry_point"}


def test_bad_requests_are_clear_errors():
    with pytest.raises(R1kitError, match="at most 8 test rows"):
        TASK.generate("test", 9, 0)
    with pytest.raises(R1kitError, match="unknown split"):
        TASK.generate("valid", 1, 0)
    with pytest.raises(R1kitError, match="timeout_s"):
        CodeTask(timeout_s=0)


@needs_bwrap
def test_task_reward_and_extract_answer():
    rows = TASK.generate("train", 2, 0)
    good = "<think>easy</think>\n```python\n" + rows[0]["answer"] + "```"
    metrics = {}
    scores = TASK.reward([good, "no idea"], [r["answer"] for r in rows], tests=[r["tests"] for r in rows], metrics=metrics)
    assert scores == [1.0, 0.0] and metrics == {"status/ok": 1, "no_code": 1}
    assert TASK.extract_answer(good) == rows[0]["answer"].strip()
    assert CodeTask(all_or_nothing=True).all_or_nothing
