"""Engines at a corpus size where start-up is amortized: local, Beam and Ray (joined to a running
cluster), 1 and 2 workers, on N copies of the pipeline benchmark's corpus (default 8 copies,
~47 M tokens), one JSON-lines.zst file per copy and one input unit per file
(``input.unit_bytes`` = 3 MB, as in a real corpus of many files of 64 MB or more).

    python benchmarks/bench_engines_scale.py [--copies 8] [--mode pinned|shared|both] [--repeat N]
        [--against REV]

``--against REV`` also runs every cell on the code of commit REV (exported to a temporary
directory), cell by cell beside this checkout's, so both see the same load on a shared machine;
its table follows, with each cell's change against REV.

Two ways to give a run "w workers", both reported (``--mode both``, the default):
- pinned: the run and every process it starts are bound to w cores (CPU affinity, inherited by
  Beam's worker processes and by the Ray cluster, which is started per cell count under the same
  affinity with w CPUs). This measures what a second worker *and its core* buy.
- shared: w workers on the whole machine. One "worker" then still gets help from the idle
  second core (reading, parsing and spilling overlap with its tokenizing), so 2 vs 1 understates
  scaling.
Workers: local = ``local.workers`` tokenizer threads; beam = ``beam.num_workers`` DirectRunner
processes; ray = ``ray.concurrency`` tokenize actors of 1 CPU. Each cell is a fresh ``fewtrunc
run`` subprocess (the fastest of ``--repeat`` runs); every engine's shards are checked
byte-identical to the local engine's. A freshly started Ray cluster first runs one untimed job on
one copy, as a running cluster has.
Complements ``bench_engines.py``, whose corpora (6–15 M tokens) are small enough that fixed
start-up dominates.
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


UNIT_BYTES = 3_000_000  # one input unit per copy, as in a corpus of many files of >= unit_bytes


def run_cell(engine: str, workers: int, paths: str, out: Path, cores=None, cluster=None,
             root: Path = ROOT) -> tuple:
    env = dict(cluster.env if cluster else os.environ)
    env.pop("RAY_ADDRESS", None)
    args = [sys.executable, "-m", "pipelines.cli", "run", str(root / "configs" / "demo.yaml"),
            f"input.paths={paths}", f"output.dir={out}", "output.report=false",
            f"input.unit_bytes={UNIT_BYTES}", f"engine={engine}", "--quiet"]
    if engine == "local":
        args.append(f"local.workers={workers}")
    elif engine == "beam":
        args.append(f"beam.num_workers={workers}")
    else:
        args += [f"ray.address={cluster.address}", f"ray.concurrency={workers}"]
    t0 = time.perf_counter()
    proc = subprocess.run(args, env=env, capture_output=True, text=True, cwd=root,
                          preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{engine} x{workers} failed:\n{proc.stderr[-3000:]}")
    tokens = json.loads((out / "manifest.json").read_text())["totals"]["tokens_in"]
    shards = [p.read_bytes() for p in sorted(out.glob("shard-*.arrow"))]
    return wall, tokens, shards


def start_cluster(num_cpus: int, cores):
    """A local Ray cluster whose processes all inherit the affinity ``cores`` (None: every core)."""
    from tests.ray_cluster import LocalRayCluster

    before = os.sched_getaffinity(0)
    if cores:
        os.sched_setaffinity(0, cores)
    try:
        return LocalRayCluster(num_cpus=num_cpus).start()
    finally:
        os.sched_setaffinity(0, before)


def best_cell(repeat: int, engine: str, w: int, paths: str, out: Path, cores, cluster=None,
              roots=(ROOT,)) -> list:
    """Per code root, the fastest of ``repeat`` runs (each into a fresh directory); the roots
    take turns, so that they share the machine's load."""
    runs = [[] for _ in roots]
    for i in range(repeat):
        for j, root in enumerate(roots):
            runs[j].append(run_cell(engine, w, paths, out.with_name(f"{out.name}-{j}-{i}"),
                                    cores, cluster, root))
    return [min(r, key=lambda r: r[0]) for r in runs]


