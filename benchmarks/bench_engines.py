"""Throughput of engine=local, ray and beam with 1 and 2 workers on the same corpus.

    python benchmarks/bench_engines.py [--docs 1000] [--repeat 1] [--large]
    python benchmarks/bench_engines.py --scale [--repeat 2] [--mode pinned|shared|both]

``--scale`` runs ``bench_engines_scale.py`` instead (8 copies of the pipeline benchmark's corpus,
~47 M tokens, where start-up is amortized): the table that checks the engines' scaling targets.

Each run is a fresh ``fewtrunc run`` subprocess on the demo corpus (shipped English text plus the
first ``--docs`` standard-library files), so start-up costs are counted as a user sees them.
"Workers": local = tokenizer threads (``local.workers``); ray = tokenize actors of 1 CPU on a
private local Ray started by the run (``ray.num_cpus=2``, start-up counted); ray-cluster = the
same actors on an already running 2-CPU cluster (``ray start --head`` on 127.0.0.1, joined with
``ray.address``), as on a real cluster where start-up is not paid per job; beam = DirectRunner
worker processes. ``--large`` adds the standard library's test files (about 8.4 M tokens). Every run's shards
are checked byte-identical to the local engine's. Throughput = input tokens / wall seconds; the
``in engine`` column divides by the engine's own time (``timings.json``: after interpreter start,
including Ray start-up for ray).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.ray_cluster


def one_run(engine: str, workers: int, out: Path, docs: int, large: bool = False,
            cluster=None) -> dict:
    env = dict(os.environ) if cluster is None else dict(cluster.env)
    env.pop("RAY_ADDRESS", None)
    args = [sys.executable, "-m", "pipelines.cli", "run", str(ROOT / "configs" / "demo.yaml"),
            f"output.dir={out}", f"input.max_documents={docs}", "output.report=false",
            f"engine={'ray' if engine == 'ray-cluster' else engine}", "--quiet"]
    if large:
        args.append("input.exclude=[site-packages/*]")
    if engine == "ray-cluster":
        args += [f"ray.address={cluster.address}", f"ray.concurrency={workers}"]
    elif engine == "local":
        args += [f"local.workers={workers}"]
    elif engine == "ray":
        args += ["ray.num_cpus=2", f"ray.concurrency={workers}"]
    elif engine == "beam":
        args += [f"beam.num_workers={workers}"]
    t0 = time.perf_counter()
    proc = subprocess.run(args, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{engine} x{workers} failed:\n{proc.stderr[-3000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    timings = json.loads((out / "timings.json").read_text())
    return {"engine": engine, "workers": workers, "wall": wall,
            "engine_s": timings.get("total_s", wall),
            "tokens": manifest["totals"]["tokens_in"],
            "shards": {p.name: p.read_bytes() for p in sorted(out.glob("shard-*.arrow"))}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=1000, help="standard-library files")
    ap.add_argument("--repeat", type=int, default=1, help="best of N runs per cell")
    ap.add_argument("--engines", default="local,ray,ray-cluster,beam")
    ap.add_argument("--large", action="store_true", help="add the stdlib's tests (~8.4 M tokens)")
    ap.add_argument("--scale", action="store_true",
                    help="run bench_engines_scale.py (~47 M tokens, start-up amortized) with "
                         "the other arguments (--repeat, --mode, --copies)")
    args, rest = ap.parse_known_args()
    if args.scale:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        import bench_engines_scale

        sys.argv = [str(ROOT / "benchmarks" / "bench_engines_scale.py"), *rest,
                    "--repeat", str(args.repeat)]
        return bench_engines_scale.main()
    if rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    cluster = None
    tmp = Path(tempfile.mkdtemp(prefix="bench-engines-"))
    results = []
    try:
        for engine in args.engines.split(","):
            if engine == "ray-cluster":  # up only for its own cells: an idle cluster costs CPU
                from tests.ray_cluster import LocalRayCluster

                cluster = LocalRayCluster(num_cpus=2).start()
            for workers in (1, 2):
                best = None
                for i in range(args.repeat):
                    out = tmp / f"{engine}-{workers}-{i}"
                    r = one_run(engine, workers, out, args.docs, args.large,
                                cluster if engine == "ray-cluster" else None)
                    shutil.rmtree(out, ignore_errors=True)
                    best = r if best is None or r["wall"] < best["wall"] else best
                results.append(best)
                print(f"  {engine} x{workers}: {best['wall']:.1f} s", file=sys.stderr)
            if cluster is not None:
                cluster.stop()
                cluster = None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if cluster is not None:
            cluster.stop()
    ref = next((r for r in results if r["engine"] == "local" and r["workers"] == 2), None)
    tokens = results[0]["tokens"]
    what = "stdlib files incl. tests" if args.large else "stdlib files"
    print(f"corpus: demo.yaml, up to {args.docs} {what} + English text, {tokens:,} tokens; "
          f"{os.cpu_count()} cores\n")
    print("| engine | workers | wall s | tokens/s (wall) | in engine s | tokens/s (in engine) "
          "| 2 vs 1 worker | vs local at 2 | shards = local |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        one = next(x for x in results if x["engine"] == r["engine"] and x["workers"] == 1)
        speed = one["wall"] / r["wall"] if r["workers"] == 2 else None
        vs_local = ref["wall"] / r["wall"] if ref and r["workers"] == 2 else None
        same = "yes" if ref and r["shards"] == ref["shards"] else "NO"
        print(f"| {r['engine']} | {r['workers']} | {r['wall']:.1f} | {r['tokens'] / r['wall']:,.0f} "
              f"| {r['engine_s']:.1f} | {r['tokens'] / r['engine_s']:,.0f} "
              f"| {f'{speed:.2f}x' if speed else ''} | {f'{vs_local:.0%}' if vs_local else ''} "
              f"| {same} |")
    return 0


if __name__ == "__main__":
    from tests.ray_cluster import exit_on_sigterm

    exit_on_sigterm()  # a killed benchmark still stops the Ray cluster it started
    sys.exit(main())
