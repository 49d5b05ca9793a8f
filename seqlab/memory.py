"""A bound on the C heap's growth in long prediction jobs (``seqlab predict``, ``seqlab serve``).

glibc's malloc serves blocks above its *mmap threshold* from mappings of their own, returned to
the system when freed, and the rest from its heap. The threshold is dynamic: each time a mapped
block is freed it rises to that block's size (up to 32 MiB on 64-bit systems). After the first
few batches, then, a batch's activations (a few MiB to tens of MiB each, in as many sizes as
there are batch shapes) come from the heap, whose free space fragments: resident memory keeps
growing with the number of batch shapes seen, that is with the input's length (CoNLL-2003
sentences, the embedded encoder: peak RSS 1,067 MiB at 10,000 lines, 1,275 at 100,000).

Fixing the threshold keeps the large activations in mappings and peak memory flat in the
input's length, for the cost of mapping them afresh (docs/benchmarks.md has both figures).
Other C libraries, and a threshold the user set (``MALLOC_MMAP_THRESHOLD_``), are left alone;
``SEQLAB_MMAP_THRESHOLD`` sets another threshold in bytes, or ``dynamic`` keeps glibc's own.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

MMAP_THRESHOLD = 8 << 20  # bytes
_MAX_THRESHOLD = 32 << 20  # the most glibc's mallopt accepts on 64-bit systems
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)


def fix_mmap_threshold(nbytes: int | None = None) -> bool:
    """Fix glibc's mmap threshold at ``nbytes`` (default ``SEQLAB_MMAP_THRESHOLD`` or
    :data:`MMAP_THRESHOLD`), which stops its dynamic growth; True if set.

    Call it before the model is loaded. A no-op (False) off Linux, on a C library without
    ``mallopt`` (musl), where ``MALLOC_MMAP_THRESHOLD_`` is in the environment and where
    ``SEQLAB_MMAP_THRESHOLD=dynamic``.

    Raises:
        SeqlabError: ``SEQLAB_MMAP_THRESHOLD`` is neither a number of bytes nor ``dynamic``.
    """
    if nbytes is None:
        value = os.environ.get("SEQLAB_MMAP_THRESHOLD", str(MMAP_THRESHOLD)).strip()
        if value == "dynamic":
            return False
        if not value.isdigit() or not 0 < int(value) <= _MAX_THRESHOLD:
            from .errors import SeqlabError

            raise SeqlabError(f"SEQLAB_MMAP_THRESHOLD={value!r}: expected a number of bytes "
                              f"(1 to {_MAX_THRESHOLD}) or 'dynamic'")
        nbytes = int(value)
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(_M_MMAP_THRESHOLD, nbytes) == 1
