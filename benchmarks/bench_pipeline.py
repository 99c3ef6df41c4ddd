"""End-to-end ``fewtrunc run`` against the raw tokenizers, on a source tree and on the same texts
as one JSONL.zst, plus each engine on ~100 MB, with peak RSS.

    python benchmarks/bench_pipeline.py [--tree DIR --include '*.c,*.h'] [--engines] [--write-readme]

Corpus: ``--tree`` (every file matching ``--include``; the Linux kernel sources of Debian's
``linux-source-6.1`` package are ~1.2 GB of C in 55k files: ``apt-get download linux-source-6.1``,
``dpkg-deb -x`` it and untar ``usr/src/linux-source-6.1.tar.xz``), by default this Python's
standard library (``*.py``). The texts the pipeline accepts (UTF-8, under
``input.max_document_bytes``) are loaded once; in the same process the raw backends encode them:
``fastokens.encode_batch_flat`` over the pipeline's 1 MB batches on a thread per core (how the
pipeline calls it), over the same batches one call after another (the backend's own threads: how
a script would call it), and in one call over every text; ``tokenizers.encode_batch_fast`` (ids
read out) over the first ``--hf-mb`` MB (it is ~50x slower). The runs are fresh ``fewtrunc run``
subprocesses (seq_len 8192, report off), timed from launch to exit, so interpreter start and
imports count; a thread samples the child's peak RSS. "vs raw fast" is the run's MB/s over
the raw fast backend's. ``--check-ids`` (on by default
for corpora under 300 MB) also runs ``tokenizer.backend=tokenizers`` over the tree and checks the
shards byte-identical.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import zstandard

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SEQ_LEN = 8192
MAX_DOC = 8_000_000  # the pipeline's default input.max_document_bytes


def tree_texts(root: Path, include: list[str]) -> tuple[list[str], list[str]]:
    """(relative paths, texts) of the files the pipeline would accept, in its walk order."""
    rels, texts = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if not any(fnmatch.fnmatchcase(rel, g) for g in include):
                continue
            data = path.read_bytes()
            if not data or len(data) > MAX_DOC:
                continue
            try:
                texts.append(data.decode("utf-8"))
            except UnicodeDecodeError:
                continue
            rels.append(rel)
    return rels, texts


def batches(texts: list[str], batch_bytes: int = 1_000_000):
    batch, size = [], 0
    for t in texts:
        batch.append(t)
        size += len(t)
        if size >= batch_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def first_mb(texts: list[str], mb: float) -> tuple[list[str], int]:
    """The leading texts that make up about ``mb`` MB of UTF-8, and their size in bytes."""
    out, size = [], 0
    for t in texts:
        if size >= mb * 1e6:
            break
        out.append(t)
        size += len(t.encode())
    return out, size


def raw_rates(texts: list[str], hf_mb: float) -> dict:
    """MB/s of each backend alone over the same texts, a thread per core, best of 2."""
    from pipelines.encoders import FastokensEncoder, ReferenceEncoder
    from pipelines.unit_stream import usable_cores
    from pipelines.steps.tokenize import one_thread_per_call
    from pipelines.infra.tokenizer import load_tokenizer

    tok = load_tokenizer()
    cores = usable_cores()
    out = {}
    hf_texts, _ = first_mb(texts, hf_mb)
    for name, enc, sample in (("fastokens", FastokensEncoder(tok, True), texts),
                              ("tokenizers", ReferenceEncoder(tok, True), hf_texts)):
        mb = sum(len(t.encode()) for t in sample) / 1e6
        best = float("inf")
        for _ in range(2):
            t0 = time.perf_counter()
            with one_thread_per_call(), ThreadPoolExecutor(cores) as pool:
                tokens = sum(ids.size for ids, _ in pool.map(enc.encode_flat, batches(sample)))
            best = min(best, time.perf_counter() - t0)
        out[name] = {"mb": mb, "seconds": best, "mb_s": mb / best, "tokens": tokens}
    # the plain calls a script would time (the backend's own threads): batch after batch, and
    # one encode_batch_flat over every text
    fast = FastokensEncoder(tok, True)
    for key, calls in (("fastokens, batch after batch", lambda: batches(texts)),
                       ("fastokens, one call", lambda: [texts])):
        best = float("inf")
        for _ in range(2):
            t0 = time.perf_counter()
            tokens = sum(fast.encode_flat(b)[0].size for b in calls())
            best = min(best, time.perf_counter() - t0)
        out[key] = {"mb": out["fastokens"]["mb"], "seconds": best,
                    "mb_s": out["fastokens"]["mb"] / best, "tokens": tokens}
    return out


class PeakRss:
    """Samples a process's VmHWM (its own peak RSS, kept by the kernel) until it exits."""

    def __init__(self, pid: int):
        self.pid, self.peak_kb = pid, 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        path = f"/proc/{self.pid}/status"
        while True:
            try:
                with open(path) as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            self.peak_kb = max(self.peak_kb, int(line.split()[1]))
            except OSError:
                return
            time.sleep(0.05)


