"""The step loop every recipe runs, and what it does between steps.

    with run.loop(total, evaluate=..., line_keys=(...)) as loop:
        for step in loop:                 # from the step after the checkpoint's, if resuming
            batch = ...                   # a Ctrl-C here saves the last completed step
            with loop.guard:              # a Ctrl-C here waits until the step is complete
                metrics = update(...)
                loop.end_step(step, metrics, tokens=n)

`end_step` adds the step's time and throughput, averages the metrics over ranks, evaluates every
run.eval_every steps (rank 0; not at the last step, which the recipe evaluates itself), logs every
run.log_every steps, records the state the step ends with and writes a checkpoint every
run.save_every steps. On a KeyboardInterrupt (Ctrl-C, or SIGTERM, which the loop turns into one)
the state of the last completed step is saved before the interrupt goes on to the command line,
which exits with status 130; a resumed run redoes the interrupted step from there.

Any other exception after the first completed step keeps what was trained the same way: the state
of the last completed step is saved (a step whose evaluation or logging failed counts as
completed: its update is whole) and the exception comes back as one R1kitError that names the
cause, the checkpoint and `--resume`, with the traceback in the run directory's error.log. A step
that failed after one of its optimizer steps (the second of several mini-batches, say) has weights
that belong to no step, so nothing is saved from it; an earlier checkpoint still resumes.
"""

from __future__ import annotations

import contextlib
import math
import time
import traceback
from typing import Any, Callable, Iterator

from r1kit.errors import R1kitError
from r1kit.report.logger import console, format_line
from r1kit.train import distributed as dist_
from r1kit.train.checkpoint import CHECKPOINTS, InterruptGuard, TerminateAsInterrupt, restore_rng
from r1kit.train.progress import progress_bar


