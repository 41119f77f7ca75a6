"""Keep freed memory in the process rather than handing it back to the kernel between network calls.

glibc serves blocks above M_MMAP_THRESHOLD with their own mmap and returns the top of its heap to the
kernel once more than M_TRIM_THRESHOLD of it is free. Both thresholds move with the sizes the process
happens to free first, so the same network, run the same way, touches fresh pages on some runs and not on
others: the bundled default at 256x256 page-faulted 0 or 15-170 times a call, depending on the process
(5 of 8 processes on a loaded machine), at 1.7 us a fault on our VM, up to 0.3 ms of its 3.1 ms
(docs/results.md, "Speed: the rows timed in turns, freed memory kept..."). Fixed thresholds make every
process the one that reuses its memory. The price is memory kept: a process holds on to up to
TRIM_THRESHOLD of freed heap.
"""
from __future__ import annotations

import ctypes
import os
import platform
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
MMAP_THRESHOLD = 32 << 20  # the ceiling glibc's own moving threshold stops at; photos above it keep their mmap
TRIM_THRESHOLD = 256 << 20
ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")  # glibc's own variables: the user's choice wins

_state = {"setting": "allocator defaults"}


def keep_freed_memory() -> str:
    """Fix glibc's thresholds for this process (once; later calls just report). Returns what is in force."""
    if _state["setting"] != "allocator defaults":
        return _state["setting"]
    if any(k in os.environ for k in ENV):
        _state["setting"] = "glibc: " + ", ".join(f"{k}={os.environ[k]}" for k in ENV if k in os.environ)
    elif sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        try:
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):  # a static or unusual build: leave the allocator as it is
            return _state["setting"]
        mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
        if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1:
            _state["setting"] = f"glibc: mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim {TRIM_THRESHOLD >> 20} MiB"
    return _state["setting"]


def heap_setting() -> str:
    """What keep_freed_memory put in force in this process ("allocator defaults" if nothing)."""
    return _state["setting"]
