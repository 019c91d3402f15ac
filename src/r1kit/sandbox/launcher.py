"""The program that runs inside the sandbox: one untrusted program against one test.

The host runs this file's source as `python -I -S -X utf8 -c <source> JOB_FD RESULT_FD` (see
`r1kit.sandbox.runner`). It imports nothing from r1kit: the sandbox sees the standard library only.
Why the records it writes cannot be forged is argued in `r1kit/sandbox/__init__.py`; the rules that
argument needs from this file are:

* The job pipe carries `NONCE (32 bytes) + marshal(job dict)`. It is read to the end and closed
  before any untrusted code runs, so nothing is left in it.
* Three threads. *main* reads the job, writes a stdio test's input, applies the rlimits, installs
  the audit guard, starts the judge and then only waits (signal handlers, the one place untrusted
  code could be handed main's frame, find nothing there). The *judge* holds the nonce and the result
  fd; it starts the *worker*, waits for it, and writes the records. The worker runs the user's code
  and then the test; it never holds the nonce.
* Every hand-over between threads goes through a list that the receiver empties before untrusted
  code can run, so no attribute of a reachable object leads to the nonce or to the outcome list.
* After untrusted code has started, the judge and the worker call nothing they look up at run time:
  every function they use was bound to a local (or a default argument) before, and every record is
  built from exact `str`/`bytes`/`int` values with the methods of those built-in types, which user
  code cannot patch.
* The guard (a PEP 578 audit hook, which cannot be removed from Python code) refuses every way to
  reach a frame object, the garbage collector's object lists, ctypes, native extensions loaded from
  outside the standard library's directories, building code objects, process creation, signals to
  other processes, /proc and new audit hooks.

Record lines on RESULT_FD: `NONCE exc CATEGORY`, `NONCE value K PAYLOAD` (K-th host-checked value,
PAYLOAD the repr of its plain-Python form) and `NONCE done` (the test ran to its end without an
exception). CATEGORY is one of ok, assert, exit, memory, syntax, error.
"""

import _thread
import os
import sys

JOB_NONCE_BYTES = 32
CATEGORIES = ("ok", "assert", "exit", "memory", "syntax", "error")
# Modules whose import would hand untrusted code raw memory, other interpreters or process spawning.
BLOCKED_MODULES = (
    "ctypes", "_ctypes", "_posixsubprocess", "_testcapi", "_testinternalcapi", "_testmultiphase",
    "_testsinglephase", "_testbuffer", "_testclinic", "_testimportmultiple", "_xxsubinterpreters",
    "_xxinterpchannels", "_interpreters", "_interpchannels", "_interpqueues", "_xxtestfuzz",
)


def _read_all(fd):
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _install_stdin(text):
    """A stdio test's input becomes fd 0; a memfd keeps it out of the size-limited /tmp."""
    data = text.encode("utf-8")
    try:
        fd = os.memfd_create("stdin")
    except (AttributeError, OSError):
        import tempfile

        fd = os.dup(tempfile.TemporaryFile().fileno())
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    os.dup2(fd, 0)
    os.close(fd)


def _set_limits(limits):
    """Soft equals hard (but for CPU), so untrusted code can lower a limit but never raise it."""
    import resource

    def cap(which, value, hard=None):
        try:
            resource.setrlimit(which, (value, value if hard is None else hard))
        except (ValueError, OSError):
            pass  # e.g. a limit the platform lacks; the host-side wall clock still applies

    # CPU: SIGXCPU at the soft limit (reported as a timeout); SIGKILL a second later if ignored.
    cap(resource.RLIMIT_CPU, int(limits["cpu_s"]), int(limits["cpu_s"]) + 1)
    cap(resource.RLIMIT_AS, int(limits["memory_mb"]) << 20)
    # RLIMIT_NPROC counts threads too; the kernel does not apply it to uid 0 (see __init__).
    cap(resource.RLIMIT_NPROC, int(limits["max_processes"]))
    cap(resource.RLIMIT_FSIZE, int(limits["max_file_mb"]) << 20)
    cap(resource.RLIMIT_NOFILE, int(limits["max_open_files"]))
    cap(resource.RLIMIT_CORE, 0)


