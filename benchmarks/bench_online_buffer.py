"""Extra bins of ``packing.BufferedPacker`` against one global BFD, by buffer size: the table in
``packing/online.py``'s docstring.

    python benchmarks/bench_online_buffer.py

Lengths: the CPython standard library's sources in GPT-2 tokens (bytes / 4), 4 copies, L = 2048.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from packing import pack  # noqa: E402
from packing.online import BufferedPacker  # noqa: E402
from packing.split import split_documents  # noqa: E402
from pipelines.commands.pack_demo import stdlib_lengths  # noqa: E402


def main() -> int:
    L = 2048
    chunks = split_documents(np.tile(stdlib_lengths(), 4), L).length
    global_bins = pack(chunks, L).n_bins
    print(f"{chunks.size:,} chunks; global BFD: {global_bins:,} bins")
    for mult in (32, 256, 2048):
        p = BufferedPacker(L, mult * L)
        n = p.push(chunks).n_bins + p.flush().n_bins
        print(f"buffer {mult:5d} L: {n:,} bins vs global {global_bins:,}: "
              f"{n / global_bins - 1:+.3%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