def run_mode(mode: str, paths: str, tmp: Path, repeat: int = 1, roots=(ROOT,)) -> list[dict]:
    """One result dict per code root: (engine, workers) -> (wall, tokens, shards)."""
    results = [{} for _ in roots]

    def record(key, cells):
        for res, cell in zip(results, cells):
            res[key] = cell
        print(f"  {mode} {key[0]} x{key[1]}: " + " / ".join(f"{c[0]:.1f} s" for c in cells),
              file=sys.stderr)

    cores_of = (lambda w: set(sorted(os.sched_getaffinity(0))[:w])) if mode == "pinned" \
        else (lambda w: None)
    for engine in ("local", "beam"):
        for w in (1, 2):
            record((engine, w), best_cell(repeat, engine, w, paths, tmp / f"{mode}-{engine}{w}",
                                          cores_of(w), roots=roots))
    cluster = None
    for w in (1, 2):
        if cluster is None or mode == "pinned":  # pinned: a cluster of w CPUs on w cores
            if cluster is not None:
                cluster.stop()
            cluster = start_cluster(w if mode == "pinned" else 2, cores_of(w))
        try:
            if mode == "pinned" or w == 1:  # a running cluster has run jobs before: warm it up
                run_cell("ray", w, paths.split(",")[0], tmp / f"{mode}-warmup{w}", cores_of(w),
                         cluster)
            record(("ray-cluster", w), best_cell(repeat, "ray", w, paths, tmp / f"{mode}-ray{w}",
                                                 cores_of(w), cluster, roots))
        except BaseException:
            cluster.stop()
            raise
    cluster.stop()
    return results


def table(results: dict, base: dict | None = None) -> str:
    """The scaling table; with ``base`` (the same cells on other code), each wall time's change."""
    ref_wall, _, ref_shards = results[("local", 2)]
    extra = ("", "") if base is None else (" wall vs base |", "---|")
    lines = [f"| engine | workers | wall s | tokens/s | 2 vs 1 worker | vs local at 2 | "
             f"shards = local |{extra[0]}", f"|---|---|---|---|---|---|---|{extra[1]}"]
    for (engine, w), (wall, tok, shards) in results.items():
        one = results[(engine, 1)][0]
        speed = f"{one / wall:.2f}x" if w == 2 else ""
        share = f"{ref_wall / wall:.0%}" if w == 2 else ""
        same = "yes" if shards == ref_shards else "NO"
        vs = "" if base is None else f" {wall / base[(engine, w)][0] - 1:+.0%} |"
        lines.append(f"| {engine} | {w} | {wall:.1f} | {tok / wall:,.0f} | {speed} | {share} "
                     f"| {same} |{vs}")
    return "\n".join(lines)


def export(rev: str, into: Path) -> Path:
    """The tree of commit ``rev`` of this checkout, under ``into``."""
    into.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=8)
    ap.add_argument("--mode", choices=("pinned", "shared", "both"), default="both")
    ap.add_argument("--repeat", type=int, default=1, help="best of N runs per cell")
    ap.add_argument("--against", metavar="REV", help="also run each cell on commit REV's code")
    args = ap.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs at least 2 cores")
    texts = corpus_texts()
    data = "".join(json.dumps({"text": t}) + "\n" for t in texts).encode()
    blob = zstandard.ZstdCompressor(level=3).compress(data)
    modes = ("pinned", "shared") if args.mode == "both" else (args.mode,)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = []
        for i in range(args.copies):
            (tmp / f"copy{i}.jsonl.zst").write_bytes(blob)
            files.append(str(tmp / f"copy{i}.jsonl.zst"))
        roots = (ROOT,) + ((export(args.against, tmp / "against"),) if args.against else ())
        results = {mode: run_mode(mode, ",".join(files), tmp, args.repeat, roots)
                   for mode in modes}
    tokens = next(iter(results.values()))[0][("local", 1)][1]
    print(f"{args.copies} copies, {tokens:,} tokens; {os.cpu_count()} cores\n")
    for mode, res in results.items():
        print(f"{mode} (workers {'= cores' if mode == 'pinned' else 'on every core'}):\n")
        if args.against:
            print(f"this checkout:\n\n{table(res[0], res[1])}\n\n{args.against}:\n")
        print(table(res[-1]) + "\n")
    return 0


if __name__ == "__main__":
    from tests.ray_cluster import exit_on_sigterm

    exit_on_sigterm()  # a killed benchmark still stops the Ray cluster it started
    sys.exit(main())
