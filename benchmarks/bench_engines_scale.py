"""Engines at a corpus size where start-up is amortized: local, Beam (DirectRunner) and Ray
(joined to a running cluster), 1 and 2 workers, each cell a fresh ``fewtrunc run`` subprocess.

    python benchmarks/bench_engines_scale.py [--corpus DIR --include '*.c,*.h'] [--copies 8]
        [--workers 1,2] [--engines local,beam,ray] [--mode pinned|shared|both] [--repeat N]
        [--against REV_OR_DIR] [--idle-cores 0.3] [--details]

Corpus: ``--corpus DIR`` is a file tree (every file matching ``--include`` one document, small
files grouped into units of ``input.unit_bytes``, 64 MB by default), as a code corpus of many
files is run; without it, ``--copies`` N copies of the pipeline benchmark's corpus, one
JSON-lines.zst file and one input unit per copy (``input.unit_bytes`` = 3 MB).

Every cell's shards are checked byte-identical to the local engine's. The engines take turns
(round after round: local, beam, ray, each worker count), so a machine shared with other work
loads them alike, and before each cell the benchmark waits until the rest of the machine is idle
(at most ``--idle-cores`` cores busy over 3 s, waiting up to ``--max-wait`` s in all); each
table says the 1-minute load average at its cells' starts. A Ray cluster is started for the Ray
cells only (an idle cluster takes CPU from whatever else runs), warmed with one small job as a
running cluster has run jobs before, and stopped after them.

Per cell: the whole wall (launch to exit); the CPU seconds of the run's processes (for Ray,
also the cluster's: its daemons and actors, during the run); and the per-worker throughput of the
steady part: tokens / (wall - fixed) / workers, where ``fixed`` is the wall of the same engine
on a one-file corpus (process and cluster start-up, imports, tokenizer load and self-test on
every worker, the runner's set-up, finalize: what a job pays whatever its size). Each is also
given as a share of the local engine's at the same number of workers: "% of local per core"
is the steady part's (issue 22's target: at least 80% for Ray and Beam), "% of local (CPU)" the
CPU seconds' (local / engine), which a machine shared with other work disturbs least.

Modes: pinned binds a run and everything it starts (Beam's workers, the Ray cluster, started
with w CPUs) to w cores, so one worker really is one core; shared gives w workers the whole
machine (one worker still gets help from the idle core). ``--against`` also runs every cell on
other code (a commit, exported, or a directory holding a copy of the repository), cell by cell
beside this checkout's; its table follows, with each cell's change.
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
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from engine_cells import ClusterCpu, Corpus, Idle, children_cpu, marker_times  # noqa: E402

ISSUE = """The table of issue 22 (local, Ray joined to a running cluster, Beam DirectRunner; 2
workers on an idle 2-core machine; the Linux kernel's C sources, 55,384 files, 1,034 MB):

  apt-get download linux-source-6.1 && dpkg-deb -x linux-source-6.1_*.deb deb
  tar -xf deb/usr/src/linux-source-6.1.tar.xz        # -> linux-source-6.1/
  python benchmarks/bench_engines_scale.py --corpus linux-source-6.1 --include '*.c,*.h' \\
      --workers 2 --mode shared --engines local,ray,beam --repeat 3
"""


def run_cell(engine: str, workers: int, inputs: list[str], out: Path, cores=None, cluster=None,
             root: Path = ROOT, details: bool = False) -> dict:
    env = dict(cluster.env if cluster else os.environ)
    env.pop("RAY_ADDRESS", None)
    args = [sys.executable, "-m", "pipelines.cli", "run", str(root / "configs" / "demo.yaml"),
            *inputs, f"output.dir={out}", "output.report=false", f"engine={engine}", "--quiet"]
    if engine == "local":
        args.append(f"local.workers={workers}")
    elif engine == "beam":
        args.append(f"beam.num_workers={workers}")
    else:
        args += [f"ray.address={cluster.address}", f"ray.concurrency={workers}"]
    args += ["output.keep_work=true"] if details else []  # its markers' times: the stages
    cpu0, sampler, launched = children_cpu(), ClusterCpu(cluster), time.time()
    t0 = time.perf_counter()
    proc = subprocess.run(args, env=env, capture_output=True, text=True, cwd=root,
                          preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None)
    wall = time.perf_counter() - t0
    cpu = children_cpu() - cpu0 + sampler.stop()
    if proc.returncode:
        raise SystemExit(f"{engine} x{workers} failed:\n{proc.stderr[-3000:]}")
    tokens = json.loads((out / "manifest.json").read_text())["totals"]["tokens_in"]
    timings = json.loads((out / "timings.json").read_text())
    if details:
        timings["markers_s"] = marker_times(out / "_work", launched)
        timings["cluster_daemons_cpu_s"] = round(sampler.daemons, 2)
    shards = [p.read_bytes() for p in sorted(out.glob("shard-*.arrow"))]
    shutil.rmtree(out)
    return {"wall": wall, "tokens": tokens, "shards": shards, "timings": timings, "cpu": cpu}


def start_cluster(num_cpus: int, cores, warm: list[str], tmp: Path):
    """A local Ray cluster whose processes all inherit the affinity ``cores`` (None: every
    core), warmed with one small job."""
    from tests.ray_cluster import LocalRayCluster

    before = os.sched_getaffinity(0)
    if cores:
        os.sched_setaffinity(0, cores)
    try:
        cluster = LocalRayCluster(num_cpus=num_cpus).start()
    finally:
        os.sched_setaffinity(0, before)
    try:
        run_cell("ray", num_cpus, warm, tmp / "warmup", cores, cluster)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def run_mode(mode: str, corpus: Corpus, args, tmp: Path, roots, idle: Idle) -> list[dict]:
    """One result dict per code root: (engine, workers) -> cell, and ("fixed", engine) -> the
    fastest one-file run. Rounds of every cell in turn; a cell keeps its fastest run."""
    results = [{} for _ in roots]
    cores_of = (lambda w: set(sorted(os.sched_getaffinity(0))[:w])) if mode == "pinned" \
        else (lambda w: None)
    names = [e.strip() for e in args.engines.split(",")]
    for i in range(args.repeat):
        for w in args.workers:
            for engine in names:
                cluster = None
                if engine == "ray":
                    cluster = start_cluster(w if mode == "pinned" else os.cpu_count(),
                                            cores_of(w), corpus.small, tmp)
                try:
                    jobs = [(("fixed", engine, w), corpus.small)] if i == 0 else []
                    for key, inputs in jobs + [((engine, w), corpus.inputs)]:
                        for j, root in enumerate(roots):
                            idle.wait()
                            cell = run_cell(engine, w, inputs, tmp / f"out-{j}", cores_of(w),
                                            cluster, root, corpus.details)
                            old = results[j].get(key)
                            results[j][key] = min(old or cell, cell, key=lambda c: c["wall"])
                            print(f"  {mode} {key}: {cell['wall']:.1f} s, {cell['cpu']:.1f} "
                                  f"CPU-s ({'abcd'[j]}, load {idle.loads[-1]:.2f})",
                                  file=sys.stderr)
                            if corpus.details and key[0] != "fixed":
                                print(f"    {cell['timings']}", file=sys.stderr)
                finally:
                    if cluster is not None:
                        cluster.stop()
    return results


def table(results: dict, base: dict | None = None) -> str:
    """The table; with ``base`` (the same cells on other code), each wall's change against it.

    Against the local engine at the same number of workers: wall (the whole job), per core
    (the steady part: tokens / (wall - fixed) / workers, the job's fixed costs left out) and
    CPU (local CPU-s / this engine's CPU-s: the work each core did, the least noisy of the three
    on a machine shared with other work)."""
    cells = {k: v for k, v in results.items() if k[0] != "fixed"}

    def steady(engine, w):  # tokens/s per worker; nan when the run is not longer than its fixed
        c, fixed = cells[(engine, w)], results[("fixed", engine, w)]["wall"]
        rest = c["wall"] - fixed
        return c["tokens"] / rest / w if rest > 0.05 * c["wall"] else float("nan")

    def share(x, of):  # "-" where a run was not longer than its fixed part
        return f"{x / of:.0%}" if x == x and of == of else "-"

    head = ["engine", "workers", "wall s", "% of local (wall)", "fixed s",
            "% of local per core (steady)", "CPU s", "% of local (CPU)", "2 vs 1 worker (wall)",
            "shards = local"] + ([] if base is None else ["wall vs other code"])
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for (engine, w), c in cells.items():
        ref, one = cells.get(("local", w)), cells.get((engine, 1))
        row = [engine, w, f"{c['wall']:.1f}", f"{ref['wall'] / c['wall']:.0%}" if ref else "",
               f"{results[('fixed', engine, w)]['wall']:.1f}",
               share(steady(engine, w), steady("local", w)) if ref else "",
               f"{c['cpu']:.1f}", f"{ref['cpu'] / c['cpu']:.0%}" if ref else "",
               f"{one['wall'] / c['wall']:.2f}x" if w == 2 and one else "",
               "yes" if c["shards"] == next(iter(cells.values()))["shards"] else "NO"]
        if base is not None:
            row.append(f"{c['wall'] / base[(engine, w)]['wall'] - 1:+.0%}")
        lines.append("| " + " | ".join(map(str, row)) + " |")
    return "\n".join(lines)


def export(rev: str, into: Path) -> Path:
    """The tree of commit ``rev`` of this checkout (or the directory ``rev``), under ``into``."""
    if Path(rev).is_dir():
        return Path(rev).resolve()
    into.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=ISSUE,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", help="a file tree (default: --copies of the benchmark corpus)")
    ap.add_argument("--include", default="*", help="globs of the tree's files, comma-separated")
    ap.add_argument("--copies", type=int, default=8)
    ap.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    ap.add_argument("--engines", default="local,beam,ray")
    ap.add_argument("--mode", choices=("pinned", "shared", "both"), default="both")
    ap.add_argument("--repeat", type=int, default=1, help="rounds; each cell keeps its fastest")
    ap.add_argument("--against", metavar="REV_OR_DIR", help="also run each cell on this code")
    ap.add_argument("--idle-cores", type=float, default=0.3,
                    help="before each cell, wait until at most this many cores are busy")
    ap.add_argument("--max-wait", type=float, default=1800, help="seconds of waiting in all")
    ap.add_argument("--details", action="store_true", help="print each run's timings.json")
    args = ap.parse_args()
    args.workers = [int(w) for w in args.workers.split(",")]
    if len(os.sched_getaffinity(0)) < max(args.workers):
        raise SystemExit(f"needs at least {max(args.workers)} cores")
    modes = ("pinned", "shared") if args.mode == "both" else (args.mode,)
    idle = Idle(args.idle_cores, args.max_wait)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = Corpus(args, tmp)
        roots = (ROOT,) + ((export(args.against, tmp / "against"),) if args.against else ())
        results = {}
        for mode in modes:
            idle.loads = []
            results[mode] = (run_mode(mode, corpus, args, tmp, roots, idle), list(idle.loads))
    res0 = next(iter(results.values()))[0][0]
    tokens = next(c["tokens"] for k, c in res0.items() if k[0] != "fixed")
    print(f"{corpus.name}: {tokens:,} tokens; {os.cpu_count()} cores\n")
    for mode, (res, loads) in results.items():
        print(f"{mode} (workers {'= cores' if mode == 'pinned' else 'on every core'}); 1-minute "
              f"load average at the cells' starts {min(loads):.2f}-{max(loads):.2f}:\n")
        if args.against:
            print(f"this checkout:\n\n{table(res[0], res[1])}\n\n{args.against}:\n")
        print(table(res[-1]) + "\n")
    return 0


if __name__ == "__main__":
    from tests.ray_cluster import exit_on_sigterm

    exit_on_sigterm()  # a killed benchmark still stops the Ray cluster it started
    sys.exit(main())
