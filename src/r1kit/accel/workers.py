"""Rollout workers: a CPU rollout's prompts shared out among forked processes, one per core.

A small model's decode step is a few hundred tiny ops. Two OpenMP threads cannot share such ops
well (each parallel region pays a wake-up, `openmp.py`), so the accelerated engine decodes a small
model on one thread and the machine's other cores would idle through the rollout. Rows are
independent while decoding, so the prompts can be split instead: each process decodes its share of
the groups on its own threads, with no synchronisation between steps (docs/BENCHMARKS.md).

How:
- The workers are forked from the training process the first time a rollout is split, so they
  start with its modules, tokenizer and engine settings and import nothing. Before the fork the
  policy's parameters are copied into one anonymous shared mapping (`SharedWeights`), and each
  worker points its own copy of the model's parameters at it (the caller's model is not touched).
  `sync(model)`, which the engine's `sync_weights` calls after each optimizer step, copies the
  current weights into the mapping, one memcpy of the parameters; a model whose parameters changed
  shape or dtype cannot be synced, and the engine forks new workers at its next split rollout.
- Each rollout, a worker gets its prompts, the sampling parameters (its own seed, derived from
  the caller's) and the caller's autocast state through a pipe, runs the engine's own
  in-process rollout on its threads, and pipes the batch back; the calling process decodes the
  first share itself meanwhile. A worker ignores Ctrl-C (the caller handles it) and exits when the
  caller closes its pipe or dies.
- Memory: a worker shares every page it does not write, and gives back the parameter pages it
  inherited and no longer uses. When the workers are closed (with their engine, or
  `engine.close()`), each reports how much it added at its peak (its KV cache, logits, heap) and
  `peak_private_bytes()` keeps the largest, so a benchmark can count it beside the caller's own RSS
  (reading that is too slow to do per rollout).

Only on Linux (fork; macOS frameworks are not fork-safe) and only where the engine's rule says so
(`engine.py`: CPU, at least 2 threads and 2 prompts, at most `MAX_PARAMS` parameters).
`run.rollout_processes: 1` in a config keeps every rollout in one process.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import pickle
import signal
import sys
import time
import traceback
import warnings
from contextlib import nullcontext
from multiprocessing import Pipe
from multiprocessing.connection import Connection

import torch

from r1kit.accel.malloc import release_free_memory
from r1kit.errors import R1kitError

MAX_PARAMS = 2e7
"""Largest model (parameters) whose CPU rollouts are split among processes. Each process streams
every weight once per decode step, so for a model whose weights do not fit in the caches the split
multiplies memory traffic; gains were measured at 0.25M and 13M parameters, larger models not."""

_ALIGN = 64  # bytes: each parameter starts on a cache line in the shared mapping

_peak_private = 0


def available() -> bool:
    """Whether this platform can fork rollout workers."""
    return sys.platform.startswith("linux") and hasattr(os, "fork")


def peak_private_bytes() -> int:
    """The most memory one closed rollout worker of this process held beyond the pages it shares
    with it, at its peak (bytes; 0 when none has been closed)."""
    return _peak_private


def worker_seed(seed: int | None, index: int) -> int | None:
    """Sampling seed of the process that decodes share `index` of a rollout seeded with `seed`.

    Share 0 keeps the caller's seed (its rows are those of an unsplit rollout of the same prompts);
    the others get seeds hashed from (seed, index), so no two shares or steps draw the same stream."""
    if seed is None or index == 0:
        return seed
    digest = hashlib.blake2b(f"{seed}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class SharedWeights:
    """A copy of a model's parameters in one anonymous shared mapping, in `model.parameters()` order,
    each starting on a cache line. Anonymous shared memory is not bounded by the size of /dev/shm
    (64 MB in a default container)."""

    def __init__(self, model):
        params = list(model.parameters())
        self.layout = _layout(params)
        offsets, size = [], 0
        for p in params:
            offsets.append(size)
            size += -(-p.numel() * p.element_size() // _ALIGN) * _ALIGN
        self.buffer = mmap.mmap(-1, max(size, 1))  # MAP_SHARED | MAP_ANONYMOUS
        # Ordinary tensors even when the first split rollout runs under inference mode (evaluation
        # does): a worker's parameters are bound to them.
        with torch.inference_mode(False):
            self.views = [torch.frombuffer(self.buffer, dtype=p.dtype, count=p.numel(), offset=o).view(p.shape) for p, o in zip(params, offsets)]
        self.load(model)

    def load(self, model) -> bool:
        """Copy `model`'s current parameters into the mapping; False (nothing copied) when they no
        longer have the layout (devices, dtypes, shapes) the mapping was made for."""
        params = list(model.parameters())
        if _layout(params) != self.layout:
            return False
        with torch.no_grad():
            for view, p in zip(self.views, params):
                view.copy_(p.detach())
        return True

    def bind(self, model) -> None:
        """Point `model`'s parameters at the mapping (in a worker: its copy of the model), so that
        every later `load` in the caller is what it decodes with."""
        with torch.inference_mode(False), torch.no_grad():
            for view, p in zip(self.views, model.parameters()):
                p.data = view


def _layout(params: list[torch.Tensor]) -> tuple:
    return tuple((p.device.type, p.dtype, tuple(p.shape)) for p in params)


class RolloutWorkers:
    """`count` forked processes that each run `engine`'s in-process rollouts on `threads` torch
    threads, with the weights of `engine.model` as of the fork or the last `sync`."""

    def __init__(self, engine, count: int, threads: int):
        self.count, self.threads = count, threads
        self.weights = SharedWeights(engine.model)
        self._pids: list[int] = []
        self._pipes: list[Connection] = []
        try:
            for _ in range(count):
                pid, pipe = _fork(engine, self.weights, threads, self._pipes)
                self._pids.append(pid)
                self._pipes.append(pipe)
        except BaseException:
            self.close()
            raise

    def serves(self, count: int, threads: int) -> bool:
        """Whether these workers can run the next rollout as is: same shape, alive."""
        return (count, threads) == (self.count, self.threads) and self._pipes != []

    def sync(self, model) -> bool:
        """Have the workers decode with `model`'s current weights from the next rollout on; False
        when they cannot (its parameters changed layout: fork new workers)."""
        return self.weights.load(model)

    def submit(self, index: int, prompt_ids: list[list[int]], params, autocast: torch.dtype | None) -> None:
        """Start worker `index` on a rollout of `prompt_ids`; `autocast`: the caller's CPU autocast dtype."""
        self._pipes[index].send_bytes(pickle.dumps((prompt_ids, params, autocast)))

    def result(self, index: int):
        """The RolloutBatch of worker `index`'s current rollout (waits for it)."""
        try:
            status, payload = pickle.loads(self._pipes[index].recv_bytes())
        except (EOFError, OSError) as error:
            pid = self._pids[index]
            raise R1kitError(
                f"rollout worker process {pid} ended without answering ({error or 'pipe closed'}): it may have been killed for memory. "
                "Set run.rollout_processes: 1 to decode every rollout in one process."
            ) from None
        if status != "ok":
            raise R1kitError(f"a rollout worker process failed:\n{payload}")
        return payload

    def close(self, kill: bool = False) -> None:
        """Ask each worker for its peak private memory and to exit, and reap the processes; `kill`:
        SIGKILL them instead (a rollout may be in progress)."""
        global _peak_private
        for pipe in self._pipes:
            if not kill:
                try:
                    pipe.send_bytes(pickle.dumps(None))
                    if pipe.poll(5):
                        _peak_private = max(_peak_private, pickle.loads(pipe.recv_bytes()))
                except (EOFError, OSError):
                    pass  # already gone
            pipe.close()
        for pid in self._pids:
            if kill:
                _kill(pid)
            _reap(pid)
        self._pipes, self._pids = [], []


