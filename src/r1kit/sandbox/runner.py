"""Run one untrusted program against its tests, one sandboxed process per test.

The host side of the protocol argued in `r1kit/sandbox/__init__.py`: for each test it draws a
fresh nonce, starts the launcher in the sandbox, feeds it `nonce + job` through a pipe, reads stdout,
stderr and the result pipe incrementally (stopping at the output cap), kills the whole sandbox at
the wall-clock deadline, and decides the test's status itself from the nonce-tagged records, the
exit status and, for stdio tests, the captured stdout.
"""

from __future__ import annotations

import dataclasses
import marshal
import math
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r1kit.errors import R1kitError
from r1kit.sandbox import isolation as iso_mod
from r1kit.sandbox.isolation import Isolation
from r1kit.sandbox.spec import AssertTest, StdioTest, Test, parse_tests, stdout_matches, value_mismatch

LAUNCHER_SOURCE = (Path(__file__).with_name("launcher.py")).read_text(encoding="utf-8")
EXCERPT_CHARS = 2000

# Statuses, per test and for a whole program (the first test that was not ok decides the latter).
OK = "ok"
FAILED = "failed"  # ran, wrong answer (assertion, wrong value, wrong stdout)
ERROR = "error"  # raised, exited before the test ended, crashed, or left no report
SYNTAX_ERROR = "syntax_error"
TIMEOUT = "timeout"  # wall clock or CPU limit
MEMORY = "memory"  # MemoryError under the address-space limit
OUTPUT_LIMIT = "output_limit"  # stdout + stderr (or the result records) passed the cap
SKIPPED = "skipped"  # not run: an earlier test timed out or had a syntax error (or failed, on request)
SANDBOX_UNAVAILABLE = "sandbox_unavailable"
STATUSES = (OK, FAILED, ERROR, SYNTAX_ERROR, TIMEOUT, MEMORY, OUTPUT_LIMIT, SKIPPED, SANDBOX_UNAVAILABLE)


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed test run (each test is its own process)."""

    memory_mb: int = 1024
    """Address-space limit (RLIMIT_AS) in MiB; a program that needs more gets MemoryError (status memory)."""
    cpu_s: float | None = None
    """CPU-time limit (RLIMIT_CPU) in seconds; None: the wall-clock timeout rounded up, plus one."""
    max_processes: int = 64
    """RLIMIT_NPROC (threads count too). The kernel exempts uid 0 from it; see r1kit.sandbox."""
    max_file_mb: int = 16
    """Largest file the program may write (RLIMIT_FSIZE), in MiB."""
    max_open_files: int = 64
    """RLIMIT_NOFILE."""
    max_output_bytes: int = 1 << 20
    """Cap on stdout + stderr (and, separately, on the result records); past it the run is killed."""
    tmp_mb: int = 64
    """Size of the private tmpfs mounted on /tmp, in MiB."""

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> Limits:
        names = [f.name for f in dataclasses.fields(cls)]
        for key, value in kwargs.items():
            if key not in names:
                raise R1kitError(f"unknown sandbox limit {key!r}; choose from {names}")
            if value is not None and not (isinstance(value, (int, float)) and value > 0):
                raise R1kitError(f"sandbox limit {key} must be a positive number, got {value!r}")
        return cls(**kwargs)

    def for_launcher(self, timeout_s: float) -> dict[str, int]:
        cpu = self.cpu_s if self.cpu_s is not None else math.ceil(timeout_s) + 1
        return {
            "cpu_s": max(1, math.ceil(cpu)),
            "memory_mb": int(self.memory_mb),
            "max_processes": int(self.max_processes),
            "max_file_mb": int(self.max_file_mb),
            "max_open_files": int(self.max_open_files),
        }


@dataclass(frozen=True)
class ExecResult:
    """The outcome of one program against its tests."""

    passed: int
    total: int
    status: str
    """`ok` when every test passed, else the status of the first test that did not (see STATUSES)."""
    stdout: str = ""
    """Excerpt of the first failing test's stdout (or of the last test's, when all passed)."""
    stderr: str = ""
    wall_s: float = 0.0
    """Wall-clock seconds over all the program's tests."""
    test_status: tuple[str, ...] = field(default=())
    """Status of each test, in order."""

    @property
    def fraction(self) -> float:
        return self.passed / self.total if self.total else 0.0


@dataclass(frozen=True)
class TestRun:
    status: str
    stdout: str
    stderr: str
    wall_s: float


