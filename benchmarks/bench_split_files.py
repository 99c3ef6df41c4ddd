"""One big input file on 2 workers: unsplit (one unit) against cut into pieces (``input.unit_bytes``
at its default, 64 MB), on the local engine, Ray (2 actors of 1 CPU, a private local Ray) and
Beam (2 DirectRunner workers), in one run of this script so every cell sees the same machine.

    python benchmarks/bench_split_files.py --corpus SOURCE_TREE [--mb 1000] [--work DIR]
        [--formats zst,frames,jsonl,parquet] [--engines local,ray,beam] [--unit-bytes N]
        [--modes shared,pinned] [--repeat N]

The corpus: the tree's UTF-8 files in walk order, one JSON line each (``{"text": ...}``), until
``--mb`` MB of JSON lines, written once under ``--work`` (kept for the next run) as
``zst``: one ``.jsonl.zst`` of one frame (``zstd`` level 3, as ``zstd -T0`` writes it);
``frames``: the same text in frames of 8 MiB; ``jsonl``: plain; ``parquet``: row groups of
64 MiB of text. Each cell is a fresh ``fewtrunc run`` subprocess; the unsplit run is the same
config with ``input.unit_bytes`` above the file's size.

Two modes: ``shared``, every run on the machine's cores (here a worker's reader and encoder
threads already keep 2 cores busy with one unit); ``pinned``, a cluster of 1-core workers: the
unsplit run bound to 1 core (its one unit keeps one worker busy, the other idles) and the split
run to 2 (the run and every process it starts: Ray's daemons and actors, Beam's workers).

First, what each unit costs the worker that tokenizes it, in CPU seconds (robust to other load):
the whole file as one unit, then each piece alone. Then per cell: wall time, the tokenize
stage's time (``timings.json``), the units, each worker's share of the input (from the unit
markers) and whether shards, stats.json and rejects.jsonl are those of the first run, byte for
byte (the fastest of ``--repeat`` runs; unsplit and split take turns, so they share the
machine's load). Then the planner's own cost: the pass that finds the cuts, and one decoding of
the file.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SPLIT_BYTES = 64_000_000  # input.unit_bytes's default


def build_text(tree: Path, target: int, out: Path) -> Path:
    """The tree's UTF-8 files as JSON lines, in walk order, up to ``target`` bytes."""
    if out.is_file():
        return out
    size, tmp = 0, out.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        for dirpath, dirnames, filenames in os.walk(tree):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath) / name
                if path.is_symlink() or not path.is_file():
                    continue
                try:
                    text = path.read_bytes().decode("utf-8")
                except (OSError, UnicodeDecodeError):
                    continue
                if not text:
                    continue
                line = json.dumps({"text": text}, ensure_ascii=False).encode() + b"\n"
                f.write(line)
                size += len(line)
                if size >= target:
                    break
            if size >= target:
                break
    tmp.rename(out)
    return out


