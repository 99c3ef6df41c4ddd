"""Keep the allocator from turning freed tokenizer buffers into resident memory.

The Rust tokenizer allocates every batch's encodings from its worker threads; glibc gives each
thread its own arena and rarely returns freed pages, so RSS crept up with the corpus (388 → 622
MiB from 1× to 4× the tokens) although live data stays bounded. Capping the arenas and trimming
every few batches keeps peak RSS flat. A fixed mmap threshold (32 MiB) matters too: glibc
otherwise moves it after large frees, and vectors of a huge document's encoding above it are
mapped and unmapped whole instead of fragmenting the heap (a 1 MiB threshold made page faults
on every batch buffer a third of the CPU time). A fixed threshold also pins glibc's trim threshold at 128 KiB, so every free at the heap's top gave
pages back and the next batch faulted them in again (half the run's page faults, ~1 s of system
time per GB, most of it copying the encoder's output under the GIL): the heap now keeps up to
64 MiB between the explicit trims. A no-op where glibc is not the allocator.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import lru_cache

_M_ARENA_MAX = -8
_M_MMAP_THRESHOLD = -3
_M_TRIM_THRESHOLD = -1


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


def cap_arenas(arenas: int = 2, mmap_threshold: int = 32 << 20,
               trim_threshold: int = 64 << 20) -> None:
    """Call before the tokenizer's threads start: later threads share ``arenas`` arenas,
    allocations of ``mmap_threshold`` bytes or more are always returned to the OS when freed, and
    a heap gives pages back by itself only above ``trim_threshold`` free bytes at its top."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_ARENA_MAX, arenas)
        libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
        libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold)


def trim() -> None:
    """Return freed heap pages to the OS (cheap: a few ms per call)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
