"""The name under which a transformers model's forward takes, and returns, its KV cache.

transformers 5.25 renamed the forward's `past_key_values` argument, and the output field of the
same name, to `cache`; the old names still work with a deprecation warning until their removal
(announced for 5.40). Passing `past_key_values=` to a 5.25 forward that only declares `cache` by
name is the deprecated path, and a check for "past_key_values" in the forward's signature fails
there outright. So r1kit asks the model which name it declares and uses that one, on every version.
"""

from __future__ import annotations

import inspect

import torch

CACHE_NAMES = ("cache", "past_key_values")
"""The names transformers has given the KV cache argument, newest first."""


def cache_argument(forward_parameters: set[str] | dict) -> str | None:
    """The KV cache's keyword among a forward's parameter names, or None if it takes no cache."""
    return next((name for name in CACHE_NAMES if name in forward_parameters), None)


def model_cache_argument(model: torch.nn.Module) -> str | None:
    """`cache_argument` of the model's own forward (pass the innermost model, not a PEFT wrapper)."""
    return cache_argument(inspect.signature(model.forward).parameters)


def returned_cache(output):
    """The KV cache a forward returned: its `cache` field, or `past_key_values` before 5.25."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)