def run_python(
    code: str,
    tests: Any,
    timeout_s: float = 5.0,
    *,
    unsafe: bool | None = None,
    stop_on_failure: bool = False,
    **limits: Any,
) -> ExecResult:
    """Run `code` against `tests` in the sandbox, one fresh sandboxed process per test.

    tests: an assert string, an `{"input", "output"}` dict, or a list of them (`r1kit.sandbox.spec`).
    timeout_s: wall-clock limit per test. After a test times out (or the code does not compile) the
        remaining tests are skipped and count as failed; `stop_on_failure` skips them after any
        failure, for all-or-nothing scoring.
    unsafe: run without bubblewrap when it is unavailable (None: the R1KIT_UNSAFE_CODE_EXEC variable).
    limits: fields of `Limits` (memory_mb, cpu_s, max_processes, max_file_mb, max_open_files,
        max_output_bytes, tmp_mb).
    Without a working sandbox and without the opt-in, every test reports `sandbox_unavailable`.
    """
    specs, lim = parse_and_check(tests, timeout_s, limits)
    iso = iso_mod.resolve(unsafe)
    if iso is None:
        return unavailable_result(len(specs))
    if iso.kind == "none":
        iso_mod.warn_unsafe()
    return run_program(code, specs, timeout_s, lim, iso, stop_on_failure)


def _check_timeout(timeout_s: float) -> None:
    if not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
        raise R1kitError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")


def unavailable_result(total: int) -> ExecResult:
    problem = iso_mod.sandbox_problem() or "the sandbox is not available"
    return ExecResult(0, total, SANDBOX_UNAVAILABLE, stderr=iso_mod.unavailable_message(problem),
                      test_status=(SANDBOX_UNAVAILABLE,) * total)


def run_program(
    code: str, specs: list[Test], timeout_s: float, limits: Limits, iso: Isolation, stop_on_failure: bool = False
) -> ExecResult:
    """Run the tests in order; see `run_python` for when the rest are skipped."""
    if not specs:  # no tests: run the program once, to report whether it runs at all
        run = run_test(code, AssertTest(""), timeout_s, limits, iso)
        return ExecResult(0, 0, run.status, run.stdout, run.stderr, run.wall_s, ())
    runs: list[TestRun] = []
    statuses: list[str] = []
    stop = False
    for spec in specs:
        if stop:
            statuses.append(SKIPPED)
            continue
        run = run_test(code, spec, timeout_s, limits, iso)
        runs.append(run)
        statuses.append(run.status)
        stop = run.status in (TIMEOUT, SYNTAX_ERROR) or (stop_on_failure and run.status != OK)
    passed = sum(s == OK for s in statuses)
    first_bad = next((i for i, s in enumerate(statuses) if s != OK), None)
    shown = runs[first_bad] if first_bad is not None else runs[-1]
    status = OK if first_bad is None else statuses[first_bad]
    return ExecResult(
        passed, len(specs), status, shown.stdout, shown.stderr, sum(r.wall_s for r in runs), tuple(statuses)
    )


def run_test(code: str, test: Test, timeout_s: float, limits: Limits, iso: Isolation) -> TestRun:
    """One sandboxed process: `code`, then `test`; the status is decided here, on the host."""
    nonce = secrets.token_hex(16).encode()  # 32 bytes, the launcher's JOB_NONCE_BYTES
    job = {
        "mode": "stdio" if isinstance(test, StdioTest) else "assert",
        "code": code,
        "test": test.source if isinstance(test, AssertTest) else "",
        "input": test.input if isinstance(test, StdioTest) else "",
        "limits": limits.for_launcher(timeout_s),
    }
    payload = nonce + marshal.dumps(job)  # read by the same interpreter version inside
    workdir = tempfile.mkdtemp(prefix="r1kit-sandbox-") if iso.kind == "none" else None
    try:
        io = _spawn_and_collect(iso, payload, timeout_s, limits, workdir)
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
    status, note = _classify(test, io, nonce)
    stderr = _excerpt(io.stderr) + (f"[r1kit] {note}\n" if note else "")
    return TestRun(status, _excerpt(io.stdout), stderr, io.wall_s)


@dataclass
class _Collected:
    stdout: bytes
    stderr: bytes
    records: bytes
    returncode: int
    killed: str | None  # TIMEOUT or OUTPUT_LIMIT when the host killed the run
    wall_s: float
    sandboxed: bool


def _spawn_and_collect(
    iso: Isolation, payload: bytes, timeout_s: float, limits: Limits, workdir: str | None
) -> _Collected:
    job_r, job_w = os.pipe()
    res_r, res_w = os.pipe()
    start = time.monotonic()
    try:
        proc = _launch(iso, limits, workdir, job_r, res_w)
    except BaseException:
        for fd in (job_r, job_w, res_r, res_w):
            os.close(fd)
        raise
    os.close(job_r)
    os.close(res_w)
    deadline = start + timeout_s
    bufs = {"stdout": bytearray(), "stderr": bytearray(), "records": bytearray()}
    killed = None
    sel = selectors.DefaultSelector()
    os.set_blocking(job_w, False)
    sel.register(job_w, selectors.EVENT_WRITE, "job")
    sel.register(proc.stdout, selectors.EVENT_READ, "stdout")  # type: ignore[arg-type]
    sel.register(proc.stderr, selectors.EVENT_READ, "stderr")  # type: ignore[arg-type]
    sel.register(res_r, selectors.EVENT_READ, "records")
    pending = memoryview(payload)
    try:
        while sel.get_map() and killed is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                killed = TIMEOUT
                break
            for key, _ in sel.select(remaining):
                if key.data == "job":
                    pending = _feed(job_w, pending)
                    if not pending:
                        sel.unregister(job_w)
                        os.close(job_w)
                        job_w = -1
                    continue
                fd = key.fileobj if isinstance(key.fileobj, int) else key.fileobj.fileno()  # type: ignore[union-attr]
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buf = bufs[key.data]
                buf += chunk
                if len(bufs["stdout"]) + len(bufs["stderr"]) > limits.max_output_bytes or (
                    len(bufs["records"]) > limits.max_output_bytes
                ):
                    killed = OUTPUT_LIMIT
                    break
        if killed is None:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                killed = TIMEOUT
    finally:
        if killed is not None or proc.poll() is None:
            kill_process_group(proc)
        proc.wait()
        sel.close()
        for fd in (job_w, res_r):
            if fd >= 0:
                os.close(fd)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    return _Collected(
        bytes(bufs["stdout"]), bytes(bufs["stderr"]), bytes(bufs["records"]), proc.returncode, killed,
        time.monotonic() - start, iso.kind != "none",
    )


