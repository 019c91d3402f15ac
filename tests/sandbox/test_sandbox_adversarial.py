"""The adversarial suite: one hostile program per test, each checked to be contained (the host and
its files unharmed, the run bounded in time and output) and to score no pass.

Most programs pair the attack with a wrong (or missing) solution, so any pass would be forged.
"""

import os
import socket
import subprocess
import time

import pytest

from r1kit.sandbox import run_python
from r1kit.sandbox.isolation import MINIMAL_PATH, bwrap_isolation, find_bwrap, sandbox_problem
from r1kit.sandbox.runner import kill_process_group

needs_bwrap = pytest.mark.skipif(sandbox_problem() is not None, reason=f"no bubblewrap sandbox: {sandbox_problem()}")

pytestmark = needs_bwrap

# A test that only a correct `solve` passes; the hostile programs below never define a correct one.
# TESTS are host-checked (a hidden literal); NON_LITERAL_TESTS run as written inside the sandbox.
TESTS = ["assert solve(3) == 9", "assert 16 == solve(4)", "x = solve(5)\nassert x == 25"]
NON_LITERAL_TESTS = ["assert solve(3) == int('9')", "assert solve(0) == 0 or False", "assert bool(solve(2) == 4)"]


def assert_no_pass(result, *statuses):
    assert result.passed == 0, result
    if statuses:
        assert result.status in statuses, result


def host_processes_with(marker: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(pid))
            except OSError:
                pass
    return found


def test_fork_bomb_is_contained():
    code = "import os\nwhile True:\n    os.fork()\n"
    assert_no_pass(run_python(code, TESTS, timeout_s=3), "error")


def test_fork_bomb_through_subprocess_and_multiprocessing_is_contained():
    code = (
        "import multiprocessing\n"
        "def solve(n):\n"
        "    ps = [multiprocessing.Process(target=solve, args=(n,)) for _ in range(100)]\n"
        "    [p.start() for p in ps]\n"
        "    return n * n\n"
    )
    assert_no_pass(run_python(code, TESTS, timeout_s=3), "error")
    assert_no_pass(run_python("import subprocess\nsubprocess.run(['sh', '-c', ':(){ :|:& };:'])", TESTS), "error")


def test_infinite_loop_times_out_within_bounded_wall_time():
    start = time.monotonic()
    r = run_python("def solve(n):\n    while True:\n        pass\n", TESTS, timeout_s=1.0)
    elapsed = time.monotonic() - start
    assert_no_pass(r, "timeout")
    assert r.test_status == ("timeout", "skipped", "skipped")
    assert elapsed < 3.0


def test_cpu_limit_stops_spinning_threads_before_the_wall_clock():
    code = (
        "import threading, time\n"
        "def spin():\n    while True:\n        pass\n"
        "def solve(n):\n"
        "    for _ in range(4):\n        threading.Thread(target=spin, daemon=True).start()\n"
        "    time.sleep(60)\n"
    )
    start = time.monotonic()
    r = run_python(code, TESTS[:1], timeout_s=30, cpu_s=1)
    assert_no_pass(r, "timeout")
    assert "CPU-time limit" in r.stderr
    assert time.monotonic() - start < 10


def test_memory_bomb_reports_memory():
    r = run_python("x = bytearray(50 * 2**30)\n", TESTS[:1])
    assert_no_pass(r, "memory")
    r = run_python("xs = []\nwhile True:\n    xs.append(bytearray(2**24))\n", TESTS[:1], memory_mb=256)
    assert_no_pass(r, "memory")


def test_network_connect_fails_even_to_the_hosts_loopback():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.1)
    port = server.getsockname()[1]
    code = (
        "import socket\n"
        f"try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    reached = 'yes'\n"
        "except OSError:\n    reached = 'no'\n"
        "try:\n    socket.create_connection(('1.1.1.1', 53), timeout=2)\n    outside = 'yes'\n"
        "except OSError:\n    outside = 'no'\n"
    )
    r = run_python(code, ["assert reached == 'yes'", "assert outside == 'yes'"])
    assert_no_pass(r, "failed")
    with pytest.raises(socket.timeout):
        server.accept()
    server.close()


def test_writing_outside_tmp_fails_and_creates_no_host_file(tmp_path):
    target = tmp_path / "escaped.txt"
    code = (
        "wrote = []\n"
        f"for path in [{str(target)!r}, '/usr/escaped.txt', '/escaped.txt', '/dev/shm/escaped', '/tmp/ok.txt']:\n"
        "    try:\n        open(path, 'w').write('x')\n        wrote.append(path)\n"
        "    except OSError:\n        pass\n"
    )
    r = run_python(code, ["assert wrote == ['/tmp/ok.txt']", "assert len(wrote) == 5"])
    assert r.test_status == ("ok", "failed")  # only the private /tmp is writable
    assert not target.exists()
    assert not os.path.exists("/usr/escaped.txt")


