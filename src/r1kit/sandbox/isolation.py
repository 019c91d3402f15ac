"""How a sandboxed process is isolated: the bubblewrap command line, whether it works on this
machine, and the explicit opt-in to running without it.

The sandbox is bubblewrap (`bwrap`, the Debian/Ubuntu package `bubblewrap`), the unprivileged
namespace tool Flatpak uses. Each test runs as

    bwrap --unshare-all --unshare-net --unshare-pid --unshare-user --disable-userns --cap-drop ALL
          --die-with-parent --new-session --clearenv --setenv PATH /usr/bin:/bin
          --ro-bind /usr /usr  (and /bin, /lib ... as on the host)  --ro-bind PYTHON_PREFIX ...
          --dev /dev --remount-ro /dev --size TMP --tmpfs /tmp --chdir /tmp --remount-ro /
          PYTHON -I -S -X utf8 -c LAUNCHER JOB_FD RESULT_FD

so the program sees no network, no other process, no host file but the read-only system and
interpreter directories (not /etc, /home or /proc), an empty environment and a private, size-capped
/tmp; it dies with its parent. Options an older bwrap lacks (`--disable-userns`, `--size`,
`--clearenv`) are left out after reading `bwrap --help` (the process is started with an empty
environment anyway), and where a setuid or AppArmor-confined bwrap refuses the explicit user
namespace, the probe falls back to the command line without `--unshare-user --disable-userns`.

Without a working bwrap the code reward refuses to run (`require_sandbox`), unless the user opts in
to unsafe execution with `unsafe=True` or `R1KIT_UNSAFE_CODE_EXEC=1`; then programs run as plain
child processes, still under the launcher's rlimits and audit guard, in a fresh temporary directory,
and every run warns.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass

from r1kit.errors import R1kitError

UNSAFE_ENV = "R1KIT_UNSAFE_CODE_EXEC"
MINIMAL_PATH = "/usr/bin:/bin"
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/localtime")


class UnsafeCodeExecutionWarning(RuntimeWarning):
    """Untrusted code is running without the bubblewrap sandbox."""


# Every unsafe run should say so, not only the first one at a given line.
warnings.filterwarnings("always", category=UnsafeCodeExecutionWarning)


@dataclass(frozen=True)
class Isolation:
    """How to start the sandboxed interpreter: inside bwrap (`kind="bwrap"`) or bare (`"none"`)."""

    kind: str
    python: str
    """The interpreter that runs inside: the base interpreter of the running Python, stdlib only."""
    prefix_args: tuple[str, ...] = ()
    """bwrap and its options up to (not including) the tmpfs size and the command."""
    has_size: bool = False

    def command(self, inner: list[str], tmp_mb: int) -> list[str]:
        """The argv that runs `inner` (which starts with `self.python`) under this isolation."""
        if self.kind == "none":
            return inner
        size = ["--size", str(tmp_mb << 20)] if self.has_size else []
        return [*self.prefix_args, *size, "--tmpfs", "/tmp", "--chdir", "/tmp", "--remount-ro", "/", "--", *inner]


def find_bwrap() -> str | None:
    """The bwrap executable on PATH, or None (tests replace this to simulate a machine without it)."""
    return shutil.which("bwrap")


def sandbox_python() -> str:
    """The base interpreter behind the running one (a venv's python is a link to it)."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def _python_roots(python: str) -> list[str]:
    """Directories the interpreter needs: its prefix (stdlib, libpython) and its own directory."""
    roots: list[str] = []
    candidates = [sys.base_prefix, sys.base_exec_prefix, os.path.dirname(python)]
    for path in (os.path.realpath(p) for p in candidates):
        covered = any(path == r or path.startswith(r.rstrip("/") + "/") for r in (*SYSTEM_DIRS, *roots))
        if not covered and os.path.isdir(path):
            roots.append(path)
    return roots


@functools.lru_cache(maxsize=4)
def _bwrap_options(bwrap: str) -> frozenset[str]:
    try:
        text = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    return frozenset(opt for opt in ("--disable-userns", "--size", "--clearenv") if opt in text)


def bwrap_isolation(bwrap: str, python: str | None = None, strict: bool = True) -> Isolation:
    """The bwrap command line; `strict=False` drops the options a setuid or AppArmor-confined
    bwrap may refuse (an explicit user namespace, and `--disable-userns` inside it)."""
    python = python or sandbox_python()
    opts = _bwrap_options(bwrap)
    args = [bwrap, "--unshare-all", "--unshare-net", "--unshare-pid"]
    if strict:
        args.append("--unshare-user")
        if "--disable-userns" in opts:
            args.append("--disable-userns")
    args += ["--cap-drop", "ALL", "--die-with-parent", "--new-session"]
    if "--clearenv" in opts:
        args.append("--clearenv")
    args += ["--setenv", "PATH", MINIMAL_PATH]
    for d in SYSTEM_DIRS:
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
    for root in _python_roots(python):
        args += ["--ro-bind", root, root]
    for f in SYSTEM_FILES:
        args += ["--ro-bind-try", f, f]
    args += ["--dev", "/dev", "--remount-ro", "/dev"]
    return Isolation("bwrap", python, tuple(args), "--size" in opts)


@functools.lru_cache(maxsize=4)
def _probe(bwrap: str | None) -> tuple[Isolation | None, str | None]:
    """(the strictest bwrap command line that works here, None) or (None, why none does)."""
    if bwrap is None:
        return None, "`bwrap` was not found on PATH"
    problem = None
    for strict in (True, False):
        iso = bwrap_isolation(bwrap, strict=strict)
        try:
            proc = subprocess.run(
                iso.command([iso.python, "-I", "-S", "-c", "pass"], tmp_mb=1),
                capture_output=True,
                text=True,
                timeout=30,
                env={"PATH": MINIMAL_PATH},
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return None, f"`bwrap` could not be started ({exc})"
        if proc.returncode == 0:
            return iso, None
        if problem is None:
            first = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[0]
            problem = f"`bwrap` cannot create its namespaces here ({first})"
    return None, problem


def sandbox_problem() -> str | None:
    """Why the bubblewrap sandbox cannot run on this machine, or None when it can (cached)."""
    return _probe(find_bwrap())[1]


def unsafe_requested(unsafe: bool | None) -> bool:
    """The explicit opt-in: `unsafe=True`, or `unsafe=None` with R1KIT_UNSAFE_CODE_EXEC=1."""
    if unsafe is not None:
        return bool(unsafe)
    return os.environ.get(UNSAFE_ENV, "").strip().lower() in ("1", "true", "yes")


def unavailable_message(problem: str) -> str:
    return (
        f"code rewards run untrusted programs in a bubblewrap sandbox, but {problem}; install it with "
        "`apt-get install -y bubblewrap` (Debian/Ubuntu package `bubblewrap`) on a machine that allows "
        f"unprivileged user namespaces, or set {UNSAFE_ENV}=1 to run the programs without isolation "
        "on a machine you can afford to lose"
    )


def resolve(unsafe: bool | None = None) -> Isolation | None:
    """The isolation to use: bwrap when it works; bare when it does not and the user opted in;
    None when it does not and they did not."""
    iso, _ = _probe(find_bwrap())
    if iso is not None:
        return iso
    if unsafe_requested(unsafe):
        return Isolation("none", sandbox_python())
    return None


def require_sandbox(unsafe: bool | None = None) -> Isolation:
    """`resolve`, raising R1kitError (naming the `bubblewrap` package) instead of returning None."""
    iso = resolve(unsafe)
    if iso is None:
        raise R1kitError(unavailable_message(sandbox_problem() or "it is not available"))
    return iso


def warn_unsafe(stacklevel: int = 3) -> None:
    warnings.warn(
        f"running untrusted code WITHOUT the bubblewrap sandbox ({UNSAFE_ENV}=1 or unsafe=True): it can "
        "read your files and reach the network; install the `bubblewrap` package to isolate it",
        UnsafeCodeExecutionWarning,
        stacklevel=stacklevel,
    )
