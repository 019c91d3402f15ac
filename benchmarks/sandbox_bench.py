"""How fast the code sandbox scores programs, and what the isolation costs.

Prints:
  1. sandboxed executions per second through the worker pool for a trivial program (one assert test),
  2. the same for a program that burns one second of CPU (the pool's ceiling is workers / 1 s),
  3. per-execution latency, one at a time, of the same trivial program run
       - as a plain `python -c` subprocess (no harness, no isolation),
       - by r1kit's launcher without bubblewrap (rlimits + audit guard + verdict protocol),
       - by the full sandbox (bubblewrap + launcher),
     and the sandbox's overhead over the plain subprocess.

Usage: python benchmarks/sandbox_bench.py [--workers 2] [--trivial 200] [--cpu 8] [--latency 50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time

from r1kit.sandbox import require_sandbox, run_many
from r1kit.sandbox.isolation import MINIMAL_PATH, Isolation
from r1kit.sandbox.runner import Limits, run_program
from r1kit.sandbox.spec import parse_tests

TRIVIAL = "def f(x):\n    return x + 1\n"
TRIVIAL_TEST = "assert f(1) == 2"
CPU_SECOND = (
    "import time\n"
    "def burn():\n"
    "    start = time.process_time()\n"
    "    while time.process_time() - start < 1.0:\n"
    "        pass\n"
    "    return 1\n"
)
CPU_TEST = "assert burn() == 1"


def throughput(program: str, test: str, n: int, workers: int, timeout_s: float) -> tuple[float, int]:
    start = time.perf_counter()
    results = run_many([program] * n, [[test]] * n, timeout_s=timeout_s, workers=workers)
    elapsed = time.perf_counter() - start
    return n / elapsed, sum(r.status == "ok" for r in results)


def latency_ms(run, n: int) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="parallel sandboxes (default 2: a 2-core laptop)")
    parser.add_argument("--trivial", type=int, default=200, help="trivial programs to run through the pool")
    parser.add_argument("--cpu", type=int, default=8, help="one-CPU-second programs to run through the pool")
    parser.add_argument("--latency", type=int, default=50, help="sequential runs per latency measurement")
    args = parser.parse_args()

    sandbox = require_sandbox()
    print(f"sandbox: {sandbox.kind}, interpreter {sandbox.python}, workers {args.workers}")

    rate, ok = throughput(TRIVIAL, TRIVIAL_TEST, args.trivial, args.workers, 10.0)
    print(f"trivial program, pool of {args.workers}:        {rate:7.1f} sandboxed executions/s  ({ok}/{args.trivial} ok)")
    rate, ok = throughput(CPU_SECOND, CPU_TEST, args.cpu, args.workers, 10.0)
    print(
        f"1-CPU-second program, pool of {args.workers}:   {rate:7.2f} sandboxed executions/s  ({ok}/{args.cpu} ok; "
        f"ceiling {args.workers / 1.0:.2f})"
    )

    plain = [sandbox.python, "-I", "-S", "-c", TRIVIAL + TRIVIAL_TEST]
    specs = parse_tests([TRIVIAL_TEST])
    bare = Isolation("none", sandbox.python)
    plain_ms = latency_ms(lambda: subprocess.run(plain, check=True, env={"PATH": MINIMAL_PATH}), args.latency)
    launcher_ms = latency_ms(lambda: run_program(TRIVIAL, specs, 10.0, Limits(), bare), args.latency)
    sandbox_ms = latency_ms(lambda: run_program(TRIVIAL, specs, 10.0, Limits(), sandbox), args.latency)
    print(f"latency, one at a time (median of {args.latency}):")
    print(f"  plain subprocess `python -c`:        {plain_ms:6.1f} ms")
    print(f"  r1kit launcher, no bubblewrap:       {launcher_ms:6.1f} ms")
    print(f"  full sandbox (bubblewrap+launcher):  {sandbox_ms:6.1f} ms")
    print(f"sandbox overhead over a plain subprocess: {sandbox_ms - plain_ms:+.1f} ms per execution ({sandbox_ms / plain_ms:.1f}x)")
    # Wall times, so other work on the machine inflates them; the load average says how much.
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
