"""Packing speed in one table: a global pack, the streaming packer, and small per-batch calls,
fewtrunc against the peer packers measured in the same run.

    python benchmarks/bench_packing_speed.py
    PYTHONPATH=<peers dir> python benchmarks/bench_packing_speed.py --repeat 7

Rows (lognormal lengths, as in bench_packing.py; --lengths uniform: integers in [1, L]):
- global: one ``pack`` of --n lengths; the peers pack the same array;
- stream: ``BufferedPacker`` (buffer --buffer-mult L) fed the same lengths in pushes of --push
  items, then flushed; "vs" is against fewtrunc's global pack of the same items;
- small: ``pack`` on the first 8, 1,000 and 10,000 lengths (a training script packing per
  batch); "vs" is against the fastest peer at that size.
Every time is the minimum of --repeat runs (--small-repeat for small calls). Peers (seqpacker,
lightbinpack; see bench_packing.py) are skipped when they do not import. The first line says
whether BFD's compiled loop (``packing._bfd_kernel``) is in use; FEWTRUNC_PURE_PYTHON=1 measures
the Python loop.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_packing import best_time, lognormal, peers  # noqa: E402

import packing.bfd  # noqa: E402
from packing import BufferedPacker, pack  # noqa: E402


def stream(x: np.ndarray, L: int, buffer_tokens: int, push: int) -> int:
    p = BufferedPacker(L, buffer_tokens)
    bins = sum(p.push(x[i : i + push]).n_bins for i in range(0, x.size, push))
    return bins + p.flush().n_bins


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--capacities", default="2048")
    ap.add_argument("--lengths", choices=["lognormal", "uniform"], default="lognormal",
                    help="uniform: integers in [1, L], whose BFD bins fill less and carry more")
    ap.add_argument("--push", type=int, default=1000)
    ap.add_argument("--buffer-mult", type=int, default=256)
    ap.add_argument("--small", default="8,1000,10000")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--small-repeat", type=int, default=50)
    args = ap.parse_args()
    print(f"kernel: {'yes' if packing.bfd.kernel is not None else 'no'} "
          "(compiled BFD placement loop, packing._bfd_kernel)")
    peer_fns = peers()
    if not peer_fns:
        print("(no peers import: seqpacker and lightbinpack rows skipped)")
    print("| L | case | items | packer | seconds | µs/item | bins | vs |")
    print("|---|---|---|---|---|---|---|---|")

    def row(L, case, n, name, t, bins, ref, ref_name):
        b = f"{bins:,}" if bins is not None else ""
        print(f"| {L} | {case} | {n:,} | {name} | {t:.6f} | {t / n * 1e6:.3f} | {b} | "
              f"{t / ref:.2f}x {ref_name} |", flush=True)

    for L in [int(c) for c in args.capacities.split(",")]:
        rng = np.random.default_rng(0)
        x = (lognormal(args.n, L, rng) if args.lengths == "lognormal"
             else rng.integers(1, L + 1, args.n))
        t_global, res = best_time(lambda: pack(x, L), args.repeat)
        ref = "fewtrunc global"
        row(L, "global", x.size, "fewtrunc bfd", t_global, res.n_bins, t_global, ref)
        for name, fn in peer_fns.items():
            t, bins = best_time(lambda: fn(x, L), args.repeat)
            row(L, "global", x.size, name, t, bins, t_global, ref)
        key = (L - x).astype(np.uint16)
        t, _ = best_time(lambda: np.argsort(key, kind="stable"), args.repeat)
        row(L, "global", x.size, "floor: radix argsort", t, None, t_global, ref)
        t, bins = best_time(lambda: stream(x, L, args.buffer_mult * L, args.push), args.repeat)
        row(L, f"stream {args.push:,}/push, {args.buffer_mult} L", x.size, "fewtrunc buffered",
            t, bins, t_global, ref)
        for n in [int(s) for s in args.small.split(",") if s]:  # --small "": no small calls
            y = x[:n].copy()
            timed = [(name, *best_time(lambda: fn(y, L), args.small_repeat))
                     for name, fn in peer_fns.items()]
            t_few, res = best_time(lambda: pack(y, L), args.small_repeat)
            best_peer = min(timed, key=lambda r: r[1]) if timed else ("fewtrunc", t_few, None)
            for name, t, bins in [("fewtrunc bfd", t_few, res.n_bins)] + timed:
                row(L, "small", n, name, t, bins, best_peer[1], best_peer[0])


if __name__ == "__main__":
    main()
