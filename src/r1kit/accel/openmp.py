"""How torch's OpenMP threads wait between parallel regions; set before torch is imported.

OpenMP's default lets an idle thread spin for milliseconds before it sleeps. On a CPU shared with
other work that is ruinous: a spinning thread holds a core the thread it waits for needs. Pure
PASSIVE waits have the opposite cost: every parallel region wakes a sleeping thread, and a decode
step of a small model runs dozens of regions.

So r1kit's command line asks for PASSIVE waits with a short spin first: GNU OpenMP (libgomp, what
PyTorch's Linux wheels use) spins `SPIN_COUNT` times before it sleeps (GOMP_SPINCOUNT takes
precedence over the wait policy there), which covers the gap between a decode step's back-to-back
regions; other OpenMP runtimes ignore GOMP_SPINCOUNT and wait passively. The measurements are in
docs/BENCHMARKS.md. Under PASSIVE waits the accelerated rollout engine decodes a
small model on one thread (`r1kit.accel.engine`).

This is the one setting of `r1kit.accel` made before any config is read (OpenMP reads it when torch
loads it), so `run.accel=off` leaves it as it is. A user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT
wins: OMP_WAIT_POLICY=PASSIVE alone is fully passive, OMP_WAIT_POLICY=ACTIVE spins. Importing this
module imports nothing else (no torch).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

SPIN_COUNT = 1000
"""libgomp's spins before a waiting thread sleeps: enough to bridge the gap between a decode step's
back-to-back parallel regions, short enough not to hold a shared core for long."""


def default_waits(environ: MutableMapping[str, str] = os.environ) -> None:
    """Set r1kit's OpenMP waits in `environ` unless the user chose: PASSIVE, plus GOMP_SPINCOUNT =
    SPIN_COUNT when neither variable is set. Call it before torch is imported."""
    policy_set = "OMP_WAIT_POLICY" in environ
    environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if not policy_set:
        environ.setdefault("GOMP_SPINCOUNT", str(SPIN_COUNT))