def _install_guard(stdlib_dirs):
    """Install the audit hook. Its settings live in default arguments and code constants, never in a
    closure cell or a module global, because those can be rewritten by code that reaches them."""

    def guard(
        event,
        args,
        _dirs=stdlib_dirs,
        _blocked=BLOCKED_MODULES,
        _type=type,
        _str=str,
        _bytes=bytes,
        _int=int,
        _realpath=os.path.realpath,
        _dirname=os.path.dirname,
        _fsdecode=os.fsdecode,
        _getpid=os.getpid,
        _ValueError=ValueError,
        _AttributeError=AttributeError,
        _PermissionError=PermissionError,
        _ImportError=ImportError,
        _RuntimeError=RuntimeError,
    ):
        if event in (
            "sys._getframe", "sys._getframemodulename", "sys._current_frames", "sys._current_exceptions",
            "sys.settrace", "sys.setprofile", "gc.get_objects", "gc.get_referrers", "gc.get_referents",
        ) or event.startswith("sys.monitoring"):
            # ValueError: what the standard library's own sys._getframe call sites already catch.
            raise _ValueError(event + " is disabled in the r1kit sandbox")
        if event == "object.__getattr__":
            if args[1] in ("tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back"):
                raise _AttributeError("frame objects are not available in the r1kit sandbox")
            return
        if event == "code.__new__":
            raise _PermissionError("building code objects is disabled in the r1kit sandbox")
        if event == "sys.addaudithook":
            raise _RuntimeError("audit hooks are reserved by the r1kit sandbox")
        if event in (
            "os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "os.system",
            "subprocess.Popen", "pty.spawn", "os.startfile",
        ):
            raise _PermissionError("creating processes is disabled in the r1kit sandbox")
        if event == "os.kill":
            if _type(args[0]) is _int and args[0] == _getpid():
                return
            raise _PermissionError("signalling other processes is disabled in the r1kit sandbox")
        if event == "os.killpg":
            raise _PermissionError("signalling other processes is disabled in the r1kit sandbox")
        if event.startswith("ctypes."):
            raise _PermissionError("ctypes is disabled in the r1kit sandbox")
        if event == "import":
            name = args[0]
            if _type(name) is _str and (name in _blocked or name.split(".")[0] in _blocked):
                raise _ImportError("module " + name + " is disabled in the r1kit sandbox")
            path = args[1]
            if path is not None:  # a native extension is about to be loaded from `path`
                if _dirname(_realpath(_fsdecode(path))) in _dirs:
                    return
                raise _ImportError("native extensions from outside the standard library are disabled")
            return
        if event == "open":
            path = args[0]
            if _type(path) is _str or _type(path) is _bytes:
                real = _realpath(_fsdecode(path))
                if real == "/proc" or real.startswith("/proc/"):
                    raise _PermissionError("/proc is not available in the r1kit sandbox")

    sys.addaudithook(guard)


def _user_builtins():
    """`exit()`/`quit()` exist only when `site` runs, which -S skips; solutions use them."""
    import builtins

    def _exit(code=None):
        raise SystemExit(code)

    builtins.exit = builtins.quit = _exit