def fewtrunc_run(out: Path, *overrides: str) -> dict:
    """One ``fewtrunc run`` subprocess: wall seconds, peak RSS, and the manifest's totals."""
    config = out.parent / "bench.yaml"
    config.write_text("# every key from the command line\n{}\n")
    args = [sys.executable, "-m", "pipelines.cli", "run", str(config), f"output.dir={out}",
            "output.report=false", f"pack.seq_len={SEQ_LEN}", "--quiet", *overrides]
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    rss = PeakRss(proc.pid)
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"fewtrunc run {' '.join(overrides)} failed:\n{err[-3000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    timings = json.loads((out / "timings.json").read_text())
    return {"wall": wall, "rss_mb": rss.peak_kb / 1024, "totals": manifest["totals"],
            "timings": timings, "shards": [s["sha256"] for s in manifest["shards"]],
            "backend": manifest["tokenizer"].get("backend", {}).get("name")}


def write_jsonl_zst(path: Path, texts: list[str], ids: list[str]) -> Path:
    cctx = zstandard.ZstdCompressor(level=3, threads=-1)
    with open(path, "wb") as f, cctx.stream_writer(f) as w:
        for b in range(0, len(texts), 4096):
            w.write("".join(json.dumps({"text": t, "id": i}) + "\n"
                            for t, i in zip(texts[b : b + 4096], ids[b : b + 4096])).encode())
    return path


