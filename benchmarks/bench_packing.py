"""Packing throughput and quality: fewtrunc's packers against the peer packers, in one run.

    python benchmarks/bench_packing.py                 # N in {100k, 1M, 10M}, L in {2048, 8192}
    python benchmarks/bench_packing.py --sizes 100000,1000000 --repeat 3

Peers (install with ../shared/tools/install-peers.sh; benchmark-only, never dependencies):
seqpacker's OBFD (Rust) and lightbinpack's OBFD (C++). The floor is numpy's stable (radix) argsort
of the lengths as uint16. Each timing is the best of --repeat runs on the same array.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from packing import lower_bound, pack


def lognormal(n: int, capacity: int, rng) -> np.ndarray:
    """Web-text-like: median ~245 tokens, long right tail, clipped at L (split chunks)."""
    return np.clip(rng.lognormal(5.5, 1.2, n).astype(np.int64), 1, capacity)


def code_like(n: int, capacity: int, rng) -> np.ndarray:
    """Source-file-like: heavier tail, and 5% of items exactly L (full chunks of long files)."""
    x = np.clip(rng.lognormal(6.3, 1.5, n).astype(np.int64), 1, capacity)
    x[rng.random(n) < 0.05] = capacity
    return x


DISTRIBUTIONS = {"lognormal": lognormal, "code-like": code_like}


def best_time(fn, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def peers():
    found = {}
    try:
        import seqpacker

        found["seqpacker obfd"] = lambda x, L: seqpacker.pack_sequences(x, L, "obfd").num_bins
    except ImportError:
        pass
    try:
        import lightbinpack

        found["lightbinpack obfd"] = lambda x, L: len(lightbinpack.obfd(x.tolist(), L))
    except ImportError:
        pass
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000,10000000")
    ap.add_argument("--capacities", default="2048,8192")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--obfd-max", type=int, default=100_000, help="largest N for pure-Python OBFD")
    ap.add_argument("--ffd-max", type=int, default=1_000_000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    peer_fns = peers()
    if not peer_fns:
        print("(no peers installed: run ../shared/tools/install-peers.sh for seqpacker/lightbinpack)")
    header = f"| {'dist':9s} | {'N':>10s} | {'L':>5s} | {'packer':18s} | {'seconds':>8s} | " \
             f"{'items/s':>9s} | {'bins':>9s} | {'lower bd':>9s} | {'overhead':>9s} | {'vs bfd':>7s} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for dist, make in DISTRIBUTIONS.items():
        for n in [int(s) for s in args.sizes.split(",")]:
            for L in [int(c) for c in args.capacities.split(",")]:
                x = make(n, L, rng)
                lb = lower_bound(int(x.sum()), L)
                rows = []
                t, r = best_time(lambda: pack(x, L, "bfd"), args.repeat)
                rows.append(("fewtrunc bfd", t, r.n_bins))
                if n <= args.ffd_max:
                    t, r = best_time(lambda: pack(x, L, "ffd"), args.repeat)
                    rows.append(("fewtrunc ffd", t, r.n_bins))
                if n <= args.obfd_max:
                    t, r = best_time(lambda: pack(x, L, "obfd"), 1)
                    rows.append(("fewtrunc obfd (py)", t, r.n_bins))
                for name, fn in peer_fns.items():
                    t, bins = best_time(lambda: fn(x, L), args.repeat)
                    rows.append((name, t, bins))
                key = (L - x).astype(np.uint16)
                t, _ = best_time(lambda: np.argsort(key, kind="stable"), args.repeat)
                rows.append(("floor: radix argsort", t, None))
                t_bfd = rows[0][1]
                for name, t, bins in rows:
                    b = f"{bins:9,d}" if bins is not None else f"{'':9s}"
                    ov = f"{bins / lb - 1:9.4%}" if bins is not None else f"{'':9s}"
                    print(f"| {dist:9s} | {n:10,d} | {L:5d} | {name:18s} | {t:8.3f} | "
                          f"{n / t:9.2e} | {b} | {lb:9,d} | {ov} | {t / t_bfd:6.1f}x |", flush=True)


if __name__ == "__main__":
    main()
