"""The C allocator's settings for processes that run PyTorch or large numpy passes on the CPU.

glibc's malloc serves an allocation above its mmap threshold (128 KiB at first, raised up to 32 MiB as such
blocks are freed) with a fresh `mmap`, and returns free memory at the top of its heap to the kernel whenever
more than the trim threshold lies there. A CPU forward pass allocates and frees activations of a few MiB to a
few tens of MiB per layer and batch, so both happen on every batch, and every page of every such block is
faulted in and zeroed by the kernel again. On the demo's EfficientNet-Lite0 at 120x160, batches of 32, one
thread, the kernel's share (system time) was 40% of an embedding pass's wall time; with the settings below
the pass takes 0.65 of the time (benchmarks/allocator.py, results/allocator.json).

`keep_freed_memory` raises both thresholds, so a process keeps what it freed and reuses it: its resident
memory stays near its peak instead of shrinking between batches. It is called where a process starts its CPU
work (the `sare` command line, the functions Ray runs as the training worker, the extraction actor, the decode
task, the serving replica, the sweep's trial and finalisation, the city's render pool), never by library
functions such as `embed_paths` that other programs call. Only glibc has these settings; elsewhere it
does nothing. Set SARE_KEEP_FREED_MEMORY=0 to leave the allocator as it is (the benchmark's reference).
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger(__name__)

ENV_SWITCH = "SARE_KEEP_FREED_MEMORY"
MMAP_THRESHOLD = 64 << 20  # blocks up to 64 MiB come from the heap (larger ones: their layers' compute
                           # dwarfs the page faults; in the heap they fragmented it, VGG16 at 480x640 peaking higher)
TRIM_THRESHOLD = 1 << 30  # up to 1 GiB free at the heap's top is kept
GLIBC_MMAP_CAP = 32 << 20  # the highest mmap threshold older glibc versions accept (HEAP_MAX_SIZE / 2)
_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3

_state: dict[str, bool] = {}


def _glibc_mallopt():
    """glibc's `mallopt`, or None where the C library is another one (musl, macOS, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (present in glibc only)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt


def keep_freed_memory() -> bool:
    """Set this process's glibc mmap and trim thresholds to MMAP_THRESHOLD and TRIM_THRESHOLD (once per
    process; later calls return the first call's outcome; a glibc that caps the mmap threshold at 32 MiB gets
    that). Returns whether
    they are set: False where SARE_KEEP_FREED_MEMORY=0, where the C library is not glibc, or where glibc
    refused the mmap threshold (then the trim threshold is left too: raised alone, it turns off the mmap
    threshold's adaptation, which was slower than both defaults)."""
    if "applied" in _state:
        return _state["applied"]
    applied = False
    if os.environ.get(ENV_SWITCH, "1") != "0":
        mallopt = _glibc_mallopt()
        if mallopt is not None and (mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                                    or mallopt(_M_MMAP_THRESHOLD, GLIBC_MMAP_CAP) == 1):
            applied = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        log.debug("allocator thresholds %s", "set" if applied else "left as they were")
    _state["applied"] = applied
    return applied