def engine_rows(texts: list[str], tmp: Path, mb_target: float) -> list[tuple]:
    """Each engine over the first ~``mb_target`` MB of the texts, as 4 JSONL.zst units."""
    sub, size = first_mb(texts, mb_target)
    q = (len(sub) + 3) // 4
    files = [write_jsonl_zst(tmp / f"engines-{k}.jsonl.zst", sub[k * q : (k + 1) * q],
                             [str(k * q + i) for i in range(len(sub[k * q : (k + 1) * q]))])
             for k in range(4)]
    paths = "input.paths=[" + ",".join(f'"{f}"' for f in files) + "]"
    rows, ref = [], None
    for engine, extra in (("local", ["local.workers=2"]), ("ray", ["ray.num_cpus=2"]),
                          ("beam", ["beam.num_workers=2"])):
        r = fewtrunc_run(tmp / f"out-{engine}", paths, f"engine={engine}", "input.unit_bytes=1",
                         *extra)
        ref = ref or r["shards"]
        rows.append((f"fewtrunc run, engine={engine}, {size / 1e6:.0f} MB JSONL", size / 1e6,
                     r, r["shards"] == ref))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", default=sysconfig.get_paths()["stdlib"])
    ap.add_argument("--include", default="*.py")
    ap.add_argument("--hf-mb", type=float, default=30.0, help="MB the slow reference encodes")
    ap.add_argument("--engines", action="store_true", help="also local, Ray and Beam on ~100 MB")
    ap.add_argument("--engines-mb", type=float, default=100.0)
    ap.add_argument("--check-ids", choices=("auto", "yes", "no"), default="auto")
    ap.add_argument("--write-readme", action="store_true", help="update benchmarks/README.md")
    args = ap.parse_args()
    tree, include = Path(args.tree), [g.strip() for g in args.include.split(",")]
    rels, texts = tree_texts(tree, include)
    mb = sum(len(t.encode()) for t in texts) / 1e6
    raw = raw_rates(texts, args.hf_mb)
    fast = raw["fastokens"]["mb_s"]
    inc = "input.include=[" + ",".join(f'"{g}"' for g in include) + "]"
    rows = [(f"raw fastokens encode_batch_flat, 1 MB batches, a thread per core "
             f"({raw['fastokens']['mb']:.0f} MB)", raw["fastokens"]["mb"], None, None),
            ("raw fastokens encode_batch_flat, 1 MB batches, batch after batch",
             raw["fastokens"]["mb"], None, None),
            ("raw fastokens encode_batch_flat, one call over every text",
             raw["fastokens"]["mb"], None, None),
            (f"raw tokenizers encode_batch_fast ({raw['tokenizers']['mb']:.0f} MB)",
             raw["tokenizers"]["mb"], None, None)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = fewtrunc_run(tmp / "out-files", f'input.paths=["{tree}"]', "input.format=files",
                             inc, "input.exclude=[]")
        jsonl = write_jsonl_zst(tmp / "corpus.jsonl.zst", texts, rels)
        lines = fewtrunc_run(tmp / "out-jsonl", f'input.paths=["{jsonl}"]')
        rows += [(f"fewtrunc run, file tree ({len(texts):,} files)", mb, files, None),
                 ("fewtrunc run, the same texts as one JSONL.zst", mb, lines, None)]
        check = args.check_ids == "yes" or (args.check_ids == "auto" and mb < 300)
        if check:
            ref = fewtrunc_run(tmp / "out-ref", f'input.paths=["{tree}"]', "input.format=files",
                               inc, "input.exclude=[]", "tokenizer.backend=tokenizers")
            rows.append(("fewtrunc run, file tree, tokenizer.backend=tokenizers", mb, ref,
                         ref["shards"] == files["shards"]))
        if args.engines:
            rows += engine_rows(texts, tmp, args.engines_mb)
    one = raw["fastokens, one call"]["mb_s"]
    serial = raw["fastokens, batch after batch"]["mb_s"]
    table = ("| what | MB | seconds | MB/s | vs raw fast (threads) | vs raw fast (batch after "
             "batch) | vs raw fast (one call) | peak RSS MiB | M tokens | same shards |\n"
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
    for name, size, r, same in rows:
        if r is None:
            key = ("fastokens, one call" if "one call" in name else
                   "fastokens, batch after batch" if "batch after batch" in name else
                   "fastokens" if "fastokens" in name else "tokenizers")
            sec, tok, rss = raw[key]["seconds"], raw[key]["tokens"] / 1e6, ""
        else:
            sec, tok, rss = r["wall"], r["totals"]["tokens_in"] / 1e6, f"{r['rss_mb']:.0f}"
        rate = size / sec
        same_s = "" if same is None else ("yes" if same else "**NO**")
        table += (f"| {name} | {size:,.0f} | {sec:.1f} | {rate:.1f} | {rate / fast:.0%} | "
                  f"{rate / serial:.0%} | {rate / one:.0%} | {rss} | {tok:,.1f} | {same_s} |\n")
    note = (f"Corpus: {tree.name} ({', '.join(include)}), {len(texts):,} files, {mb:,.0f} MB; "
            f"{os.cpu_count()} cores; GPT-2 BPE; seq_len {SEQ_LEN}; special-token strings split "
            f"(the default); runs timed from process launch to exit.\n")
    print(note)
    print(table)
    for name, _, r, _ in rows:
        if r is not None:
            t = r["timings"]
            guard = t.get("guard_thread_s", 0.0)
            share = guard / ((t.get("tokenize_s") or r["wall"]) * len(os.sched_getaffinity(0)))
            print(f"{name}: phases (s)", {k: round(v, 2) for k, v in t.items()},
                  f"guard: {r['totals'].get('documents_guard_checked')} documents, "
                  f"{guard:.2f} CPU-s = {share:.1%} of the tokenize phase's core time, "
                  f"{guard / (len(os.sched_getaffinity(0)) * r['wall']):.1%} of the run's")
    if args.write_readme:
        write_section(ROOT / "benchmarks" / "README.md", "Pipeline",
                      "Measured by `python benchmarks/bench_pipeline.py`. " + note + "\n" + table)
    return 0


def corpus_texts() -> list[str]:
    """The engine-scaling benchmark's corpus: the shipped English text plus the standard
    library's sources without tests."""
    from pipelines.steps.plan import ASSETS

    raw = zstandard.ZstdDecompressor().stream_reader(
        (ASSETS / "python-docs-en.jsonl.zst").read_bytes()).read()
    texts = [json.loads(line)["text"] for line in raw.decode().splitlines()]
    root = Path(sysconfig.get_paths()["stdlib"])
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
