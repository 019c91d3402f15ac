"""Several reward functions combined into one weighted reward per completion.

A config lists reward specs; each is a name (`"math"`), a dict
`{name: ..., weight: 1.0, kwargs: {...}}` whose kwargs are bound to the function, or (from Python)
a function. `RewardComposer(specs)` resolves them once through `r1kit.rewards.get`; calling it on
a batch gives a `RewardResult`:

- `total[i]` is the weighted sum of row i's non-None rewards, or None if every function gave None
  (the row is then left out of advantage normalisation);
- `per_function[name]` is each function's raw output;
- `metrics` holds `reward/mean` and, per function, `reward/<name>/mean` (over non-None values),
  `reward/<name>/none_frac`, `reward/<name>/errors` and `reward/<name>/<key>` for every count the
  function reported through its `metrics` argument.

A reward function that raises must not stop a training run over one odd completion: the composer
calls the function again row by row, so only the rows that raise become None (counted in
`reward/<name>/errors`), and logs one warning line the first time a function fails. A function
that raises on every row of `stop_after` batches in a row is broken rather than meeting odd
completions: the composer stops with an R1kitError naming it and its exception (the step loop
then keeps what was trained; r1kit/train/loop.py). So do an `R1kitError` (a misconfiguration, such
as a missing column) and a function that returns the wrong number of values or a non-number: they
are not row problems.

A function is passed the columns its signature accepts (all of them if it takes `**kwargs`, as TRL
reward functions do), its bound kwargs (which win over a column of the same name) and, if it has
a parameter called `metrics`, a dict to fill with counts. NaN is read as None, as TRL does.
"""

from __future__ import annotations

import inspect
import logging
import math
import numbers
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from r1kit.errors import R1kitError
from r1kit.rewards.base import Completion, RewardFn, completion_text
from r1kit.rewards.registry import MODEL_PREFIX, PRM_PREFIX, get

logger = logging.getLogger(__name__)

RewardSpecLike = str | Mapping[str, Any] | Callable[..., list[float | None]]
_SPEC_KEYS = ("name", "weight", "kwargs")


@dataclass(frozen=True)
class RewardSpec:
    """One resolved reward: its metric name, function, weight and bound keyword arguments."""

    name: str
    fn: RewardFn
    weight: float = 1.0
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class RewardResult:
    """Rewards of one batch. Lists are per completion, in batch order."""

    total: list[float | None]
    per_function: dict[str, list[float | None]]
    metrics: dict[str, float]


class RewardComposer:
    """Weighted sum of reward functions; see the module docstring."""

    def __init__(self, specs: Sequence[RewardSpecLike], stop_after: int = 3):
        """`stop_after`: batches in a row on whose every row one function raised before the
        composer stops the run (0: never)."""
        if stop_after < 0:
            raise R1kitError(f"reward_failure_steps={stop_after} must be 0 (never stop) or a number of steps")
        self.stop_after = stop_after
        self.failing: Counter[str] = Counter()
        """Per function, the batches in a row on whose every row it raised."""
        self.warned: set[str] = set()
        if isinstance(specs, (str, Mapping)) or len(specs) == 0:
            raise R1kitError(
                "rewards must be a non-empty list of reward names or {name, weight, kwargs} entries; e.g. [math, format]."
            )
        self.specs: list[RewardSpec] = []
        taken: Counter[str] = Counter()
        for raw in specs:
            spec = resolve_spec(raw)
            taken[spec.name] += 1
            if taken[spec.name] > 1:  # math, math_2, ...
                spec = RewardSpec(f"{spec.name}_{taken[spec.name]}", spec.fn, spec.weight, spec.kwargs)
            self.specs.append(spec)

    @property
    def names(self) -> list[str]:
        return [spec.name for spec in self.specs]

    def __call__(self, completions: Sequence[Completion], columns: Mapping[str, Sequence[Any]]) -> RewardResult:
        for key, column in columns.items():
            if len(column) != len(completions):
                raise R1kitError(
                    f"column {key!r} has {len(column)} values for {len(completions)} completions; "
                    f"give one value per completion."
                )
        per_function: dict[str, list[float | None]] = {}
        metrics: dict[str, float] = {}
        for spec in self.specs:
            values, counts, errors, first = _score(spec, completions, columns)
            if first is not None:
                self._failed(spec.name, first, errors, len(completions))
            else:
                self.failing[spec.name] = 0
            per_function[spec.name] = values
            present = [v for v in values if v is not None]
            if present:
                metrics[f"reward/{spec.name}/mean"] = sum(present) / len(present)
            metrics[f"reward/{spec.name}/none_frac"] = 1.0 - len(present) / len(values) if values else 0.0
            metrics[f"reward/{spec.name}/errors"] = float(errors)
            for key, count in counts.items():
                metrics[f"reward/{spec.name}/{key}"] = float(count)
        total = _weighted_total(self.specs, per_function, len(completions))
        present = [t for t in total if t is not None]
        if present:
            metrics["reward/mean"] = sum(present) / len(present)
        return RewardResult(total=total, per_function=per_function, metrics=metrics)


    def _failed(self, name: str, error: Exception, errors: int, rows: int) -> None:
        """Warn at a function's first failure; stop once it has failed on every row of
        `stop_after` batches in a row."""
        cause = f"{type(error).__name__}: {error}"
        if name not in self.warned:
            self.warned.add(name)
            logger.warning("reward %r raised %s; rows it fails on score None, counted in reward/%s/errors (warned once)", name, cause, name)
        self.failing[name] = self.failing[name] + 1 if errors == rows else 0
        if self.stop_after and self.failing[name] >= self.stop_after:
            raise R1kitError(
                f"reward {name!r} raised on every row of {self.failing[name]} steps in a row ({cause}), so it scores nothing; "
                f"fix the function or leave it out of rewards (reward_failure_steps=0 lets the run go on without it)"
            )


