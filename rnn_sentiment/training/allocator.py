"""Training's memory-allocator setting: reuse freed memory between steps (glibc only).

``training.keep_freed_memory``; measured in README "Training speed".
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

# glibc's mallopt() parameters and their defaults
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536


@cache
def _mallopt() -> Any:
    """glibc's ``mallopt`` and ``malloc_trim``, or None on any other C library."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


def keep_freed_memory() -> bool:
    """Let training reuse the memory it frees instead of handing it back to the system.

    With glibc's defaults every step's large activations and gradients come from fresh pages:
    large blocks are mapped on their own and unmapped when freed, and the top of the heap is
    trimmed, so the next step faults the same amount back in, zeroed by the kernel. For a
    one-layer LSTM (batch 64, 230 tokens) that is about 28,000 page faults per step; for 800
    tokens 150,000, a third of the step. Serving every block from the heap and trimming it only
    past 2 GiB free brings that close to zero. Results are bit-for-bit the same. The cost is
    memory: freed blocks stay with the process and batches of varying length fragment them
    (``imdb-lstm`` in bf16 peaked at 5.1 GB instead of 1.7 GB in one measured run). Threads
    other than the main one still map blocks over 64 MiB on their own. Returns whether it
    applied (glibc only); :func:`release_freed_memory` undoes it.
    """
    libc = _mallopt()
    if libc is None:
        return False
    mapped = libc.mallopt(_M_MMAP_MAX, 0)
    trimmed = libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    return bool(mapped and trimmed)


def release_freed_memory() -> None:
    """Back to glibc's default limits, and hand the memory kept so far back to the system."""
    libc = _mallopt()
    if libc is not None:
        libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
        libc.malloc_trim(0)


@contextmanager
def freed_memory_kept(enabled: bool) -> Iterator[bool]:
    """:func:`keep_freed_memory` for the ``with`` block only; yields whether it applied."""
    kept = enabled and keep_freed_memory()
    try:
        yield kept
    finally:
        if kept:
            release_freed_memory()


def wants_kept_memory(setting: bool | None, cell: str) -> bool:
    """``training.keep_freed_memory``; None: on for LSTMs (the cell it speeds up, 1.4-1.6x)
    where memory is plentiful (16 GiB or more, within the container's limit)."""
    if setting is not None:
        return setting
    return cell == "lstm" and _memory_limit() >= 16 * 2**30


def _memory_limit() -> int:
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 0
    for cgroup in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(cgroup).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total
