"""The valid values of a numeric config field, declared with its type (`lr: PositiveFloat`,
`top_p: Probability`), and `check_ranges`, which holds a config to them. `r1kit.config` re-exports
all of it; the fields' check sits next to the field it guards."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Annotated, Any

from r1kit.errors import R1kitError


@dataclass(frozen=True)
class Range:
    """The valid values of a numeric field, declared with its type: `Annotated[float, Range(gt=0)]`."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    def problem(self, value: float) -> str:
        """'' when `value` is in range, else what it must be ("greater than 0")."""
        bounds = [(self.gt, "greater than", value > (self.gt or 0)), (self.ge, "at least", value >= (self.ge or 0)),
                  (self.lt, "less than", value < (self.lt or 0)), (self.le, "at most", value <= (self.le or 0))]  # fmt: skip
        if all(ok for bound, _, ok in bounds if bound is not None):  # NaN fails every comparison
            return ""
        return " and ".join(f"{words} {bound:g}" for bound, words, _ in bounds if bound is not None)


PositiveFloat = Annotated[float, Range(gt=0)]
NonNegativeFloat = Annotated[float, Range(ge=0)]
Probability = Annotated[float, Range(ge=0, le=1)]
PositiveInt = Annotated[int, Range(ge=1)]
NonNegativeInt = Annotated[int, Range(ge=0)]


def check_ranges(config: Any, prefix: str = "") -> Any:
    """`config` (a config dataclass) once every numeric field is inside the `Range` its type
    declares, recursively; an R1kitError naming the first field that is not, and the fix."""
    hints = typing.get_type_hints(type(config), include_extras=True)
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            check_ranges(value, f"{prefix}{f.name}.")
        else:
            _check_range(hints[f.name], value, prefix + f.name)
    return config


def _check_range(tp: Any, value: Any, key: str) -> None:
    if typing.get_origin(tp) is Annotated:
        tp, *extras = typing.get_args(tp)
        for rng in extras:
            if isinstance(rng, Range) and isinstance(value, (int, float)) and not isinstance(value, bool) and rng.problem(value):
                raise R1kitError(f"config key {key!r} must be {rng.problem(value)}, got {value!r}; set {key} to a value {rng.problem(value)}")
    if typing.get_origin(tp) is list and isinstance(value, list):
        (inner,) = typing.get_args(tp) or (Any,)
        for i, v in enumerate(value):
            _check_range(inner, v, f"{key}[{i}]")