def resolve_spec(raw: RewardSpecLike) -> RewardSpec:
    """A config entry (name, dict or function) as a `RewardSpec`, its kwargs checked against the function."""
    if callable(raw) and not isinstance(raw, str):
        return RewardSpec(getattr(raw, "__name__", type(raw).__name__), raw)
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, Mapping):
        raise R1kitError(
            f"reward entry {raw!r} is neither a name nor a {{name, weight, kwargs}} mapping; write e.g. 'math'."
        )
    unknown = [key for key in raw if key not in _SPEC_KEYS]
    if unknown or "name" not in raw:
        problem = f"unknown key {unknown[0]!r}" if unknown else "no 'name'"
        raise R1kitError(f"reward entry {dict(raw)!r} has {problem}; its keys are {', '.join(_SPEC_KEYS)}.")
    name, weight, kwargs = raw["name"], raw.get("weight", 1.0), raw.get("kwargs") or {}
    if not isinstance(weight, numbers.Real) or isinstance(weight, bool):
        raise R1kitError(f"reward {name!r} has weight {weight!r}; a weight must be a number such as 1.0.")
    if not isinstance(kwargs, Mapping):
        raise R1kitError(
            f"reward {name!r} has kwargs {kwargs!r}; kwargs must be a mapping of parameter names to values."
        )
    fn = get(str(name))
    _check_kwargs(str(name), fn, kwargs)
    return RewardSpec(display_name(str(name)), fn, float(weight), dict(kwargs))


def display_name(name: str) -> str:
    """The metric name of a spec: `pkg.mod:fn` -> `fn`, `model:PATH` -> `model`, `prm:PATH` -> `prm`."""
    if name.startswith(MODEL_PREFIX):
        return "model"
    if name.startswith(PRM_PREFIX):
        return "prm"
    return name.rpartition(":")[2].rpartition(".")[2] if ":" in name else name


def _check_kwargs(name: str, fn: RewardFn, kwargs: Mapping[str, Any]) -> None:
    """Fail at start-up, not mid-run, on a kwarg that is not a named parameter of the function.

    Checked even when the function also takes `**columns`: there a misspelt kwarg would be taken
    for a column and silently ignored.
    """
    params = _parameters(fn)
    if params is None:
        return
    named = params[0]
    unknown = [k for k in kwargs if k not in named]
    if unknown:
        raise R1kitError(
            f"reward {name!r} has no parameter {unknown[0]!r}; its parameters are "
            f"{', '.join(sorted(named)) or 'none'} (bound kwargs must be named parameters)."
        )


