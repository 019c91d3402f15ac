"""What a config field's value may be: `coerce` turns a YAML or command-line value into the
field's type (or says which key is wrong and why), and the valid values of a numeric field are
declared with its type (`lr: PositiveFloat`, `top_p: Probability`), which `check_ranges` holds a
config to. `r1kit.config` re-exports all of it; the check sits next to the field it guards."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Literal

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


def coerce(tp: Any, value: Any, key: str, nested: Callable[[type, dict[str, Any], str], Any]) -> Any:
    """`value` as type `tp` (the field `key`'s), or an R1kitError naming the key and what is valid;
    `nested(cls, raw, prefix)` builds a config dataclass from its mapping (`r1kit.config.from_dict`)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return nested(tp, value if value is not None else {}, key + ".")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise R1kitError(f"config key {key!r} is {value!r}; choose one of {list(choices)}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(arg, value, key, nested)
            except R1kitError as e:
                errors.append(str(e))
        raise R1kitError(errors[0] if errors else f"config key {key!r} has an invalid value {value!r}")
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise R1kitError(f"config key {key!r} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise R1kitError(f"config key {key!r} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise R1kitError(f"config key {key!r} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise R1kitError(f"config key {key!r} must be a string, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise R1kitError(f"config key {key!r} must be a list, got {value!r}")
        (inner,) = typing.get_args(tp) or (Any,)
        return [coerce(inner, v, f"{key}[{i}]", nested) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise R1kitError(f"config key {key!r} must be a mapping, got {value!r}")
        return dict(value)
    return value
