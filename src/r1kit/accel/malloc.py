"""glibc's malloc told to keep freed memory: large CPU tensors reuse heap pages.

By default glibc serves every large block (from 128 KiB, a threshold it raises as blocks are freed,
up to 32 MiB) with a fresh anonymous mapping and unmaps it on free. Every new tensor of tens of MB
then pays a page fault per 4 KiB on first touch, and a GRPO step makes hundreds of such tensors.
`keep_freed_memory` turns the mappings off (M_MMAP_MAX = 0) and keeps up to 2 GiB of freed memory
in the heap (M_TRIM_THRESHOLD), so the next tensor of that size reuses pages already faulted in
(docs/BENCHMARKS.md). Memory freed during the run then stays with the process, and torch's aligned
blocks fragment the heap somewhat: peak memory is a little higher.
"""

from __future__ import annotations

import ctypes
import platform


def keep_freed_memory(device: str) -> bool:
    """On a CPU device under glibc, have malloc serve large blocks from the heap (no mmap) and keep
    up to 2 GiB of freed memory there; True when applied. Elsewhere (a GPU, macOS, musl) it does
    nothing: GPU tensors have torch's caching allocator. For the whole process, once set."""
    if not str(device).startswith("cpu") or not _glibc():
        return False
    try:
        libc = ctypes.CDLL(None)
        m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):
        return False


def release_free_memory() -> bool:
    """Give the heap's free pages back to the OS (glibc's malloc_trim); True when glibc did. A
    forked rollout worker calls it once it has dropped what it inherited and will not use."""
    if not _glibc():
        return False
    try:
        return bool(ctypes.CDLL(None).malloc_trim(0))
    except (OSError, AttributeError):
        return False


def _glibc() -> bool:
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
