"""Run untrusted Python against tests, isolated, with results the program cannot forge.

Code rewards execute whatever a policy writes, and RL finds every shortcut the reward leaves open,
so the sandbox has two jobs: contain the program, and make sure that a pass means the tests passed.

    run_python(code, tests, timeout_s=5.0, **limits) -> ExecResult   one program
    run_many(programs, tests, timeout_s=5.0, workers=None) -> list    a batch, in parallel

`ExecResult` has `passed`, `total`, `status` (ok, failed, error, syntax_error, timeout, memory,
output_limit, sandbox_unavailable; `test_status` per test also has skipped), `stdout`/`stderr`
excerpts and `wall_s`. Tests are assert strings or `{"input", "output"}` stdio pairs
(`r1kit.sandbox.spec`); limits are the fields of `Limits`.

Containment (`isolation`, `launcher`)
-------------------------------------
Every test is a fresh process under bubblewrap: new user, PID, network, IPC and UTS namespaces; no
network; read-only binds of the system and interpreter directories only; a private size-capped
tmpfs on /tmp; no /proc; an environment holding only PATH; no capabilities; `--die-with-parent` and
`--new-session`. Inside, the launcher sets rlimits before any user code runs (CPU seconds, address
space, processes, file size, open files, no core files; soft = hard, so they cannot be raised,
except a one-second grace between SIGXCPU and SIGKILL on CPU). The
host kills the whole sandbox at the wall-clock deadline (bwrap's process group; `--die-with-parent`
takes the namespace's PID 1 and with it every process inside) and stops reading output at a cap.
The kernel does not apply RLIMIT_NPROC to uid 0, so when r1kit runs as root the process limit rests
on the audit guard below, which refuses every way Python has to create a process, and on the
namespace teardown, which kills anything that escaped it.

Why a pass cannot be forged
---------------------------
A program can print anything, exit with any status at any moment (`sys.exit(0)`, `os._exit(0)`),
patch any builtin, kill what it can reach and run threads that outlive its tests. So the host never
trusts the program's stdout or exit status as a verdict. It decides each test itself:

1. **Stdio tests**: the host compares stdout with the expected output, which never enters the
   sandbox. Exiting early, fake "PASSED" lines or a patched `print` can only produce a wrong stdout.
2. **Values of `assert EXPR == LITERAL`**: the host removes LITERAL from the test before it enters
   the sandbox; the sandbox reports the value of EXPR and the host compares. Without the hidden
   literal a program can only pass by computing it -- an object whose `__eq__` always says yes is
   refused, since only built-in values are reported. (The test must also end, as in point 3.)
3. **Everything else in an assert test** passes only on a record `NONCE done` on a dedicated pipe,
   where NONCE is 128 random bits drawn by the host for this one test. The launcher writes it only
   after the test's code ran to its end without an exception. The program cannot write it because
   it cannot learn NONCE:
   * the nonce arrives on a pipe that is drained and closed before user code runs; it is not in
     argv, the environment or any file;
   * inside the process it lives only in a local variable of the *judge* thread. User code runs in
     a separate *worker* thread, and the main thread, the only one where Python signal handlers run
     (and receive the current frame), holds nothing. Every hand-over between threads goes through a
     list the receiver empties before user code can start;
   * a local variable is reachable only through a frame object, and a PEP 578 audit hook -- which
     Python code cannot remove -- refuses every way to get one (`sys._getframe`,
     `sys._current_frames`, `tb_frame`, `gi_frame`/`cr_frame`/`ag_frame`, `settrace`/`setprofile`),
     the garbage collector's object lists, ctypes and other raw-memory modules, native extensions
     from outside the standard library's own directories (a hand-written `.so` in /tmp, or numpy
     from a site-packages, whose arrays can view raw addresses), building code objects, process creation (a child could read the parent's memory), signals to other
     processes, /proc (not mounted anyway) and new audit hooks;
   * after user code has started, the judge calls nothing it looks up at run time: its functions
     were bound to locals before, and it builds records from exact `str`/`bytes`/`int` objects with
     the methods of those built-in types, which user code cannot patch, so no patched builtin or
     module ever receives the nonce.
   Killing the judge, closing or redirecting the pipe, or exiting early only loses the record, which
   is a failure. Lines the program writes to the pipe or to stdout without the nonce are ignored.

The residual risk is in point 3 alone. PEP 578 hooks are not designed as a security boundary, and
CPython has no bytecode verifier: a program that hand-crafts bytecode (say, marshal data loaded as a
module, which the import system needs and the guard therefore allows) can read its own memory, and
an unknown route from Python code to a frame would do as well; either would expose the nonce. Even
then the program stays inside the OS sandbox, and tests of shapes 1 and 2 stay unforgeable; the
built-in code task uses only those shapes. Prefer them in your own data (`assert f(x) == <literal>`).

Costs to user code: frames are unavailable (`traceback.print_exc()` and `inspect.stack()` fail;
`namedtuple`, `logging`, `typing` work), as are subprocesses, multiprocessing and asyncio; the
sandbox has the standard library only. Without bubblewrap, see `isolation` for the explicit opt-in
to unsafe execution.
"""

from r1kit.sandbox.isolation import UnsafeCodeExecutionWarning, require_sandbox, sandbox_problem
from r1kit.sandbox.pool import run_many
from r1kit.sandbox.runner import STATUSES, ExecResult, Limits, run_python

__all__ = [
    "STATUSES",
    "ExecResult",
    "Limits",
    "UnsafeCodeExecutionWarning",
    "require_sandbox",
    "run_many",
    "run_python",
    "sandbox_problem",
]