def _fork(engine, weights: SharedWeights, threads: int, siblings: list[Connection]) -> tuple[int, Connection]:
    """Fork a worker serving `engine` with `weights`; its pid and the caller's end of its pipe."""
    ours, theirs = Pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    # The tokenizers library warns in a forked child when its thread pool was used before the fork,
    # and then runs serially there; saying so up front (for the child alone) spares the warning.
    tokenizers_unset = "TOKENIZERS_PARALLELISM" not in os.environ
    if tokenizers_unset:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    pid = -1
    try:
        with warnings.catch_warnings():  # Python 3.12+: "this process is multi-threaded" (torch's idle OpenMP threads)
            warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
            pid = os.fork()
    finally:
        if tokenizers_unset and pid != 0:  # the caller's environment as it was; the worker keeps "false"
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
    if pid == 0:  # the worker: never returns into the caller's stack
        code = 0
        try:
            ours.close()
            for pipe in siblings:
                pipe.close()
            weights.bind(engine.model)
            release_free_memory()  # the parameter pages inherited from the caller, now unused here
            _serve(engine, theirs, threads)
        except BaseException:  # noqa: BLE001 - a worker reports through its pipe or not at all
            code = 1
        finally:
            os._exit(code)
    theirs.close()
    return pid, ours


def _serve(engine, pipe: Connection, threads: int) -> None:
    """A worker's loop: rollout requests in, batches out, until the pipe closes or a None request
    (answered with the worker's peak private memory) says to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    while True:
        try:
            request = pickle.loads(pipe.recv_bytes())
        except (EOFError, OSError):
            return
        if request is None:
            pipe.send_bytes(pickle.dumps(_private_peak()))
            return
        prompt_ids, params, autocast = request
        try:
            with torch.autocast("cpu", dtype=autocast) if autocast is not None else nullcontext():
                reply = ("ok", engine.rollout_here(prompt_ids, params))
        except Exception as error:  # noqa: BLE001 - sent back and raised in the caller
            reply = ("error", "".join(traceback.format_exception(error)))
        pipe.send_bytes(pickle.dumps(reply))


def _private_peak() -> int:
    """Bytes this worker holds beyond the pages it shares with its parent, at its peak: private
    pages now, plus how far its RSS once rose above the present (0 where /proc cannot say)."""
    try:
        with open("/proc/self/smaps_rollup") as f:
            private = sum(int(line.split()[1]) for line in f if line.startswith(("Private_Clean:", "Private_Dirty:")))
        with open("/proc/self/status") as f:
            status = {line.split(":")[0]: int(line.split()[1]) for line in f if line.startswith(("VmHWM:", "VmRSS:"))}
    except (OSError, IndexError, ValueError):
        return 0
    return 1024 * (private + max(0, status["VmHWM"] - status["VmRSS"]))


def _reap(pid: int) -> None:
    """Wait for worker `pid` to exit; kill it if it has not within a few seconds."""
    for _ in range(300):
        try:
            done, _status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        time.sleep(0.01)
    _kill(pid)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
