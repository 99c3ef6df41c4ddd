"""Engines at a corpus size where start-up is amortized: local, Beam and Ray (joined to a running
cluster), 1 and 2 workers, on N copies of the pipeline benchmark's corpus (default 8 copies,
~47 M tokens), one JSON-lines.zst file per copy.

    python benchmarks/bench_engines_scale.py [--copies 8]

Each cell is a fresh ``fewtrunc run`` subprocess; every engine's shards are checked byte-identical
to the local engine's. The Ray cluster (``ray start --head`` on 127.0.0.1, 2 CPUs) is started once
and is up only during the Ray cells. Complements ``bench_engines.py``, whose corpora (6–15 M
tokens) are small enough that fixed start-up dominates.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zstandard

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_pipeline import corpus_texts  # noqa: E402


def run_cell(engine: str, workers: int, paths: str, out: Path, cluster=None) -> tuple:
    env = dict(cluster.env if cluster else os.environ)
    env.pop("RAY_ADDRESS", None)
    args = [sys.executable, "-m", "pipelines.cli", "run", str(ROOT / "configs" / "demo.yaml"),
            f"input.paths={paths}", f"output.dir={out}", "output.report=false",
            f"engine={engine}", "--quiet"]
    if engine == "local":
        env["RAYON_NUM_THREADS"] = str(workers)
    elif engine == "beam":
        args.append(f"beam.num_workers={workers}")
    else:
        args += [f"ray.address={cluster.address}", f"ray.concurrency={workers}"]
    t0 = time.perf_counter()
    proc = subprocess.run(args, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{engine} x{workers} failed:\n{proc.stderr[-3000:]}")
    tokens = json.loads((out / "manifest.json").read_text())["totals"]["tokens_in"]
    shards = [p.read_bytes() for p in sorted(out.glob("shard-*.arrow"))]
    return wall, tokens, shards


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=8)
    args = ap.parse_args()
    from pipelines.engines.ray_cluster import LocalRayCluster

    texts = corpus_texts()
    data = "".join(json.dumps({"text": t}) + "\n" for t in texts).encode()
    blob = zstandard.ZstdCompressor(level=3).compress(data)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = []
        for i in range(args.copies):
            (tmp / f"copy{i}.jsonl.zst").write_bytes(blob)
            files.append(str(tmp / f"copy{i}.jsonl.zst"))
        paths = ",".join(files)
        for engine in ("local", "beam"):
            for w in (1, 2):
                results[(engine, w)] = run_cell(engine, w, paths, tmp / f"{engine}{w}")
                print(f"  {engine} x{w}: {results[(engine, w)][0]:.1f} s", file=sys.stderr)
        cluster = LocalRayCluster(num_cpus=2).start()
        try:
            for w in (1, 2):
                results[("ray-cluster", w)] = run_cell("ray", w, paths, tmp / f"ray{w}", cluster)
                print(f"  ray-cluster x{w}: {results[('ray-cluster', w)][0]:.1f} s", file=sys.stderr)
        finally:
            cluster.stop()
    ref_wall, tokens, ref_shards = results[("local", 2)]
    print(f"{args.copies} copies, {tokens:,} tokens; {os.cpu_count()} cores\n")
    print("| engine | workers | wall s | tokens/s | 2 vs 1 worker | vs local at 2 | shards = local |")
    print("|---|---|---|---|---|---|---|")
    for (engine, w), (wall, tok, shards) in results.items():
        one = results[(engine, 1)][0]
        speed = f"{one / wall:.2f}x" if w == 2 else ""
        share = f"{ref_wall / wall:.0%}" if w == 2 else ""
        same = "yes" if shards == ref_shards else "NO"
        print(f"| {engine} | {w} | {wall:.1f} | {tok / wall:,.0f} | {speed} | {share} | {same} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