def _launch(iso: Isolation, limits: Limits, workdir: str | None, job_r: int, res_w: int) -> subprocess.Popen:
    """The launcher, inside the isolation, reading its job from fd job_r and writing records to fd res_w."""
    inner = [iso.python, "-I", "-S", "-X", "utf8", "-c", LAUNCHER_SOURCE, str(job_r), str(res_w)]
    return subprocess.Popen(
        iso.command(inner, limits.tmp_mb),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        pass_fds=(job_r, res_w),
        start_new_session=True,  # one process group: the deadline kills it whole
        env={"PATH": iso_mod.MINIMAL_PATH},
        cwd=workdir,
    )


def _feed(fd: int, pending: memoryview) -> memoryview:
    """What is left of `pending` after one non-blocking write of it to `fd`."""
    try:
        written = os.write(fd, pending[: 1 << 16])
    except BlockingIOError:
        return pending
    except BrokenPipeError:  # the launcher is gone; its exit status will say why
        return pending[len(pending) :]
    return pending[written:]


def kill_process_group(proc: subprocess.Popen) -> None:
    # Killing bwrap's process group kills bwrap; --die-with-parent takes the sandbox's PID 1 with
    # it, and the kernel then kills every process left in the PID namespace.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _records(raw: bytes, nonce: bytes) -> tuple[str | None, dict[int, list[str]], bool]:
    """(category, values by k, done) from the lines that carry this run's nonce; others are noise."""
    category: str | None = None
    values: dict[int, list[str]] = {}
    done = False
    prefix = nonce + b" "
    for line in raw.split(b"\n"):
        if not line.startswith(prefix):
            continue
        kind, _, rest = line[len(prefix):].partition(b" ")
        if kind == b"exc" and category is None:
            category = rest.decode("ascii", "replace")
        elif kind == b"value":
            k, _, value = rest.partition(b" ")
            if k.isdigit():
                values.setdefault(int(k), []).append(value.decode("utf-8", "replace"))
        elif kind == b"done":
            done = True
    return category, values, done


def _signal_of(returncode: int, sandboxed: bool) -> int | None:
    """The signal that killed the program: bwrap reports a child killed by signal s as 128 + s."""
    if returncode < 0:
        return -returncode
    if sandboxed and returncode > 128:
        return returncode - 128
    return None


def _classify(test: Test, io: _Collected, nonce: bytes) -> tuple[str, str | None]:
    """The test's status, and a note on why when the host's own check failed it."""
    if io.killed is not None:
        return io.killed, None
    category, values, done = _records(io.records, nonce)
    if category is None:  # no report: killed by a limit, or the launcher was taken down
        if _signal_of(io.returncode, io.sandboxed) == signal.SIGXCPU:
            return TIMEOUT, "killed at the CPU-time limit"
        return ERROR, f"the sandboxed process ended without a report (exit status {io.returncode})"
    if category in ("memory", "syntax", "assert"):
        return {"memory": MEMORY, "syntax": SYNTAX_ERROR, "assert": FAILED}[category], None
    if category != "ok":
        return ERROR, None
    if isinstance(test, StdioTest):
        if io.returncode != 0:
            return ERROR, f"exit status {io.returncode}"
        if not stdout_matches(io.stdout.decode("utf-8", "replace"), test.output):
            return FAILED, "stdout differs from the expected output"
        return OK, None
    if not done:
        return FAILED, "the test did not report that it ran to its end"
    mismatch = value_mismatch(test, values)
    return (FAILED, mismatch) if mismatch else (OK, None)


def _excerpt(data: bytes) -> str:
    text = data[: EXCERPT_CHARS * 4].decode("utf-8", "replace")
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "\n[... truncated]"


def parse_and_check(tests: Any, timeout_s: float, limits: dict[str, Any]) -> tuple[list[Test], Limits]:
    """Validate arguments shared by `run_python` and `run_many` (R1kitError on a bad one)."""
    _check_timeout(timeout_s)
    return parse_tests(tests), Limits.from_kwargs(**limits)
