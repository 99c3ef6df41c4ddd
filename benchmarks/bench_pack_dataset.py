"""fewtrunc's ``pack_dataset`` side by side with TRL's ``pack_dataset(strategy="bfd_split")``.

    python benchmarks/bench_pack_dataset.py                      # 1M documents, seq_length 2048
    python benchmarks/bench_pack_dataset.py --docs 100000 --seq-length 512

Both get the same tokenized ``datasets.Dataset`` (an ``input_ids`` column of int32 lists; lengths
lognormal, a few longer than the sequence length) and must keep every token. Printed per packer:
wall seconds (the fastest of ``--repeat`` runs, all runs listed), process CPU seconds (user +
system, all threads: on a shared machine the fairer measure of work), rows, rows over the lower bound ceil(tokens / seq_length), tokens out, and fewtrunc's
speed-up. TRL runs when it is importable (it is not a fewtrunc dependency: install
``trl==1.16.0`` next to the ``hf-train`` extra, ideally in a separate venv).
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def corpus(n_docs: int, seq_length: int, seed: int = 0):
    import datasets

    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(mean=4.6, sigma=1.1, size=n_docs), 1, 20 * seq_length).astype(np.int64)
    offsets = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = rng.integers(0, 50_000, size=int(offsets[-1]), dtype=np.int32)
    ids = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values))
    return datasets.Dataset(datasets.table.InMemoryTable(pa.table({"input_ids": ids}))), int(offsets[-1])


def measure(name, fn, dataset, seq_length, tokens, repeat):
    seconds, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        packed = fn(dataset, seq_length)
        table = packed.with_format("arrow")[:]
        seconds.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        lens = pc.list_value_length(table.column("input_ids")).to_numpy(zero_copy_only=False)
        del packed, table  # each run starts with the previous run's memory released
    if lens.max() > seq_length:
        raise SystemExit(f"{name}: a row of {lens.max()} tokens exceeds {seq_length}")
    rows, out_tokens = int(lens.size), int(lens.sum())
    bound = -(-tokens // seq_length)
    return {"packer": name, "seconds": min(seconds), "all": seconds, "cpu": min(cpu), "all_cpu": cpu, "rows": rows, "over_bound": rows / bound - 1, "tokens": out_tokens}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=1_000_000)
    p.add_argument("--seq-length", type=int, default=2048)
    p.add_argument("--repeat", type=int, default=2, help="runs per packer; the fastest is reported")
    p.add_argument("--skip-trl", action="store_true")
    a = p.parse_args(argv)

    import datasets

    from training.hf import pack_dataset

    datasets.disable_progress_bars()
    t0 = time.perf_counter()
    dataset, tokens = corpus(a.docs, a.seq_length)
    print(f"{a.docs:,} documents, {tokens:,} tokens, seq_length {a.seq_length}, lower bound "
          f"{-(-tokens // a.seq_length):,} rows (corpus built in {time.perf_counter() - t0:.1f} s)")
    results = [measure("fewtrunc pack_dataset", pack_dataset, dataset, a.seq_length, tokens, a.repeat)]
    if not a.skip_trl:
        try:
            import trl
        except ImportError:
            print("trl is not installed: only fewtrunc measured")
        else:
            with tempfile.TemporaryDirectory() as cache:
                datasets.config.HF_DATASETS_CACHE = cache
                results.append(measure(f"trl {trl.__version__} pack_dataset(bfd_split)",
                                       lambda d, n: trl.pack_dataset(d, n, strategy="bfd_split",
                                                                        map_kwargs={"load_from_cache_file": False}),
                                       dataset, a.seq_length, tokens, a.repeat))
    ours, ours_cpu = results[0]["seconds"], results[0]["cpu"]
    print("| packer | wall s (best) | all runs: wall / CPU s | CPU s (best) | rows | rows over lower bound "
          "| tokens kept | wall / fewtrunc's | CPU / fewtrunc's |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        runs = ", ".join(f"{w:.2f} / {c:.2f}" for w, c in zip(r["all"], r["all_cpu"]))
        print(f"| {r['packer']} | {r['seconds']:.2f} | {runs} | {r['cpu']:.2f} | {r['rows']:,} | "
              f"{r['over_bound']:.4%} | {r['tokens'] / tokens:.2%} | {r['seconds'] / ours:.1f}x | "
              f"{r['cpu'] / ours_cpu:.1f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
