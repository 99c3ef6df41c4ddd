"""Shared helpers of the training experiments: data, shard writing, one training arm, reporting.

Data sources (no downloads):
  * ``stdlib_documents``: real text - every top-level function and class of CPython's standard
    library is one document (lengths from a few tokens to thousands), tokenized with the default
    GPT-2 tokenizer; training reduces the vocabulary with ``data.vocab_limit`` (the most frequent
    ids, the rest mapped to one UNK id) so that a small model learns on 2 CPU cores.
  * ``MarkovSource``: synthetic text with a known answer - a random first-order Markov chain in
    which some states have one near-certain successor and the others a uniform choice among
    ``branching`` successors (clean targets that are *high-entropy*, not deterministic).
Shards are written with ``packing`` and ``write_shard``, i.e. the format the pipeline writes.
"""
from __future__ import annotations

import ast
import json
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from packing import pack_token_lists  # noqa: E402
from pipelines.infra.configio import load_config  # noqa: E402
from pipelines.infra.shard_format import SCHEMA, shard_name, write_shard  # noqa: E402
from training.config import TrainRunConfig  # noqa: E402
from training.trainer import Trainer  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def stdlib_documents(heldout_every: int = 10) -> tuple[list[str], list[str]]:
    """Top-level functions/classes of the stdlib's modules; every Nth module is held out."""
    train, heldout = [], []
    root = Path(sysconfig.get_paths()["stdlib"])
    for i, path in enumerate(sorted(root.glob("*.py"))):
        src = path.read_text(encoding="utf-8", errors="replace")
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue
        blocks = [ast.get_source_segment(src, n) for n in tree.body
                  if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        (heldout if i % heldout_every == 0 else train).extend(b for b in blocks if b)
    return train, heldout


def tokenize(docs: list[str]) -> list[np.ndarray]:
    from pipelines.infra.tokenizer import load_tokenizer

    tok = load_tokenizer(None)
    eos = tok.token_to_id("<|endoftext|>")
    return [np.asarray(e.ids + [eos], dtype=np.int64) for e in tok.encode_batch(docs)]


def bfd_rows(docs: list[np.ndarray], seq_len: int) -> dict:
    """Best-fit packing: split only documents longer than seq_len, pack the chunks with BFD."""
    packed = pack_token_lists(docs, seq_len)
    cuts = packed.seg_offsets[1:-1]
    return {
        "input_ids": np.split(packed.tokens, packed.token_offsets[1:-1]),
        "doc_lens": np.split(packed.seg_len, cuts),
        "doc_ids": np.split(packed.seg_doc, cuts),
        "chunk_index": np.split(packed.seg_chunk, cuts),
    }


def concat_rows(docs: list[np.ndarray], seq_len: int, masked: bool) -> dict:
    """Concatenate everything and cut every seq_len tokens (the usual baseline).

    masked=True keeps the document boundaries (attention masked per piece); masked=False makes
    each row one segment, so attention and labels run across documents.
    """
    ids = np.concatenate(docs)
    owner = np.repeat(np.arange(len(docs)), [d.size for d in docs])
    starts = np.concatenate([[0], np.cumsum([d.size for d in docs])])
    rows = {k: [] for k in SCHEMA.names}
    for a in range(0, ids.size, seq_len):
        own = owner[a:a + seq_len]
        cut = np.flatnonzero(np.diff(own)) + 1
        bounds = np.concatenate([[0], cut, [own.size]])
        lens, segs = np.diff(bounds), own[bounds[:-1]]
        rows["input_ids"].append(ids[a:a + seq_len])
        if masked:
            rows["doc_lens"].append(lens)
            rows["doc_ids"].append(segs)
            rows["chunk_index"].append((a + bounds[:-1] > starts[segs]).astype(np.int64))
        else:
            rows["doc_lens"].append(np.array([own.size]))
            rows["doc_ids"].append(segs[:1])
            rows["chunk_index"].append(np.array([int(a > starts[segs[0]])]))
    return rows


def truncated_documents(rows: dict, n_docs: int) -> int:
    """Documents that appear as more than one piece (cut by a sequence boundary); needs rows
    that carry document boundaries (BFD, or concat with masked=True)."""
    return int(np.sum(np.bincount(np.concatenate(rows["doc_ids"]), minlength=n_docs) > 1))


def write_rows(rows: dict, directory: Path, n_shards: int = 2) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("shard-*.arrow"):
        old.unlink()
    table = pa.table({k: pa.array([np.asarray(v).tolist() for v in rows[k]], type=SCHEMA.field(k).type)
                      for k in SCHEMA.names}, schema=SCHEMA)
    bounds = np.linspace(0, table.num_rows, n_shards + 1).astype(int)
    for s in range(n_shards):
        write_shard(table.slice(bounds[s], bounds[s + 1] - bounds[s]), directory / shard_name(s), "none")
    return directory


class MarkovSource:
    """A random Markov chain over ``vocab`` tokens: ``deterministic_share`` of the states have one
    successor with probability ``peak``; the rest pick uniformly among ``branching`` successors."""

    def __init__(self, vocab: int = 64, deterministic_share: float = 0.6, branching: int = 8,
                 peak: float = 0.97, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.vocab = vocab
        self.P = np.zeros((vocab, vocab))
        for s in range(vocab):
            if rng.random() < deterministic_share:
                self.P[s] = (1 - peak) / (vocab - 1)
                self.P[s, rng.integers(vocab)] = peak  # peak=1.0: an exact successor
            else:
                self.P[s, rng.choice(vocab, branching, replace=False)] = 1.0 / branching
        self.cdf = np.cumsum(self.P, axis=1)

    def sample(self, n: int, length: int, rng: np.random.Generator) -> np.ndarray:
        out = np.zeros((n, length), dtype=np.int64)
        out[:, 0] = rng.integers(self.vocab, size=n)
        for t in range(1, length):
            u = rng.random(n)[:, None]
            out[:, t] = np.minimum((u > self.cdf[out[:, t - 1]]).sum(axis=1), self.vocab - 1)
        return out

    def true_loss(self, seqs: np.ndarray) -> float:
        """Cross-entropy of the true chain on ``seqs`` (the floor any model can reach)."""
        p = self.P[seqs[:, :-1], seqs[:, 1:]]
        return float(-np.log(p).mean())


def one_doc_rows(seqs: np.ndarray, id_base: int = 0) -> dict:
    n = len(seqs)
    return {"input_ids": list(seqs), "doc_lens": [np.array([seqs.shape[1]])] * n,
            "doc_ids": [np.array([id_base + i]) for i in range(n)], "chunk_index": [np.array([0])] * n}


def train_arm(overrides: list[str], step_callback=None, on_build=None) -> tuple[Trainer, dict]:
    """Train one arm in-process (1 torch thread: tiny models gain nothing from more).

    ``on_build(trainer)`` runs before training (e.g. to let a step callback see the trainer).
    """
    cfg = load_config(TrainRunConfig, None, ["train.threads=1", "output.plot=false", *overrides])
    trainer = Trainer(cfg, step_callback=step_callback)
    if on_build is not None:
        on_build(trainer)
    t0 = time.perf_counter()
    result = trainer.fit()
    result["wall_s"] = time.perf_counter() - t0
    return trainer, result


def markdown_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """columns: (key, header, format)."""
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(format(r[k], f) if f else str(r[k]) for k, _, f in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return path


def curves(trainer_dir: Path) -> list[tuple[int, float]]:
    with open(Path(trainer_dir) / "metrics.jsonl") as fh:
        return [(r["step"], r["loss"]) for r in map(json.loads, fh)]
