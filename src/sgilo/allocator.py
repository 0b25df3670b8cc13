"""Keep freed memory in the process, so that large CPU tensors are not page-faulted in afresh at every step.

glibc's malloc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh `mmap` and returns
it to the kernel on `free`. A 1024² StyleGAN2 step allocates and frees activations of hundreds of MiB each time,
so every step touches newly mapped, zero-filled pages: the kernel's page-fault handling then takes as long as the
arithmetic (system time equal to user time; docs/benchmarks.md). With mmap off and a high trim threshold, freed
blocks stay in the heap and the next step reuses them.

The cost is a higher peak resident size (freed blocks are not returned; fragmentation can keep more), measured
in docs/benchmarks.md. `SGILO_MALLOC=system` leaves the C library's defaults, for a machine where memory is tighter
than time. On a C library without `mallopt` (macOS, musl) nothing changes, and the log says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os

log = logging.getLogger("sgilo")

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's malloc.h
_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: keep up to 2 GiB of free memory at the top of the heap
ENV = "SGILO_MALLOC"


@functools.cache
def retain_freed_memory() -> str:
    """Set glibc's malloc to reuse freed memory (once per process). Returns what was done, for logs and benchmarks:
    "retain", "system" (asked for by SGILO_MALLOC) or "unavailable"."""
    choice = os.environ.get(ENV, "retain")
    if choice not in ("retain", "system"):
        raise ValueError(
            f"{ENV}={choice!r}: expected 'retain' (the default: reuse freed memory) or 'system' (the C library's defaults)"
        )
    if choice == "system":
        log.info("%s=system: the C library's malloc settings are left as they are", ENV)
        return "system"
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None or not (mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)):
        log.info("malloc settings unchanged: this C library has no glibc mallopt")
        return "unavailable"
    return "retain"
