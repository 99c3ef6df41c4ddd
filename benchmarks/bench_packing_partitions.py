"""Bin overhead of partitioned packing against one global BFD, on the same synthetic corpus.

    python benchmarks/bench_packing_partitions.py                  # 4M documents, L 2048 and 8192
    python benchmarks/bench_packing_partitions.py --docs 2000000 --partition-docs 250000,1000000

Documents have lognormal lengths (median ~245 tokens, a tail past L that gets split); units are
files of --unit-docs documents. Partitions come from ``packing.plan_partitions`` with a bound of
chunks equal to the chunks of about --partition-docs documents; each is packed alone with exact
BFD and the bins are summed. Overhead = partitioned bins / global bins - 1.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from packing import merge_stats, pack, pack_partition, plan_partitions, split_documents


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=4_000_000)
    ap.add_argument("--unit-docs", type=int, default=10_000, help="documents per input unit")
    ap.add_argument("--partition-docs", default="100000,1000000")
    ap.add_argument("--capacities", default="2048,8192")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    docs = np.maximum(1, rng.lognormal(5.5, 1.2, args.docs).astype(np.int64))
    unit_starts = np.arange(0, docs.size, args.unit_docs)
    print(f"{docs.size:,} documents, {int(docs.sum()):,} tokens, {unit_starts.size:,} units")
    print("| L | partition ~docs | partitions | global bins | partitioned bins | extra bins "
          "| overhead | global s | partitions s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for L in [int(c) for c in args.capacities.split(",")]:
        chunks = split_documents(docs, L).length
        unit_chunks = np.add.reduceat(-(-docs // L), unit_starts)
        t0 = time.perf_counter()
        whole = pack(chunks, L).n_bins
        t_global = time.perf_counter() - t0
        for pdocs in [int(p) for p in args.partition_docs.split(",")]:
            max_chunks = int(unit_chunks.mean() * pdocs / args.unit_docs)
            plan = plan_partitions(unit_chunks, max_chunks)
            t0 = time.perf_counter()
            stats = merge_stats([pack_partition(chunks[c.start:c.stop], L).stats
                                 for c in map(plan.chunks, range(plan.n_partitions))], L)
            t_parts = time.perf_counter() - t0
            extra = stats.bins - whole
            print(f"| {L} | {pdocs:,} | {plan.n_partitions} | {whole:,} | {stats.bins:,} | "
                  f"{extra:+,} | {extra / whole:+.4%} | {t_global:.2f} | {t_parts:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