def _parameters(fn: RewardFn) -> tuple[set[str], bool] | None:
    """Names of `fn`'s keyword parameters (less `completions`) and whether it takes `**kwargs`.

    None if the signature cannot be read (some builtins): then everything is passed, unchecked.
    """
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    named: set[str] = set()
    var_keyword = False
    for i, p in enumerate(signature.parameters.values()):
        if p.kind is p.VAR_KEYWORD:
            var_keyword = True
        elif i > 0 and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            named.add(p.name)
    return named, var_keyword


def _accepts_metrics(fn: RewardFn) -> bool:
    try:
        p = inspect.signature(fn).parameters.get("metrics")
    except (TypeError, ValueError):
        return False
    return p is not None and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)


def _score(
    spec: RewardSpec, completions: Sequence[Completion], columns: Mapping[str, Sequence[Any]]
) -> tuple[list[float | None], Counter[str], int, Exception | None]:
    """One function's rewards for the batch, its counts, how many rows raised and the first
    exception (None when the function scored the whole batch at once)."""
    params = _parameters(spec.fn)
    passed = {k: v for k, v in columns.items() if params is None or params[1] or k in params[0]}
    with_metrics = _accepts_metrics(spec.fn)
    try:
        counts: Counter[str] = Counter()
        return _call(spec, completions, passed, with_metrics, counts), counts, 0, None
    except R1kitError:
        raise
    except Exception as error:  # score it row by row: only the rows that raise score None
        first: Exception = error
    values: list[float | None] = []
    counts = Counter()
    errors = 0
    for i, completion in enumerate(completions):
        row_columns = {k: [v[i]] for k, v in passed.items()}
        try:
            row_counts: Counter[str] = Counter()
            values += _call(spec, [completion], row_columns, with_metrics, row_counts)
            counts.update(row_counts)
        except R1kitError:
            raise
        except Exception as error:
            first = error if errors == 0 else first
            errors += 1
            logger.debug("reward %r raised on row %d (completion %s)", spec.name, i, _short(completion), exc_info=error)
            values.append(None)
    return values, counts, errors, first if errors else None  # a batch that only failed as a whole is no failure


def _call(
    spec: RewardSpec,
    completions: Sequence[Completion],
    columns: Mapping[str, Sequence[Any]],
    with_metrics: bool,
    counts: Counter[str],
) -> list[float | None]:
    """Call the function once and check what it returned."""
    metrics: dict[str, Any] = {}
    extra = {"metrics": metrics} if with_metrics else {}
    raw = spec.fn(list(completions), **{**columns, **spec.kwargs, **extra})
    values = _checked(spec.name, raw, len(completions))
    counts.update({k: v for k, v in metrics.items() if isinstance(v, numbers.Real)})
    return values


def _checked(name: str, raw: Any, n: int) -> list[float | None]:
    """`raw` as a list of n floats or None; an R1kitError naming the function otherwise."""
    if isinstance(raw, (str, bytes, Mapping)) or not hasattr(raw, "__len__"):
        raise R1kitError(
            f"reward {name!r} returned {type(raw).__name__}, not a list; "
            f"it must return one float or None per completion."
        )
    values = list(raw)
    if len(values) != n:
        raise R1kitError(
            f"reward {name!r} returned {len(values)} values for {n} completions; "
            f"it must return one float or None per completion."
        )
    out: list[float | None] = []
    for i, v in enumerate(values):
        if v is None:
            out.append(None)
        elif isinstance(v, numbers.Real):
            out.append(None if math.isnan(float(v)) else float(v))
        else:
            raise R1kitError(
                f"reward {name!r} returned {v!r} (a {type(v).__name__}) for row {i}; a reward must be a float or None."
            )
    return out


def _weighted_total(
    specs: list[RewardSpec], per_function: dict[str, list[float | None]], n: int
) -> list[float | None]:
    """Per row, the weighted sum of the rewards that are not None; None if all are."""
    total: list[float | None] = []
    for i in range(n):
        parts = [spec.weight * v for spec in specs if (v := per_function[spec.name][i]) is not None]
        total.append(sum(parts) if parts else None)
    return total


def _short(completion: Completion, limit: int = 80) -> str:
    """A log-sized repr of a completion."""
    text = completion_text(completion)
    return repr(text if len(text) <= limit else text[:limit] + "…")