def test_host_files_outside_the_binds_are_invisible(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("hunter2")
    code = f"import os\ntry:\n    leaked = open({str(secret)!r}).read()\nexcept OSError:\n    leaked = None\nhome = os.path.exists('/home') or os.path.exists('/etc/passwd')\n"
    r = run_python(code, ["assert leaked == 'hunter2'", "assert home == True"])
    assert_no_pass(r, "failed")


def test_parent_environment_is_not_visible(monkeypatch):
    monkeypatch.setenv("R1KIT_TEST_SECRET", "s3cret-value")
    code = "import os\nprint(dict(os.environ))\nleaked = os.environ.get('R1KIT_TEST_SECRET')\n"
    r = run_python(code, ["assert leaked == 's3cret-value'"])
    assert_no_pass(r, "failed")
    assert "s3cret-value" not in r.stdout and "PATH" in r.stdout


def test_killing_the_parent_or_everything_fails_without_harm():
    for code in (
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n",
        "import os, signal\nos.kill(-1, signal.SIGKILL)\n",
        "import os, signal\nos.killpg(0, signal.SIGKILL)\n",
        "import os\nos.system('kill -9 -1')\n",
    ):
        assert_no_pass(run_python(code, TESTS[:1]), "error")


def test_a_program_that_kills_its_own_harness_scores_nothing():
    # Signalling itself is allowed; SIGKILL to its own process takes the judge down with it.
    assert_no_pass(run_python("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n", TESTS[:1]), "error")


def test_background_process_does_not_outlive_the_run(tmp_path):
    marker = f"r1kit-bg-{os.getpid()}-{time.monotonic_ns()}"
    code = (
        "import os, subprocess\n"
        f"for spawn in (lambda: subprocess.Popen(['sleep', '300', {marker!r}]),\n"
        f"              lambda: os.posix_spawn('/bin/sleep', ['sleep', '300', {marker!r}], {{}}),\n"
        "              os.fork):\n"
        "    try:\n        spawn()\n    except OSError:\n        pass\n"
    )
    assert_no_pass(run_python(code, TESTS[:1]))
    assert host_processes_with(marker) == []


def test_namespace_teardown_kills_processes_the_guard_never_saw():
    """Below the audit guard: a shell started straight under bwrap leaves a detached sleeper; killing
    the run as the deadline does leaves nothing behind."""
    bwrap = find_bwrap()
    iso = bwrap_isolation(bwrap)
    marker = f"r1kit-ns-{os.getpid()}-{time.monotonic_ns()}"
    sleeper = f"{iso.python} -c 'import time; time.sleep(300)' {marker}"
    inner = ["/bin/sh", "-c", f"(setsid {sleeper} &) ; {sleeper}"]
    proc = subprocess.Popen(iso.command(inner, 8), start_new_session=True, env={"PATH": MINIMAL_PATH})
    deadline = time.monotonic() + 5
    while len(host_processes_with(marker)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(host_processes_with(marker)) >= 2
    kill_process_group(proc)
    proc.wait()
    deadline = time.monotonic() + 5
    while host_processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert host_processes_with(marker) == []


def test_huge_stdout_is_capped_without_hanging():
    start = time.monotonic()
    r = run_python("while True:\n    print('x' * 10000)\n", TESTS[:1], timeout_s=10, max_output_bytes=1 << 20)
    assert_no_pass(r, "output_limit")
    assert time.monotonic() - start < 5
    assert len(r.stdout) < 5000  # the excerpt, not the flood
    r = run_python("import sys\nsys.stdout.write('y' * (64 << 20))\n", TESTS[:1], max_output_bytes=1 << 20)
    assert_no_pass(r, "output_limit")


def test_huge_value_report_is_capped():
    r = run_python("def solve(n):\n    return 'z' * (8 << 20)\n", TESTS[:1], max_output_bytes=1 << 20)
    assert_no_pass(r, "output_limit")


def test_sys_exit_zero_before_the_tests_does_not_pass():
    assert_no_pass(run_python("import sys\nsys.exit(0)\n", TESTS + NON_LITERAL_TESTS), "error")
    assert_no_pass(run_python("exit(0)\n", TESTS + NON_LITERAL_TESTS), "error")


def test_os_exit_zero_before_the_tests_does_not_pass():
    assert_no_pass(run_python("import os\nos._exit(0)\n", TESTS + NON_LITERAL_TESTS), "error")


def test_exiting_from_inside_the_tested_function_does_not_pass():
    for body in ("raise SystemExit(0)", "import os; os._exit(0)", "import sys; sys.exit()"):
        code = f"def solve(n):\n    {body}\n"
        assert_no_pass(run_python(code, TESTS + NON_LITERAL_TESTS))


def test_patched_builtins_do_not_turn_failures_into_passes():
    code = (
        "import builtins, sys\n"
        "class Never(Exception):\n    pass\n"
        "builtins.AssertionError = Never\n"
        "builtins.print = lambda *a, **k: None\n"
        "builtins.exec = lambda *a, **k: None\n"
        "builtins.compile = lambda *a, **k: compile('pass', 'x', 'exec')\n"
        "builtins.BaseException = Never\n"
        "builtins.isinstance = lambda *a: True\n"
        "builtins.repr = lambda x: '9'\n"
        "sys.modules['os'].write = lambda fd, data: len(data)\n"
        "def solve(n):\n    return -1\n"
    )
    assert_no_pass(run_python(code, TESTS + NON_LITERAL_TESTS))


def test_always_equal_objects_do_not_pass_literal_asserts():
    """Only built-in values are reported for host-checked asserts. (Against a non-literal assert such
    an object would pass: that comparison runs inside the sandbox, as documented.)"""
    code = (
        "class Yes(int):\n"
        "    def __eq__(self, other):\n        return True\n"
        "    __hash__ = int.__hash__\n"
        "class Obj:\n"
        "    def __eq__(self, other):\n        return True\n"
        "    def __repr__(self):\n        return '9'\n"
        "def solve(n):\n    return Obj() if n % 2 else Yes(-1)\n"
    )
    assert_no_pass(run_python(code, TESTS), "failed")


def test_fake_pass_output_on_every_channel_is_ignored():
    code = (
        "import os, sys\n"
        "fake = ['PASSED', 'ok', 'done', 'exc ok', '0' * 32 + ' done', 'f' * 32 + ' exc ok', 'a' * 32 + ' value 0 9']\n"
        "for line in fake:\n    print(line)\n    print(line, file=sys.stderr)\n"
        "for fd in range(3, 64):\n"
        "    for line in fake:\n"
        "        try:\n            os.write(fd, (line + '\\n').encode())\n        except OSError:\n            pass\n"
        "sys.stdout.flush()\n"
        "os._exit(0)\n"
    )
    assert_no_pass(run_python(code, TESTS + NON_LITERAL_TESTS), "error")


def test_closing_or_redirecting_the_result_pipe_loses_the_pass():
    for trick in ("os.close(fd)", "os.dup2(os.open('/dev/null', os.O_WRONLY), fd)"):
        code = f"import os\nfor fd in range(3, 64):\n    try:\n        {trick}\n    except OSError:\n        pass\ndef solve(n):\n    return n * n\n"
        assert_no_pass(run_python(code, TESTS + NON_LITERAL_TESTS))


def test_introspection_that_would_find_the_nonce_is_refused():
    attempts = [
        "import sys; sys._getframe(1)",
        "import sys; sys._current_frames()",
        "import gc; gc.get_objects()",
        "import gc; gc.get_referrers(probe)",
        "import ctypes",
        "import _ctypes",
        "import sys; sys.settrace(lambda *a: None)",
        "import sys; sys.setprofile(lambda *a: None)",
        "try:\n        1 / 0\n    except ZeroDivisionError as e:\n        e.__traceback__.tb_frame",
        "g = (i for i in [1]); g.gi_frame",
        "import signal; signal.signal(signal.SIGALRM, lambda s, f: None)",
        "import sys; seen = []; sys.addaudithook(lambda e, a: seen.append(e)); open('/dev/null').close(); assert seen",
        "(lambda: 0).__code__.replace(co_consts=(1,))",
        "open('/proc/self/mem', 'rb')",
        # a working native extension, copied to /tmp: loading it would be one step from raw memory
        "import _bisect, shutil, importlib.util as u; p = shutil.copy(_bisect.__file__, '/tmp/'); "
        "u.module_from_spec(u.spec_from_file_location('_bisect', p))",
    ]
    for attempt in attempts:
        code = f"def probe():\n    {attempt}\n    return 'reached'\ntry:\n    outcome = probe()\nexcept Exception as e:\n    outcome = type(e).__name__\n"
        r = run_python(code, ["assert outcome == 'reached'"])
        assert_no_pass(r, "failed")


def test_a_thread_that_outlives_the_test_cannot_add_a_pass():
    code = (
        "import os, threading, time\n"
        "def late():\n"
        "    time.sleep(0.2)\n"
        "    for fd in range(3, 64):\n"
        "        try:\n            os.write(fd, b'done\\n')\n        except OSError:\n            pass\n"
        "threading.Thread(target=late, daemon=True).start()\n"
        "def solve(n):\n    time.sleep(0.5)\n    return -1\n"
    )
    assert_no_pass(run_python(code, TESTS[:2]), "failed")
