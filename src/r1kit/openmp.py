"""How torch's OpenMP threads wait between parallel regions; set before torch is imported.

OpenMP's default lets an idle thread spin for milliseconds before it sleeps. On a CPU shared with
other work that is ruinous: a spinning thread holds a core the thread it waits for needs (measured
on a loaded 2-core machine: one rollout 16 s with the default, 0.10 s with PASSIVE waits). Pure
PASSIVE waits have the opposite cost: every parallel region wakes a sleeping thread, ~60-100 us on
a virtual machine, and a decode step of a 13M-parameter model runs about seventy regions (rollout
of 64 rows x 128 tokens: 3.0-3.3 s PASSIVE, 2.5-2.7 s spinning).

So r1kit's command line asks for PASSIVE waits with a short spin first: GNU OpenMP (libgomp, what
PyTorch's Linux wheels use) spins `SPIN_COUNT` times before it sleeps (GOMP_SPINCOUNT takes
precedence over the wait policy there), which covers the gap between a decode step's back-to-back
regions; other OpenMP runtimes ignore GOMP_SPINCOUNT and wait passively. Measured on 2 cores
(`benchmarks/NOTES.md`, seventh round), the 13M rollout of 64 rows: at 128 tokens on a quiet
machine 2.46-2.50 s (3.05 s in one disturbed round); at 64 tokens with a busy loop on the other core 2.35-2.40 s against
2.07-2.14 s fully passive and 3.05-3.10 s with 3000 spins (the default spinning took 31 s there in
an earlier round).

A user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT wins: OMP_WAIT_POLICY=PASSIVE alone is fully
passive, OMP_WAIT_POLICY=ACTIVE spins.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

SPIN_COUNT = 1000
"""libgomp's spins before a waiting thread sleeps: about 10 us by libgomp's own rough estimate of
100000 spins per ms (up to 5x either way with the CPU)."""


def default_waits(environ: MutableMapping[str, str] = os.environ) -> None:
    """Set r1kit's OpenMP waits in `environ` unless the user chose: PASSIVE, plus GOMP_SPINCOUNT =
    SPIN_COUNT when neither variable is set. Call it before torch is imported."""
    policy_set = "OMP_WAIT_POLICY" in environ
    environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if not policy_set:
        environ.setdefault("GOMP_SPINCOUNT", str(SPIN_COUNT))
