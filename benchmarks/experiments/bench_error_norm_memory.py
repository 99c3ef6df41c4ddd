"""Extra memory and time of the error-norm scores for one batch: one-shot vs chunked.

Each variant runs in a fresh process that first builds float32 logits of shape
(rows, length, vocab) and then scores them; "extra" is the growth of the process's peak
resident memory (ru_maxrss) during the scoring, i.e. everything allocated beyond the logits.

Variants:
  * before: the former implementation (a float32 softmax of all N x V values, then a squared copy);
  * one-shot: ``error_norm(chunk_tokens=N)`` - one chunk, squared in place;
  * chunked: ``error_norm`` with the default chunk (``CHUNK_ELEMENTS // V`` positions) and others;
  * scoring: what ``training.evaluate.score_dataset`` does per batch - the norms once, then the
    row EL2N, the per-document EL2N and the per-document max (3 documents per row here);
    "before, scoring" is the former per-batch cost: three one-shot passes, then the reductions.

Run: python benchmarks/experiments/bench_error_norm_memory.py   (about 4 minutes, ~10 GB peak)
     python benchmarks/experiments/bench_error_norm_memory.py --rows 2 --length 512  (small)
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GB = 1e9


def former_error_norm(logits, targets, ignore_index=-100):
    """The implementation before chunking, kept here as the baseline."""
    import torch

    with torch.no_grad():
        probs = torch.softmax(logits.detach().float(), dim=-1)
        valid = targets != ignore_index
        safe = torch.where(valid, targets, torch.zeros_like(targets)).long()
        probs.scatter_(-1, safe.unsqueeze(-1), 0.0)
        squared = probs.square().sum(dim=-1) + probs.sum(dim=-1).square()
        return squared.clamp_(0.0, 2.0).sqrt_().masked_fill_(~valid, 0.0)


def run_variant(name: str, rows: int, length: int, vocab: int, threads: int, repeat: int) -> dict:
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(rows, length, vocab, generator=gen)
    targets = torch.randint(0, vocab, (rows, length), generator=gen)
    targets[:, -1] = -100
    lens = [torch.tensor([length // 2, length // 4, length - length // 2 - length // 4])] * rows
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        norms, chunk = score(name, logits, targets, lens)
        times.append(time.perf_counter() - t0)
        del norms
    norms, chunk = score(name, logits, targets, lens)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"variant": name, "chunk_tokens": chunk, "extra_gb": (peak - before) / GB,
            "seconds": sorted(times)[len(times) // 2], "seconds_all": times,
            "logits_gb": logits.numel() * 4 / GB, "checksum": float(norms.double().sum())}


def score(name, logits, targets, lens):
    """One variant's scores and its positions per chunk."""
    from pruning_data import document_stats, el2n_from_norms, error_norm
    from pruning_data.error_norm import chunk_size

    rows, length, vocab = logits.shape
    chunk = None
    if name == "before":
        norms, chunk = former_error_norm(logits, targets), rows * length
    elif name == "before, scoring":  # the former score_dataset: three passes (row EL2N, document EL2N, max)
        for _ in range(3):
            norms = former_error_norm(logits, targets)
        el2n_from_norms(norms, targets, reduce="sequence")
        document_stats(norms, targets, lens)
        chunk = rows * length
    elif name == "one-shot":
        norms = error_norm(logits, targets, chunk_tokens=rows * length)
        chunk = rows * length
    elif name.startswith("chunked"):
        chunk = None if name == "chunked" else int(name.split("=")[1])
        norms = error_norm(logits, targets, chunk_tokens=chunk)
        chunk = chunk_size(vocab, chunk)
    elif name == "scoring":
        norms = error_norm(logits, targets)
        el2n_from_norms(norms, targets, reduce="sequence")
        document_stats(norms, targets, lens)
        chunk = chunk_size(vocab, None)
    else:
        raise ValueError(name)
    return norms, min(chunk, rows * length)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--length", type=int, default=2048)
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per variant (the median is shown)")
    ap.add_argument("--variants", default="before,one-shot,chunked,chunked=256,chunked=2048,before, scoring,scoring")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_variant(args.one, args.rows, args.length, args.vocab, args.threads, args.repeat)))
        return
    results = []
    for name in args.variants.replace("before, scoring", "before; scoring").split(","):
        name = name.replace(";", ",")
        out = subprocess.run([sys.executable, __file__, "--one", name, "--rows", str(args.rows),
                              "--length", str(args.length), "--vocab", str(args.vocab),
                              "--threads", str(args.threads), "--repeat", str(args.repeat)], check=True, capture_output=True, text=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"{name}: {results[-1]['extra_gb']:.2f} GB extra, {results[-1]['seconds']:.1f} s", flush=True)
    sums = {round(r["checksum"], 1) for r in results}
    print(f"\n{args.rows} x {args.length} positions, V = {args.vocab}; logits {results[0]['logits_gb']:.2f} GB "
          f"float32; torch threads {args.threads}; same scores in every variant: {len(sums) == 1}\n")
    print(f"| variant | positions per chunk | extra memory | seconds (median of {args.repeat}) | range |")
    print("|---|---|---|---|---|")
    for r in results:
        chunk = f"{r['chunk_tokens']:,}"
        spread = f"{min(r['seconds_all']):.1f}-{max(r['seconds_all']):.1f}"
        print(f"| {r['variant']} | {chunk} | {r['extra_gb']:.2f} GB | {r['seconds']:.1f} | {spread} |")


if __name__ == "__main__":
    main()
