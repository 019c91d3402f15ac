"""r1kit's OpenMP waits: PASSIVE after a short libgomp spin, unless the user chose; set before torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from r1kit.accel.openmp import SPIN_COUNT, default_waits

REPO = Path(__file__).resolve().parents[1]


def test_nothing_set_gets_passive_waits_after_a_short_spin():
    environ: dict[str, str] = {}
    default_waits(environ)
    assert environ == {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": str(SPIN_COUNT)}


@pytest.mark.parametrize("policy", ["ACTIVE", "PASSIVE", "passive"])
def test_a_users_wait_policy_is_left_alone_and_gets_no_spin_count(policy):
    # GOMP_SPINCOUNT overrides the policy in libgomp: setting it would undo ACTIVE, and PASSIVE alone
    # is how a user asks for threads that sleep at once.
    environ = {"OMP_WAIT_POLICY": policy}
    default_waits(environ)
    assert environ == {"OMP_WAIT_POLICY": policy}


def test_a_users_spin_count_is_kept():
    environ = {"GOMP_SPINCOUNT": "0"}
    default_waits(environ)
    assert environ == {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "0"}


def test_the_command_line_sets_the_waits_before_torch_is_imported():
    # OpenMP reads its environment once, when torch loads it: record what torch's import sees.
    probe = (
        "import builtins, os, sys\n"
        "real = builtins.__import__\n"
        "def spy(name, *args, **kwargs):\n"
        "    if name.split('.')[0] == 'torch' and 'torch' not in sys.modules:\n"
        "        print('at torch import:', os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))\n"
        "    return real(name, *args, **kwargs)\n"
        "builtins.__import__ = spy\n"
        "import r1kit.cli\n"
        "import torch\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"at torch import: PASSIVE {SPIN_COUNT}"
