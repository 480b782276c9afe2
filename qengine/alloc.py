"""glibc malloc settings for processes that move large messages (workers, the czar).

Result messages are ~4 MiB ``bytes`` objects. glibc serves allocations that large with a fresh
``mmap`` and returns them with ``munmap`` on free (its threshold adapts, but per arena and not
for long), so every message's pages are faulted in and zeroed again: 300,000 minor faults per
GiB streamed, ~0.5 s of CPU on each side. Fixed thresholds keep freed message buffers in the heap
for the next message. These are the same knobs as ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_``; an explicit environment setting wins.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["tune_for_large_messages"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's maximum on 64-bit: larger blocks are always mmapped
TRIM_THRESHOLD = 256 << 20  # free heap kept before returning memory to the kernel

_done = False


def tune_for_large_messages() -> bool:
    """Apply the settings once per process; False where there is no glibc (or it refuses)."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = True
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        ok &= mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        ok &= mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    _done = ok
    return ok
