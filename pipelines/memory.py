"""Keep the allocator from turning freed tokenizer buffers into resident memory.

The Rust tokenizer allocates every batch's encodings from its worker threads; glibc gives each
thread its own arena and rarely returns freed pages, so RSS crept up with the corpus (388 → 622
MiB from 1× to 4× the tokens) although live data stays bounded. Capping the arenas and trimming
every few batches keeps peak RSS flat. A fixed mmap threshold matters too: glibc otherwise raises
it after each large free (up to 32 MiB), so the big vectors of a huge document's encoding land in
the heap and fragment it; with a fixed 1 MiB threshold they are mapped and unmapped whole. A
no-op where glibc is not the allocator.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import lru_cache

_M_ARENA_MAX = -8
_M_MMAP_THRESHOLD = -3


@lru_cache(maxsize=1)
def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # glibc only
        return libc
    except (OSError, AttributeError):
        return None


def cap_arenas(arenas: int = 2, mmap_threshold: int = 32 << 20) -> None:
    """Call before the tokenizer's threads start: later threads share ``arenas`` arenas, and
    allocations of ``mmap_threshold`` bytes or more are always returned to the OS when freed."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_ARENA_MAX, arenas)
        libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)


def trim() -> None:
    """Return freed heap pages to the OS (cheap: a few ms per call)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
