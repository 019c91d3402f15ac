"""Many sandboxed programs at once, so that scoring a batch of completions does not stall training.

Each program's tests run in order in one worker thread (so a timeout or a syntax error can skip the
rest, see `run_python`); programs run in parallel, one thread per worker, each thread only waiting
on its sandboxed child process. The default is one worker per CPU core this process may use.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

from r1kit.errors import R1kitError
from r1kit.sandbox import isolation as iso_mod
from r1kit.sandbox.runner import ExecResult, parse_and_check, run_program, unavailable_result


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def run_many(
    programs: Sequence[str],
    tests: Sequence[Any],
    timeout_s: float = 5.0,
    workers: int | None = None,
    *,
    unsafe: bool | None = None,
    stop_on_failure: bool = False,
    **limits: Any,
) -> list[ExecResult]:
    """`run_python(programs[i], tests[i], ...)` for every i, in parallel; results in input order.

    tests: one `tests` value per program (see `r1kit.sandbox.spec`). All are validated before
        anything runs, so a malformed test raises R1kitError up front.
    workers: parallel sandboxes (default: the usable CPU cores).
    Other arguments as in `run_python`; the unsafe-execution warning is given once per call.
    """
    if len(programs) != len(tests):
        raise R1kitError(f"run_many got {len(programs)} programs but {len(tests)} test lists; give one per program")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise R1kitError(f"workers must be a positive integer, got {workers!r}")
    parsed = [parse_and_check(t, timeout_s, limits) for t in tests]
    iso = iso_mod.resolve(unsafe)
    if iso is None:
        return [unavailable_result(len(specs)) for specs, _ in parsed]
    if iso.kind == "none":
        iso_mod.warn_unsafe()
    if not programs:
        return []
    n = min(workers or default_workers(), len(programs))
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="r1kit-sandbox") as pool:
        futures = [
            pool.submit(run_program, code, specs, timeout_s, lim, iso, stop_on_failure)
            for code, (specs, lim) in zip(programs, parsed)
        ]
        return [f.result() for f in futures]