def build(fmt: str, text: Path, work: Path) -> Path:
    import zstandard

    names = {"zst": "one-frame.jsonl.zst", "frames": "frames.jsonl.zst", "jsonl": "plain.jsonl",
             "parquet": "groups.parquet"}
    out = work / names[fmt]
    if out.is_file():
        return out
    data = text.read_bytes()
    if fmt == "jsonl":
        shutil.copyfile(text, out)
    elif fmt == "zst":  # one frame, as the zstd CLI writes a file (multi-threaded: one frame)
        out.write_bytes(zstandard.ZstdCompressor(level=3, threads=-1).compress(data))
    elif fmt == "frames":
        c = zstandard.ZstdCompressor(level=3)
        with open(out, "wb") as f:
            for i in range(0, len(data), 8 << 20):
                f.write(c.compress(data[i : i + (8 << 20)]))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        texts = [json.loads(line)["text"] for line in data.splitlines()]
        per_group = max(1, len(texts) * (64 << 20) // len(data))
        pq.write_table(pa.table({"text": texts}), out, row_group_size=per_group)
    return out


def run_cell(path: Path, unit_bytes: int, engine: str, out: Path, cores=None) -> dict:
    """One ``fewtrunc run``; ``cores``: the run and every process it starts (Ray's daemons and
    actors, Beam's workers) bound to them."""
    config = out.with_suffix(".yaml")
    config.write_text(json.dumps({
        "input": {"paths": [str(path)], "unit_bytes": unit_bytes},
        "pack": {"seq_len": 2048},
        "output": {"dir": str(out), "report": False, "keep_work": True, "rows_per_shard": 1024},
    }), encoding="utf-8")
    args = [sys.executable, "-m", "pipelines.cli", "run", str(config), f"engine={engine}",
            "--quiet"]
    if engine == "ray":
        args += ["ray.num_cpus=2", "ray.cpus_per_actor=1"]
    elif engine == "beam":
        args += ["beam.num_workers=2"]
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_ADDRESS", None)
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    proc = subprocess.run(args, env=env, capture_output=True, text=True, cwd=ROOT,
                          preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{engine} on {path.name} failed:\n{proc.stderr[-3000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    timings = json.loads((out / "timings.json").read_text())
    share = Counter()
    for marker in (out / "_work").glob("unit-*.done.json"):
        m = json.loads(marker.read_text())
        share[(m["worker"]["host"], m["worker"]["pid"])] += m["bytes"]
    shards = hashlib.sha256("".join(s["sha256"] for s in manifest["shards"]).encode())
    for name in ("rejects.jsonl", "stats.json"):
        shards.update((out / name).read_bytes())
    cell = {"wall": wall, "tokenize": timings.get("tokenize_s"),  # none: Beam's one pipeline
            "units": manifest["inputs"]["units"], "shards": shards.hexdigest(),
            "tokens": manifest["totals"]["tokens_in"],
            "shares": sorted((v / max(1, sum(share.values())) for v in share.values()),
                             reverse=True)}
    shutil.rmtree(out, ignore_errors=True)
    config.unlink()
    return cell


def planner_cost(path: Path, unit_bytes: int) -> tuple[float, float, int]:
    """(seconds the planner's cut takes, seconds one decoding takes, pieces)."""
    from pipelines.steps.plan import cut_source
    from pipelines.steps.plan import Source, format_of
    from pipelines.steps.read_jsonl import _chunks

    src = Source(str(path), str(path), format_of(str(path), "auto"), path.stat().st_size)
    t0 = time.perf_counter()
    pieces = cut_source(src, unit_bytes)
    cut_s = time.perf_counter() - t0
    decode_s = 0.0
    if src.format == "jsonl":
        t0 = time.perf_counter()
        with open(path, "rb") as f:
            for _ in _chunks(f):
                pass
        decode_s = time.perf_counter() - t0
    return cut_s, decode_s, len(pieces)


def piece_work(path: Path, unit_bytes: int, work: Path) -> list[tuple]:
    """What each unit costs its worker, in CPU seconds of this process (the reader, encoder
    and spilling threads; robust to other load on the machine): the whole file as one unit, then
    each piece of the split plan, each read by a fresh reader, as on a worker of its own (a
    one-frame piece decodes the file up to its start). On a cluster of 1-core workers the
    tokenize stage takes the largest unit's time. Rows: (plan, unit, first line, CPU s, wall s,
    planner s)."""
    from pipelines.config import load_run_config
    from pipelines.steps.plan import plan_units
    from pipelines.steps.read import Reader
    from pipelines.steps.tokenize import Tokenize
    from pipelines.unit_stream import tokenize_units

    rows, tok = [], None
    for label, size in (("whole", path.stat().st_size + 1), ("split", unit_bytes)):
        cfg = load_run_config({"input": {"paths": [str(path)], "unit_bytes": size}})
        t0 = time.perf_counter()
        units = plan_units(cfg.input)
        planned = time.perf_counter() - t0
        tok = tok or Tokenize(cfg.tokenizer)
        for u in units:
            spill = work / "spill"
            spill.mkdir(exist_ok=True)
            c0, w0 = time.process_time(), time.perf_counter()
            tokenize_units(spill, tok, [u], Reader(cfg.input, cfg.tokenizer.batch_bytes), 1)
            rows.append((label, u.index, u.sources[0].part.first if u.sources[0].part else 1,
                         time.process_time() - c0, time.perf_counter() - w0, planned))
            shutil.rmtree(spill)
    return rows


def measure(path: Path, fmt: str, args, mode: str) -> list[dict]:
    """The unsplit and split cells of each engine, unsplit and split taking turns."""
    cores = sorted(os.sched_getaffinity(0))
    rows, want = [], None
    for engine in args.engines.split(","):
        if mode == "pinned" and engine == "local":
            continue  # one process: its threads share a unit, nothing to spread
        runs: dict = {"unsplit": [], "split": []}
        for _ in range(args.repeat):
            for label, unit_bytes in (("unsplit", path.stat().st_size + 1),
                                      ("split", args.unit_bytes)):
                pin = None if mode == "shared" else set(cores[: 1 if label == "unsplit" else 2])
                cell = run_cell(path, unit_bytes, engine, args.work / f"out-{engine}-{label}",
                                pin)
                want = want or cell["shards"]
                runs[label].append(cell)
                print(f"  {fmt} {mode} {engine} {label}: {cell['wall']:.1f} s (load "
                      f"{os.getloadavg()[0]:.1f})", file=sys.stderr)
        for label, cells in runs.items():
            best = min(cells, key=lambda c: c["wall"])
            rows.append({**best, "fmt": fmt, "mode": mode, "engine": engine, "label": label,
                         "same": all(c["shards"] == want for c in cells)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", required=True, type=Path, help="a source tree (UTF-8 files)")
    ap.add_argument("--mb", type=int, default=1000, help="MB of JSON lines to build")
    ap.add_argument("--work", type=Path,
                    default=Path(tempfile.gettempdir()) / "fewtrunc-bench-split",
                    help="where the corpus files are built (and kept) and the runs write")
    ap.add_argument("--unit-bytes", type=int, default=SPLIT_BYTES,
                    help="input.unit_bytes of the split runs")
    ap.add_argument("--formats", default="zst")
    ap.add_argument("--engines", default="local,ray,beam")
    ap.add_argument("--modes", default="shared,pinned")
    ap.add_argument("--repeat", type=int, default=1, help="runs per cell (the fastest is shown)")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    text = build_text(args.corpus, args.mb * 1_000_000, args.work / "corpus.jsonl")
    rows, costs, work = [], [], []
    for fmt in args.formats.split(","):
        path = build(fmt, text, args.work)
        costs.append((fmt, path.stat().st_size, *planner_cost(path, args.unit_bytes)))
        work += [(fmt, *w) for w in piece_work(path, args.unit_bytes, args.work)]
        for mode in filter(None, args.modes.split(",")):
            rows += measure(path, fmt, args, mode)
    print(f"\n{text.stat().st_size / 1e6:,.0f} MB of JSON lines; input.unit_bytes = "
          f"{args.unit_bytes:,} for the split runs; 2 workers (Ray actors, Beam processes, "
          f"local threads); the fastest of {args.repeat} run(s) per cell\n")
    print("| file | cores | engine | units | wall s | tokenize stage s | split vs unsplit | "
          "input per worker | shards, stats, rejects = the first run's |")
    print("|---|---|---|---:|---:|---:|---:|---|---|")
    for r in rows:
        base = next(x for x in rows if x["fmt"] == r["fmt"] and x["mode"] == r["mode"]
                    and x["engine"] == r["engine"] and x["label"] == "unsplit")
        speed = "" if r is base else f"{base['wall'] / r['wall']:.2f}x"
        shares = " / ".join(f"{s:.0%}" for s in r["shares"])
        stage = "–" if r["tokenize"] is None else f"{r['tokenize']:.1f}"
        cores = "2" if r["mode"] == "shared" else ("1" if r["label"] == "unsplit" else "2")
        print(f"| {r['fmt']} {r['label']} | {cores} | {r['engine']} | {r['units']} | "
              f"{r['wall']:.1f} | {stage} | {speed} | {shares} | "
              f"{'yes' if r['same'] else 'NO'} |")
    print("\n| file, plan | unit | first line | CPU s | wall s | planner s |")
    print("|---|---:|---:|---:|---:|---:|")
    for fmt, label, unit, first, cpu, wall, planned in work:
        shown = f"{first:,}" if first else "its reader counts"  # a one-frame piece
        print(f"| {fmt}, {label} | {unit} | {shown} | {cpu:.1f} | {wall:.1f} | "
              f"{planned:.2f} |")
    print("\n| file | bytes on disk | pieces | planner's cut pass s | one decoding s |")
    print("|---|---:|---:|---:|---:|")
    for fmt, size, cut_s, decode_s, n in costs:
        print(f"| {fmt} | {size:,} | {n} | {cut_s:.2f} | {decode_s:.2f} |")


if __name__ == "__main__":
    main()
