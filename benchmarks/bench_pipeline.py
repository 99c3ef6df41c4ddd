"""End-to-end throughput of the local pipeline against the raw tokenizer, and peak RSS at 1x, 2x,
4x and 8x corpus size.

Corpus: the CPython standard library sources (no tests) plus fewtrunc's shipped English text,
written as one JSON-lines.zst file per copy (4x = four copies, so the same documents repeat).
Raw baselines tokenize the same documents, already in memory, in the same batch size on the same
cores: ``encode_batch`` alone, ``encode_batch_fast`` alone, and ``encode_batch_fast`` plus reading
the ids out (``[e.ids for e in ...]``), which any consumer of the ids must pay. Each pipeline run
is a fresh subprocess (``pipelines.run``), so its ``ru_maxrss`` is its own peak RSS; a thread
samples ``/proc/self/status`` every 2 ms for the peaks of anonymous and file-backed memory.

    python benchmarks/bench_pipeline.py [--write-readme]
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

CHILD = """
import json, resource, sys, threading, time, pipelines
peak = {"RssAnon": 0, "RssFile": 0}
def sample():
    while True:
        with open("/proc/self/status") as f:
            for line in f:
                key = line.split(":")[0]
                if key in peak:
                    peak[key] = max(peak[key], int(line.split()[1]))
        time.sleep(0.002)
threading.Thread(target=sample, daemon=True).start()
r = pipelines.run(None, sys.argv[1:])
m = r["manifest"]["totals"]
print(json.dumps({"tokens": m["tokens_in"], "docs": m["documents_accepted"],
                  "seconds": r["timings"]["total_s"], "timings": r["timings"],
                  "anon_kb": peak["RssAnon"], "file_kb": peak["RssFile"],
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""

def corpus_texts() -> list[str]:
    import sysconfig

    from pipelines.steps.plan import ASSETS

    root = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    raw = zstandard.ZstdDecompressor().stream_reader(
        (ASSETS / "python-docs-en.jsonl.zst").read_bytes()).read()
    texts += [json.loads(line)["text"] for line in raw.decode().splitlines()]
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root).as_posix()
        if "site-packages" in rel or "/test" in f"/{rel}" or "tests/" in rel:
            continue
        try:
            t = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if t:
            texts.append(t)
    return texts


def batches(texts: list[str], batch_bytes: int):
    batch, size = [], 0
    for t in texts:
        batch.append(t)
        size += len(t)
        if size >= batch_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def raw_rates(texts: list[str], batch_bytes: int, repeats: int = 2) -> dict:
    from pipelines.tokenizer import load_tokenizer

    tok = load_tokenizer()
    modes = {
        "encode_batch": lambda b: tok.encode_batch(b, add_special_tokens=False),
        "encode_batch_fast": lambda b: tok.encode_batch_fast(b, add_special_tokens=False),
        "encode_batch_fast + ids": lambda b: [e.ids for e in
                                              tok.encode_batch_fast(b, add_special_tokens=False)],
    }
    n_tokens = sum(len(e.ids) for b in batches(texts, batch_bytes)
                   for e in tok.encode_batch_fast(b, add_special_tokens=False)) + len(texts)
    out = {}
    for name, fn in modes.items():
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            for b in batches(texts, batch_bytes):
                fn(b)
            best = min(best, time.perf_counter() - t0)
        out[name] = {"seconds": best, "tokens_per_s": n_tokens / best}
    return out


def pipeline_run(paths: list[Path], out: Path, batch_bytes: int) -> dict:
    args = [f"input.paths={','.join(map(str, paths))}", f"output.dir={out}",
            "output.report=false", f"tokenizer.batch_bytes={batch_bytes}"]
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True,
                          cwd=ROOT, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


COPIES = (1, 2, 4, 8)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write-readme", action="store_true", help="update benchmarks/README.md")
    ap.add_argument("--batch-bytes", type=int, default=1_000_000)
    args = ap.parse_args()
    texts = corpus_texts()
    mb = sum(len(t.encode()) for t in texts) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = "".join(json.dumps({"text": t}) + "\n" for t in texts).encode()
        files = []
        for i in range(max(COPIES)):
            f = tmp / f"copy{i}.jsonl.zst"
            f.write_bytes(zstandard.ZstdCompressor(level=3).compress(data))
            files.append(f)
        raw = raw_rates(texts, args.batch_bytes)
        runs = {n: pipeline_run(files[:n], tmp / f"out{n}", args.batch_bytes) for n in COPIES}
    cores = os.cpu_count()
    rows = [("raw " + k, f"{v['tokens_per_s'] / 1e6:.3f}", "", "", "") for k, v in raw.items()]
    for n, r in runs.items():
        rate = r["tokens"] / r["seconds"]
        rows.append((f"fewtrunc run, {n}x ({r['tokens'] / 1e6:.1f} M tokens)",
                     f"{rate / 1e6:.3f}",
                     f"{rate / raw['encode_batch']['tokens_per_s']:.0%} / "
                     f"{rate / raw['encode_batch_fast + ids']['tokens_per_s']:.0%}",
                     f"{r['maxrss_kb'] / 1024:.0f}",
                     f"{r['anon_kb'] / 1024:.0f} / {r['file_kb'] / 1024:.0f}"))
    head = ("| what | M tokens/s | vs encode_batch / vs fast+ids | peak RSS MiB "
            "| peak anon / file MiB |\n|---|---:|---:|---:|---:|\n")
    table = head + "".join(f"| {' | '.join(r)} |\n" for r in rows)
    note = (f"{len(texts):,} documents, {mb:.1f} MB of text, {runs[1]['tokens']:,} tokens per copy; "
            f"{cores} cores; GPT-2 BPE; batches of {args.batch_bytes / 1e6:g} MB; pipeline = "
            f"read .jsonl.zst + tokenize + global BFD + zstd Arrow shards + manifest "
            f"(report off).\n")
    print(note)
    print(table)
    for n, r in runs.items():
        print(f"pipeline phases (s), {n}x:", {k: round(v, 2) for k, v in r["timings"].items()})
    if args.write_readme:
        write_section(ROOT / "benchmarks" / "README.md", "Pipeline",
                      "Measured by `python benchmarks/bench_pipeline.py --write-readme`. " + note
                      + "\n" + table)
    return 0


def write_section(path: Path, heading: str, body: str) -> None:
    """Replace (or append) the ``## heading`` section, leaving every other section untouched."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if ln.strip() == f"## {heading}"), None)
    block = f"## {heading}\n\n{body.rstrip()}\n\n"
    if start is None:
        new = text.rstrip("\n") + "\n\n" + block
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
                   len(lines))
        new = "".join(lines[:start]) + block + "".join(lines[end:])
    path.write_text(new.rstrip("\n") + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
