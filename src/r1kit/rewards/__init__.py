"""Reward functions for RL with verifiable rewards, their registry and their composition.

A reward function is `fn(completions, **columns) -> list[float | None]` (TRL's signature; see
`r1kit.rewards.base`). `REWARDS` maps config names to the built-in ones, `get(name)` also loads
`package.module:function` and `model:PATH`, and `RewardComposer` turns a config's list of specs
into one weighted reward per completion with per-function metrics.
"""

from r1kit.rewards.base import Completion, RewardFn, completion_text
from r1kit.rewards.compose import RewardComposer, RewardResult, RewardSpec
from r1kit.rewards.format import format_reward, tag_count_reward
from r1kit.rewards.language import language_reward
from r1kit.rewards.length import cosine_reward, overlong_reward, repetition_reward
from r1kit.rewards.math import math_reward
from r1kit.rewards.registry import REWARDS, get

__all__ = [
    "REWARDS",
    "Completion",
    "RewardComposer",
    "RewardFn",
    "RewardResult",
    "RewardSpec",
    "completion_text",
    "cosine_reward",
    "format_reward",
    "get",
    "language_reward",
    "math_reward",
    "overlong_reward",
    "repetition_reward",
    "tag_count_reward",
]
