"""The reward registry: built-in names, dotted paths to user functions, the model: hook, errors."""

import sys

import pytest

import r1kit.rewards as rewards
from r1kit.errors import R1kitError
from r1kit.rewards import REWARDS, get


def shout_reward(completions, **columns):
    """A user's own reward function, loaded by dotted path in the tests below."""
    return [float(c.isupper()) for c in completions]


class Holder:
    @staticmethod
    def nested(completions, **columns):
        return [0.5] * len(completions)


@pytest.mark.parametrize(
    "name, fn",
    [
        ("math", rewards.math_reward),
        ("format", rewards.format_reward),
        ("tag_count", rewards.tag_count_reward),
        ("language", rewards.language_reward),
        ("overlong", rewards.overlong_reward),
        ("cosine", rewards.cosine_reward),
        ("repetition", rewards.repetition_reward),
    ],
)
def test_builtin_names_resolve_to_their_functions(name, fn):
    assert get(name) is fn
    assert REWARDS[name] is fn


def test_builtin_reward_scores_through_get():
    assert get("format")(["<think>a</think><answer>1</answer>"]) == [1.0]


def test_dotted_path_loads_a_user_function():
    assert get(f"{__name__}:shout_reward") is shout_reward
    assert get(f"{__name__}:Holder.nested")(["a", "b"]) == [0.5, 0.5]


@pytest.mark.parametrize(
    "name, message",
    [
        ("no_such_reward", "valid names are .*math.*package.module:function"),
        ("no_such_package_xyz.mod:fn", "cannot import module 'no_such_package_xyz.mod'"),
        (f"{__name__}:missing_fn", "has no 'missing_fn'"),
        (f"{__name__}:pytest", "is not a function"),
    ],
)
def test_bad_names_are_user_errors(name, message):
    with pytest.raises(R1kitError, match=message):
        get(name)


def test_model_prefix_calls_the_reward_model_hook(monkeypatch):
    module = type(sys)("r1kit.rewards.model")
    module.load_reward_model_fn = lambda path: (lambda completions, **columns: [len(path)] * len(completions))
    monkeypatch.setitem(sys.modules, "r1kit.rewards.model", module)
    assert get("model:runs/rm")(["x"]) == [7]


def test_model_prefix_without_the_module_is_a_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "r1kit.rewards.model", None)  # import fails with ModuleNotFoundError
    with pytest.raises(R1kitError, match="reward-model"):
        get("model:runs/rm")


def test_task_rewards_are_registered_on_first_access():
    tasks = pytest.importorskip("r1kit.data.tasks")
    if not hasattr(tasks, "TASKS"):
        pytest.skip("built-in tasks not available yet")
    for name, task in tasks.TASKS.items():
        assert name in REWARDS
        if name != "code":  # the code *reward* (sandbox) keeps its name
            assert get(name) == task.reward


def test_code_reward_is_the_sandbox_reward_when_available():
    code = pytest.importorskip("r1kit.rewards.code")
    assert get("code") is code.code_reward
