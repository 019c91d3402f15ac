"""Checking mode names (`scale`, `kind`, `loss_type`, `loss_agg` ...) passed to the losses.

A mode usually comes straight from a user's config, so a wrong one is an `R1kitError` that names
the argument and lists the valid choices.
"""

from __future__ import annotations

from r1kit.errors import R1kitError


def check_mode(name: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise `R1kitError` unless `value` is one of `choices`."""
    if value not in choices:
        raise R1kitError(f"{name}={value!r} is not a valid choice; use one of: {', '.join(choices)}.")
