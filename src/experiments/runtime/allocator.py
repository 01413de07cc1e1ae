"""Freed memory kept in the process for reuse (glibc's malloc), instead of handed back to the OS.

glibc gives freed memory back to the kernel in two cases: a block above the mmap threshold (128
KiB at first, rising to 32 MiB as such blocks are freed) is unmapped when it is freed, and free
memory at the top of the heap is trimmed once it passes the trim threshold (twice the mmap
threshold). Training allocates and frees the same few-MiB tensors at every step: a 64-wide
layer's activations at a 16,384-row minibatch are 4 MiB. So by default many of them come back as
fresh pages, and each 4 KiB page costs a page fault and a zeroed page when it is first touched.

:func:`keep_freed_memory` sets the trim threshold to ``hardware.keep_freed_mib`` and fixes the
mmap threshold at 32 MiB (glibc's own ceiling for it). Blocks up to 32 MiB then come from the
heap, and up to ``keep_freed_mib`` MiB of freed heap stay with the process for the next step.
Measured on 2 CPU cores (``bench/train_throughput.py``, the 1,024-env agent row), the page
faults of a training call fall from about 200k to under 15k. The numbers computed do not
change: only where the memory comes from does.

Blocks over 32 MiB are still unmapped as soon as they are freed, so a large one-off array does
not stay with the process. A C library other than glibc (musl, macOS) is left as it is.
"""

from __future__ import annotations

import ctypes
import logging

__all__ = ["MMAP_THRESHOLD_MIB", "keep_freed_memory"]

log = logging.getLogger(__name__)

MIB = 1 << 20
MMAP_THRESHOLD_MIB = 32  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit machines
# mallopt's parameter numbers (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def _glibc() -> ctypes.CDLL | None:
    """The process's own symbols if its C library is glibc (they have ``gnu_get_libc_version``
    and ``mallopt``), else None. ``CDLL(None)`` opens the running process, so no library search
    (``find_library`` starts ``ldconfig``) is made."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    return libc


def keep_freed_memory(mib: int | None) -> bool:
    """Keep up to ``mib`` MiB of freed memory in this process (see the module doc); True if
    glibc took the settings. ``None`` leaves glibc's defaults, and so does a C library that is
    not glibc."""
    if mib is None:
        return False
    libc = _glibc()
    if libc is None:
        log.debug("keep_freed_memory: the C library is not glibc; malloc left as it is")
        return False
    mmap_bytes = min(int(mib), MMAP_THRESHOLD_MIB) * MIB
    took = libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(mmap_bytes)) == 1
    took = libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(int(mib) * MIB)) == 1 and took
    log.debug(
        "keep_freed_memory: trim threshold %d MiB, mmap threshold %d MiB (%s)",
        mib,
        mmap_bytes // MIB,
        "set" if took else "refused",
    )
    return took
