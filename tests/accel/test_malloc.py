"""run.keep_freed_memory: large CPU tensors reuse the heap instead of faulting in fresh pages."""

from __future__ import annotations

import ast
import ctypes
import platform
import subprocess
import sys

import pytest

from r1kit.accel.malloc import keep_freed_memory

# glibc's own account of its memory (mallinfo2, glibc >= 2.33) while a 64 MiB tensor is allocated
# and freed 30 times: per cycle, how much it mapped on its own and how much its heap grew.
PROBE = """
import ctypes, sys, torch
from r1kit.accel.malloc import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "on":
    assert keep_freed_memory("cpu")
cycles = []
for _ in range(30):
    before = libc.mallinfo2()
    x = torch.ones(16 * 2**20)  # 64 MiB, written and freed
    live = libc.mallinfo2()
    del x
    cycles.append((live.hblkhd - before.hblkhd, live.arena - before.arena))
print(cycles)
"""
MIB_64 = 64 * 2**20


def has_mallinfo2() -> bool:
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc" and hasattr(ctypes.CDLL(None), "mallinfo2")


@pytest.mark.skipif(not has_mallinfo2(), reason="a glibc malloc setting, observed through mallinfo2 (glibc >= 2.33)")
def test_large_tensors_reuse_freed_memory_instead_of_faulting_in_fresh_pages():
    cycles = {}
    for mode in ("off", "on"):
        out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
        cycles[mode] = ast.literal_eval(out.stdout.strip().splitlines()[-1])
    # By default glibc maps a block this large on its own and unmaps it when freed: fresh pages every time.
    assert all(mapped >= MIB_64 for mapped, _ in cycles["off"])
    # With the setting every block comes from the heap. torch asks for 64-byte aligned blocks, which
    # glibc cannot always place in the block just freed, so the heap grows for the first few cycles
    # (3 to 7 seen here); then the freed memory serves every allocation.
    assert all(mapped == 0 for mapped, _ in cycles["on"])
    assert [grown for _, grown in cycles["on"][-10:]] == [0] * 10


def test_it_leaves_other_devices_alone():
    assert keep_freed_memory("cuda") is False and keep_freed_memory("cuda:1") is False
