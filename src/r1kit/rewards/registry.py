"""Reward names used in configs, mapped to functions through one explicit dict.

`REWARDS` holds the built-in rewards. `get(name)` resolves a config string:

- a name in `REWARDS` (`math`, `code`, `format`, `tag_count`, `language`, `overlong`, `cosine`,
  `repetition`, and one per built-in task: `arithmetic`, `countdown`, ...);
- `package.module:function`: a user's own reward function, imported from the Python path;
- `model:PATH`: a trained reward model used as a reward function. This is a hook:
  `r1kit.rewards.model.load_reward_model_fn(PATH)` builds the function (the module is imported
  only when such a name is asked for, so rewards work without it).
- `prm:PATH`: a trained process reward model (`r1kit prm`) as an outcome reward, its weakest
  step's probability (`r1kit.rewards.prm.load_prm_reward_fn`); GRPO and PPO give step rewards from it.

Some entries are filled in on first read of `REWARDS` (or first `get`) rather than at import, so
that `import r1kit.rewards` stays light: the `code` reward (it brings the sandbox) and the task
rewards (`r1kit.data.tasks.TASKS`). If `code` cannot be imported, the other rewards still work and
asking for `code` says why. A task named like a built-in reward (the `code` task) does not replace
it: the explicit entry wins.
"""

from __future__ import annotations

import importlib
import logging
import threading
from functools import reduce
from typing import Any

from r1kit.errors import R1kitError
from r1kit.rewards import length
from r1kit.rewards.base import RewardFn
from r1kit.rewards.format import format_reward, tag_count_reward
from r1kit.rewards.language import language_reward
from r1kit.rewards.length import cosine_reward, overlong_reward, repetition_reward
from r1kit.rewards.math import math_reward

logger = logging.getLogger(__name__)

MODEL_PREFIX = "model:"
PRM_PREFIX = "prm:"


class _Rewards(dict):
    """A dict that adds the lazily imported rewards the first time it is read."""

    def __init__(self, eager: dict[str, RewardFn]):
        super().__init__(eager)
        self._loaded = False
        self._lock = threading.RLock()  # reentrant: a task module may read REWARDS on import
        self.unavailable: dict[str, str] = {}  # name -> why it could not be imported

    def _load(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if not self._loaded:
                self._load_lazy_entries()
                self._loaded = True

    def _load_lazy_entries(self) -> None:
        try:
            from r1kit.rewards.code import code_reward

            dict.setdefault(self, "code", code_reward)
        except ImportError as error:
            self.unavailable["code"] = f"r1kit.rewards.code could not be imported ({error})"
        try:
            from r1kit.data.tasks import TASKS
        except ImportError as error:  # the tasks package is optional to the rewards
            logger.debug("no built-in task rewards: %s", error)
            return
        for name, task in TASKS.items():
            dict.setdefault(self, name, task.reward)

    def __getitem__(self, key: str) -> RewardFn:
        self._load()
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self._load()
        return super().__contains__(key)

    def __iter__(self):
        self._load()
        return super().__iter__()

    def __len__(self) -> int:
        self._load()
        return super().__len__()

    def __repr__(self) -> str:
        self._load()
        return super().__repr__()

    def get(self, key: str, default: Any = None) -> Any:
        self._load()
        return super().get(key, default)

    def keys(self):
        self._load()
        return super().keys()

    def values(self):
        self._load()
        return super().values()

    def items(self):
        self._load()
        return super().items()


REWARDS: dict[str, RewardFn] = _Rewards(
    {
        "math": math_reward,
        "format": format_reward,
        "tag_count": tag_count_reward,
        "language": language_reward,
        "overlong": overlong_reward,
        "cosine": cosine_reward,
        "repetition": repetition_reward,
    }
)


def get(name: str) -> RewardFn:
    """The reward function for a config name, a `package.module:function` path, `model:PATH` or `prm:PATH`."""
    if name.startswith(MODEL_PREFIX):
        return _reward_model(name[len(MODEL_PREFIX) :])
    if name.startswith(PRM_PREFIX):
        from r1kit.rewards.prm import load_prm_reward_fn

        return load_prm_reward_fn(name[len(PRM_PREFIX) :])
    if ":" in name:
        return _import_function(name)
    if name in REWARDS:
        return REWARDS[name]
    unavailable = getattr(REWARDS, "unavailable", {})
    if name in unavailable:
        raise R1kitError(
            f"the {name!r} reward is not available: {unavailable[name]}; fix that import or drop the reward."
        )
    raise R1kitError(
        f"unknown reward {name!r}; valid names are {', '.join(sorted(REWARDS))}, or a dotted path "
        f"'package.module:function' to your own function, or '{MODEL_PREFIX}PATH' for a trained reward model."
    )


length.RESOLVE_VERIFIER = get  # the cosine reward's verifier, by name (see there)


def _import_function(path: str) -> RewardFn:
    """The function at `package.module:function` (`function` may be `Class.attribute`)."""
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise R1kitError(
            f"cannot import module {module_name!r} for reward {path!r} ({error}); "
            f"check the spelling and that the module is on the Python path."
        ) from error
    try:
        fn = reduce(getattr, attribute.split("."), module)
    except AttributeError as error:
        raise R1kitError(
            f"module {module_name!r} has no {attribute!r} for reward {path!r}; check the function name."
        ) from error
    if not callable(fn):
        raise R1kitError(f"reward {path!r} is not a function; point it at fn(completions, **columns).")
    return fn


def _reward_model(path: str) -> RewardFn:
    """Hook for `model:PATH`: a learned reward model scoring completions as a reward function."""
    try:
        module = importlib.import_module("r1kit.rewards.model")
    except ModuleNotFoundError as error:
        if error.name != "r1kit.rewards.model":
            raise
        raise R1kitError(
            f"reward 'model:{path}' needs the reward-model module r1kit.rewards.model, which this "
            f"install lacks; update r1kit or use a rule-based reward."
        ) from error
    return module.load_reward_model_fn(path)
