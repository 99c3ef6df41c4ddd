"""Planning at scale: the driver's memory stays O(units) with partitioned packing.

(a) ``--plan``: plans N documents (default 10^9) of synthetic lengths through the run's own
    planning code, ``pipelines/partition_layout.py`` and ``pipelines/partitions.py``, with no
    tokenization:
    - the driver process runs ``partition_layout`` (every unit's lengths, one unit at a time ->
      chunk counts -> the partitions), then, after the workers, ``run_totals`` (the summaries
      merged into stats.json's numbers and the shard count);
    - worker processes (``--workers``, default 2) run ``pack_partition`` on their partitions
      (split + exact BFD + row plan saved + summary marker), one partition at a time.
    The only stand-in is ``spill.load_docs``: a unit's (ids, lengths) are generated from the
    unit's index (lognormal lengths, median ~200 tokens, seeded) instead of read from its
    ``docs.npy``, so 10^9 documents need no 16 GB of spill files; everything after it is the
    code a run executes. Each partition's saved row plan is deleted once its summary is written
    (the writers' input, ~65 MB per partition: not kept for 1,000 partitions). Peak RSS is each
    process's own VmHWM.

(b) ``--run``: a real ``fewtrunc run`` (local engine, default settings) on 5x10^5 and 5x10^6
    small JSONL documents, in files of 10^5 documents (grouped into 64 MB units) and as one
    file (one unit, which the partitions cut between its documents): peak RSS of each and
    their ratio.

    python benchmarks/bench_plan_scale.py --plan [--docs 1e9] [--workers 2]
    python benchmarks/bench_plan_scale.py --run [--small 5e5] [--large 5e6] [--layouts files,'one file']
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

UNIT_DOCS = 100_000  # documents per synthetic unit (a 64 MB unit of ~600-byte documents)


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic_lengths(unit: int) -> np.ndarray:
    rng = np.random.default_rng(unit)
    return np.rint(rng.lognormal(5.3, 1.0, UNIT_DOCS)).astype(np.int64) + 1


def _install_synthetic_units() -> None:
    from pipelines.steps import spill

    def load_docs(work, u, start=0, stop=None, ids=True):
        ids = np.arange(u * UNIT_DOCS, (u + 1) * UNIT_DOCS, dtype=np.int64)
        return ids[start:stop], synthetic_lengths(u)[start:stop]

    spill.load_docs = load_docs
    spill.load_marker = lambda work, u: {"unit": u}
    spill.is_done = lambda work, u: True


def _plan(work: Path, n_units: int):
    from pipelines.config import RunConfig
    from pipelines.run_plan import RunPlan

    return RunPlan(RunConfig(), work.parent, work, tuple(SimpleNamespace(index=i)
                                                         for i in range(n_units)),
                   {}, "bench", "bench", {}, {})


def role_worker(work: Path, n_units: int, parts: list, out: Path) -> None:
    from pipelines import partitions

    _install_synthetic_units()
    plan = _plan(work, n_units)
    t0 = time.perf_counter()
    for p, span, base in parts:
        partitions.pack_partition(plan, p, span, base)
        shutil.rmtree(partitions.part_dir(plan, p))  # the writers' input: not kept here
    out.write_text(json.dumps({"peak_mib": _peak_mib(), "seconds": time.perf_counter() - t0,
                               "partitions": len(parts)}))


def role_driver(work: Path, n_units: int, workers: int, out: Path) -> None:
    from pipelines import partition_layout, partitions

    _install_synthetic_units()
    plan = _plan(work, n_units)
    t0 = time.perf_counter()
    items = partition_layout.partition_items(partition_layout.partition_layout(plan))
    t_layout = time.perf_counter() - t0
    procs = []
    for w in range(workers):  # partition p to worker p % workers
        spec = work / f"worker-{w}.json"
        spec.write_text(json.dumps(items[w::workers]))
        procs.append(subprocess.Popen([sys.executable, __file__, "--role", "worker",
                                       "--work", str(work), "--units", str(n_units),
                                       "--spec", str(spec)]))
    for proc in procs:
        if proc.wait():
            raise SystemExit("a worker failed")
    t_pack = time.perf_counter() - t0 - t_layout
    t1 = time.perf_counter()
    stats, n_rows, n_shards = partitions.run_totals(plan)
    t_merge = time.perf_counter() - t1
    reports = [json.loads((work / f"worker-{w}.json.out").read_text()) for w in range(workers)]
    out.write_text(json.dumps({
        "driver_peak_mib": _peak_mib(), "workers": reports, "partitions": len(items),
        "layout_s": t_layout, "pack_s": t_pack, "merge_s": t_merge,
        "documents": stats["documents"], "tokens": stats["tokens"], "rows": n_rows,
        "shards": n_shards, "lower_bound": stats["lower_bound"], "overhead": stats["overhead"]}))


def bench_plan(docs: int, workers: int) -> None:
    n_units = -(-docs // UNIT_DOCS)
    tmp = Path(tempfile.mkdtemp(prefix="fewtrunc-plan-"))
    try:
        work = tmp / "_work"
        work.mkdir()
        out = tmp / "driver.json"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--role", "driver", "--work", str(work),
                        "--units", str(n_units), "--workers", str(workers), "--spec", str(out)],
                       check=True)
        wall = time.perf_counter() - t0
        r = json.loads(out.read_text())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n## Planning {r['documents']:,} documents ({n_units:,} units of {UNIT_DOCS:,}, "
          f"{r['partitions']:,} partitions, {workers} workers)\n")
    print("| process | peak RSS MiB | seconds | what |")
    print("|---|---|---|---|")
    print(f"| driver | {r['driver_peak_mib']:.0f} | {r['layout_s']:.1f} + {r['merge_s']:.1f} | "
          "partition_layout (every unit's lengths, one at a time) + run_totals (summaries "
          "merged) |")
    for w, rep in enumerate(r["workers"]):
        print(f"| worker {w} | {rep['peak_mib']:.0f} | {rep['seconds']:.1f} | "
              f"pack_partition x {rep['partitions']} |")
    print(f"| all | | {wall:.1f} | wall, pack stage {r['pack_s']:.1f} s |")
    print(f"\n{r['tokens']:,} tokens, {r['rows']:,} rows, {r['shards']:,} shards; lower bound "
          f"{r['lower_bound']:,}, overhead {100 * r['overhead']:.5f}%")


FILE_DOCS = 100_000  # documents per JSONL file (~15 MB): a corpus shipped as many files


def small_jsonl(directory: Path, n: int) -> Path:
    """``n`` small documents (5-40 words from a 2,000-word vocabulary, seeded) in files of
    ``FILE_DOCS`` documents, ``directory/part-NNNNN.jsonl``."""
    rng = np.random.default_rng(7)
    words = np.array(["".join(chr(97 + c) for c in rng.integers(0, 26, rng.integers(2, 9)))
                      for _ in range(2000)])
    directory.mkdir(parents=True, exist_ok=True)
    for a in range(0, n, FILE_DOCS):
        b = min(n, a + FILE_DOCS)
        sizes = rng.integers(5, 41, b - a)
        picks = words[rng.integers(0, words.size, int(sizes.sum()))]
        ends = np.cumsum(sizes)
        (directory / f"part-{a // FILE_DOCS:05d}.jsonl").write_text(
            "".join(json.dumps({"text": " ".join(picks[e - s : e])}) + "\n"
                    for s, e in zip(sizes.tolist(), ends.tolist())), encoding="utf-8")
    return directory


def _one_file(directory: Path) -> Path:
    """The same documents as one JSONL file (a corpus shipped as one big file)."""
    one = directory.parent / f"{directory.name}.jsonl"
    with open(one, "wb") as out:
        for part in sorted(directory.iterdir()):
            out.write(part.read_bytes())
    shutil.rmtree(directory)
    return one


def _peak_run(data: str, out: Path, config: Path) -> tuple[float, float]:
    from bench_pipeline import PeakRss

    args = [sys.executable, "-m", "pipelines.cli", "run", str(config), f"input.paths={data}",
            f"output.dir={out}", "--quiet"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    rss = PeakRss(proc.pid)
    _, err = proc.communicate()
    if proc.returncode:
        raise SystemExit(err[-3000:])
    return rss.peak_kb / 1024, time.perf_counter() - t0


def bench_run(sizes: list[int], layouts: list[str]) -> None:
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="fewtrunc-run-"))
    config = tmp / "job.yaml"
    config.write_text("{}\n")
    try:
        for layout in layouts:
            for n in sizes:
                data = small_jsonl(tmp / f"docs-{n}", n)
                if layout == "one file":
                    data = _one_file(data)
                size = sum(f.stat().st_size for f in data.iterdir()) if data.is_dir() \
                    else data.stat().st_size
                out = tmp / f"out-{n}"
                rss, wall = _peak_run(f"{data}/*.jsonl" if data.is_dir() else str(data), out,
                                      config)
                m = json.loads((out / "manifest.json").read_text())
                stats = json.loads((out / "stats.json").read_text())
                chunks = m["totals"]["chunks"]
                parts = -(-chunks // (1 << 20)) if chunks > 1 << 20 else 1
                rows.append((layout, n, size, m["inputs"]["units"], rss, wall, m["totals"],
                             stats["overhead"], parts))
                shutil.rmtree(out)
                shutil.rmtree(data) if data.is_dir() else data.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n## `fewtrunc run` (local engine, default settings) on small JSONL documents: in "
          f"files of {FILE_DOCS:,}, and as one file\n")
    print("| layout | documents | input MB | units | partitions (about) | peak RSS MiB | "
          "vs smallest | seconds | tokens | rows | overhead |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    base = {}
    for layout, n, size, units, rss, wall, t, overhead, parts in rows:
        base.setdefault(layout, rss)
        print(f"| {layout} | {n:,} | {size / 1e6:.0f} | {units} | {parts} | {rss:.0f} | "
              f"{rss / base[layout]:.2f}x | {wall:.0f} | {t['tokens_out']:,} | "
              f"{t['sequences']:,} | {100 * overhead:.4f}% |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--plan", action="store_true")
    ap.add_argument("--run", action="store_true")
    ap.add_argument("--docs", type=float, default=1e9)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--small", type=float, default=5e5)
    ap.add_argument("--large", type=float, default=5e6)
    ap.add_argument("--layouts", default="files,one file",
                    help="comma-separated: 'files' (files of 10^5 documents), 'one file'")
    ap.add_argument("--role", choices=("driver", "worker"))
    ap.add_argument("--work")
    ap.add_argument("--units", type=int)
    ap.add_argument("--spec")
    a = ap.parse_args()
    if a.role == "driver":
        return role_driver(Path(a.work), a.units, a.workers, Path(a.spec))
    if a.role == "worker":
        parts = json.loads(Path(a.spec).read_text())
        return role_worker(Path(a.work), a.units, parts, Path(a.spec + ".out"))
    if a.plan or not a.run:
        bench_plan(int(a.docs), a.workers)
    if a.run or not a.plan:
        bench_run([int(a.small), int(a.large)], a.layouts.split(","))


if __name__ == "__main__":
    main()