def _plain(value, depth=0):
    """`value` as built-in types only (namedtuple -> tuple, IntEnum -> int ...), so the host can
    rebuild it with `ast.literal_eval`; anything else is refused."""
    if depth > 200:
        raise ValueError("too deep")
    t = type(value)
    if value is None or t in (bool, int, float, complex, str, bytes):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, complex):
        return complex(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, tuple):
        return tuple(_plain(v, depth + 1) for v in value)
    if isinstance(value, list):
        return [_plain(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {_plain(k, depth + 1): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, frozenset):
        return frozenset(_plain(v, depth + 1) for v in value)
    if isinstance(value, set):
        return {_plain(v, depth + 1) for v in value}
    raise TypeError("not a built-in value")


def _make_checker(values, _plain=_plain, _repr=repr, _BaseException=BaseException):
    """`__r1kit_check__(k, value)`: records the value of the k-th host-checked assert. Bound to the
    real `repr`, so a patched builtin cannot change what is reported for an honest value."""

    def check(k, value):
        try:
            payload = _repr(_plain(value))
        except _BaseException:
            payload = "!unrepresentable"
        values.append((k, payload))

    return check


def _worker(
    wbox,
    _compile=compile,
    _exec=exec,
    _type=type,
    _BaseException=BaseException,
    _SystemExit=SystemExit,
    _AssertionError=AssertionError,
    _MemoryError=MemoryError,
    _SyntaxError=SyntaxError,
    _write=os.write,
    _sys=sys,
):
    """Run the user's code, then the test, in a fresh `__main__`; report [category, values]."""
    job, outcome, done = wbox[0], wbox[1], wbox[2]
    wbox.clear()
    try:
        values = []
        checker = _make_checker(values)
        module = _type(_sys)("__main__")
        namespace = module.__dict__
        stdio = job["mode"] == "stdio"
        test_source, code_source = job["test"], job["code"]
        job = None
        category, error = "error", None
        try:
            try:
                code = _compile(code_source, "<solution>", "exec", dont_inherit=True)
            except _SyntaxError as exc:
                category, error = "syntax", exc
            else:
                _sys.modules["__main__"] = module
                _sys.argv = ["solution.py"]
                _exec(code, namespace)
                if not stdio:
                    test = _compile(test_source, "<test>", "exec", dont_inherit=True)
                    namespace["__r1kit_check__"] = checker
                    _exec(test, namespace)
                category = "ok"
        except _SystemExit as exc:
            # A stdio program may end itself with status 0; in an assert test, exiting skips the test.
            category = "ok" if stdio and exc.code in (None, 0) else "exit"
            error = exc
        except _AssertionError as exc:
            category, error = "assert", exc
        except _MemoryError as exc:
            namespace.clear()  # free what the program holds, so the report itself can be written
            category, error = "memory", exc
        except _BaseException as exc:
            category, error = "error", exc
        for stream in (_sys.stdout, _sys.stderr):
            try:
                stream.flush()
            except _BaseException:
                pass
        if error is not None and category != "ok":
            try:  # the traceback module walks frames, which the guard refuses: the exception only
                import traceback

                text = "".join(traceback.format_exception_only(error))
                _write(2, text.encode("utf-8", "replace")[-4000:])
            except _BaseException:
                pass
        outcome.append(category)
        outcome.append(values)
    finally:
        done.release()


def _judge(
    box,
    _type=type,
    _str=str,
    _int=int,
    _list=list,
    _tuple=tuple,
    _len=len,
    _BaseException=BaseException,
    _ValueError=ValueError,
    _OSError=OSError,
    _write=os.write,
    _memoryview=memoryview,
    _exit=os._exit,
    _start=_thread.start_new_thread,
    _lock=_thread.allocate_lock,
    _stack_size=_thread.stack_size,
    _categories=CATEGORIES,
):
    """Hold the nonce; run the worker; write the records; end the process."""
    nonce, job, result_fd = box[0], box[1], box[2]
    box.clear()
    # Built before untrusted code runs, for when the program has left no memory to build a report.
    memory_line = nonce + b" exc memory\n"
    error_line = nonce + b" exc error\n"
    category = "error"
    try:
        outcome = []
        done = _lock()
        done.acquire()
        wbox = [job, outcome, done]
        job = None
        try:
            _stack_size(64 << 20)  # deep recursion is common in solutions: give the worker room
        except (_ValueError, _OSError):
            pass
        _start(_worker, (wbox,))
        try:
            _stack_size(0)
        except (_ValueError, _OSError):
            pass
        done.acquire()
        category = outcome[0] if _len(outcome) == 2 else "error"
        if _type(category) is not _str or category not in _categories:
            category = "error"
        lines = [nonce + b" exc " + category.encode()]
        values = outcome[1] if _len(outcome) == 2 else None
        if category == "ok" and _type(values) is _list:
            for item in values:
                if _type(item) is _tuple and _len(item) == 2 and _type(item[0]) is _int and _type(item[1]) is _str:
                    if "\n" not in item[1]:
                        k = _str(item[0]).encode()
                        lines.append(nonce + b" value " + k + b" " + item[1].encode("utf-8", "replace"))
            lines.append(nonce + b" done")
        view = _memoryview(b"\n".join(lines) + b"\n")
        while view:
            view = view[_write(result_fd, view):]
    except _BaseException:
        category = "memory" if category == "memory" else "error"
        try:
            _write(result_fd, memory_line if category == "memory" else error_line)
        except _BaseException:
            pass
    finally:
        _exit(0 if category == "ok" else 1)


def main():
    job_fd, result_fd = int(sys.argv[1]), int(sys.argv[2])
    raw = _read_all(job_fd)
    os.close(job_fd)
    import marshal  # built in, so no import cost; the job is written by the trusted host

    nonce = bytes(raw[:JOB_NONCE_BYTES])
    job = marshal.loads(raw[JOB_NONCE_BYTES:])
    raw = None
    if job["mode"] == "stdio":
        _install_stdin(job["input"])
    _set_limits(job["limits"])
    import types  # noqa: F401  -- reads a traceback's frame when first imported: before the guard

    # With -I -S, sys.path is the standard library alone; its directories (lib-dynload among them)
    # are the only places a native extension may come from -- not site-packages, whose packages
    # (numpy's arrays over raw addresses, say) could read memory.
    _install_guard(frozenset(os.path.realpath(p) for p in sys.path if os.path.isdir(p)))
    _user_builtins()
    box = [nonce, job, result_fd]
    nonce = job = None
    _thread.start_new_thread(_judge, (box,))
    forever = _thread.allocate_lock()
    forever.acquire()
    while True:  # the judge ends the process; main only waits, holding nothing worth reaching
        try:
            forever.acquire()
        except BaseException:
            pass


if __name__ == "__main__":
    main()