class StepLoop:
    """Steps run.start_step + 1 .. total of `run` (a `r1kit.train.run.Run`).

    evaluate: metrics of the model on held-out data, logged as `eval/<name>` every run.eval_every
    steps (rank 0); `model` is put back in train mode after it. line_keys: the metrics of the
    console line (printed every run.log_every steps when the progress bar is off) and, the first,
    of the bar.
    """

    def __init__(self, run, total: int, *, evaluate: Callable[[], dict[str, float]] | None = None, model=None, line_keys: tuple[str, ...] = ()):
        self.run, self.total, self.evaluate, self.model, self.line_keys = run, total, evaluate, model, line_keys
        self.guard = InterruptGuard()
        self._stack = contextlib.ExitStack()
        self.step_start = 0.0
        """perf_counter() at the start of the current step."""
        self.updates = self.updates_done = 0
        """Optimizer steps taken so far, and by the end of the last completed step."""
        self.current = run.start_step + 1
        """The step being run."""

    def __enter__(self) -> StepLoop:
        run = self.run
        if run.checkpoint is not None:  # last, once everything that draws at setup has drawn
            rngs = run.saved["rng"]
            if len(rngs) != run.dist.world_size and run.is_main:
                console.print(f"{run.recipe}: the checkpoint was written by {len(rngs)} processes, this run has {run.dist.world_size}; sampling will not repeat exactly")
            restore_rng(rngs[run.dist.rank % len(rngs)])
        self.done, self.state = run.start_step, run.snapshot()
        self.saved_step = run.start_step if run.checkpoint is not None else None
        for opt in run.optimizers:  # counts the updates, to tell a whole step from a part-applied one
            self._stack.callback(opt.register_step_post_hook(self._count_update).remove)
        self._stack.enter_context(TerminateAsInterrupt())
        self.bar = self._stack.enter_context(progress_bar(run.recipe, self.total, run.config.run.progress and run.is_main))
        self.bar.advance(run.start_step)
        return self

    def __iter__(self) -> Iterator[int]:
        for step in range(self.run.start_step + 1, self.total + 1):
            self.step_start, self.current = time.perf_counter(), step
            yield step

    def _count_update(self, optimizer, args, kwargs) -> None:
        self.updates += 1

    def end_step(self, step: int, metrics: dict[str, Any], tokens: int | None = None) -> dict[str, Any]:
        """Time, average, evaluate, log and checkpoint step `step`; returns the logged metrics."""
        try:
            return self._end_step(step, metrics, tokens)
        except Exception:
            if self.done != step:  # the update is whole; what failed is its evaluation or logging
                self._completed(step)
            raise

    def _completed(self, step: int) -> None:
        """Record that step `step` is complete: the state a checkpoint of it holds."""
        self.done, self.state, self.updates_done = step, self.run.snapshot(), self.updates

    def _end_step(self, step: int, metrics: dict[str, Any], tokens: int | None) -> dict[str, Any]:
        run, cfg = self.run, self.run.config.run
        dt = time.perf_counter() - self.step_start
        metrics = {**metrics, "perf/step_s": dt, **({"perf/tokens_per_s": tokens / dt} if tokens is not None else {})}
        metrics = dist_.mean_metrics(metrics, run.dist)
        evaluating = self.evaluate is not None and cfg.eval_every and step % cfg.eval_every == 0 and step != self.total
        if evaluating or step == self.total:
            run.gather_weights()  # under fsdp (every rank): the weights the evaluation or the final save reads
        if evaluating and run.is_main:
            metrics.update({f"eval/{k}": v for k, v in self.evaluate().items()})
            if self.model is not None:
                self.model.train()
        if step % cfg.log_every == 0 or step == self.total:
            run.log(metrics, step)
        self._completed(step)
        if cfg.save_every and step % cfg.save_every == 0:
            run.save(step, self.state)
            self.saved_step = step
        first = self.line_keys[0] if self.line_keys else None
        value = metrics.get(first, math.nan) if first else math.nan
        self.bar.advance(1, info=f"{first} {value:.4g}" if first else "")
        if run.is_main and not cfg.progress and step % max(1, cfg.log_every) == 0:
            console.print(format_line(step, metrics, self.line_keys))
        return metrics

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stack.close()
        if exc_type is not None and issubclass(exc_type, Exception):
            self._keep_trained(exc)
        if exc_type is not KeyboardInterrupt:
            return
        run = self.run
        if not self.guard.aborted and self.saved_step != self.done:
            run.save(self.done, self.state)  # the state as step `done` ended: the interrupted step is redone on resume
        if run.is_main:
            what = "aborted without saving" if self.guard.aborted else f"checkpoint of step {self.done} in {run.run_dir}"
            console.print(f"{run.recipe}: interrupted; {what}")

    def _keep_trained(self, exc: Exception) -> None:
        """Save the last completed step and raise an R1kitError naming `exc` and the checkpoint;
        return (the exception goes on as it is) when this run has nothing to resume from."""
        run = self.run
        whole = self.updates == self.updates_done
        if whole and self.done > run.start_step and self.saved_step != self.done:
            run.save(self.done, self.state)
            self.saved_step = self.done
        if self.saved_step is None:
            return
        cause = str(exc) if isinstance(exc, R1kitError) else f"{type(exc).__name__}: {exc}"
        lost = f" up to it (step {self.current} failed part-way through its update, so no later weights could be saved)" if not whole else ""
        log = ""
        if run.is_main and run.run_dir is not None:
            (run.run_dir / "error.log").write_text("".join(traceback.format_exception(exc)))
            log = f"; traceback in {run.run_dir / 'error.log'}"
        path = run.run_dir / CHECKPOINTS / f"step_{self.saved_step}"
        raise R1kitError(f"{run.recipe} stopped at step {self.current} by {cause.rstrip('.')}; the checkpoint of step {self.saved_step} in {path} "
                         f"keeps what was trained{lost}: fix the cause and continue with --resume (run.resume=auto){log}") from exc  # fmt: skip
