"""What the trainer checks and learns about its data before the first step, with every rank doing
a part and all of them agreeing on the outcome.

1. Every shard is checked (``ShardDataset``'s checks, ``training.shard_checks``): rank r of N
   reads shards r, r + N, ... only, and the ranks share what they found (longest row, largest
   token id, the rows of every record batch, and for pruning the documents of every row). A
   damaged shard is one line naming it, on whichever rank read it.
2. The model's configuration is checked against that (``training.preflight``); with
   ``data.vocab_limit`` the token frequencies are counted the same way, 1/N per rank, and summed.
3. The streaming index is opened from the manifest (a shard missing, or a manifest that disagrees
   with the shards, is one line) and checked against the record batches the ranks counted; the
   ranks exchange its fingerprint and refuse to start when they see different shard sets.

Every step ends in ``Dist.agree``/``gather``, so a failure on any rank stops all of them with one
line, before any training.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from pipelines.infra.errors import ConfigError
from pipelines.infra.storage.paths import as_path
from training.data import ShardDataset, vocab_map_from_counts
from training.preflight import check_ids_fit, check_seq_len, check_vocab
from training.shard_checks import ShardError


@dataclass(frozen=True)
class ShardSummary:
    """What ``training.preflight`` checks a model against (the fields ``ShardDataset`` has)."""

    directory: object
    longest_row: int
    max_token_id: int


def tokenizer_vocab_size(path: str) -> int:
    from pipelines.infra.tokenizer import load_tokenizer

    return load_tokenizer(path or None).get_vocab_size()


def _scan_part(directory: str, rank: int, world: int, docs: bool):
    part = ShardDataset(directory, part=(rank, world), docs=docs)
    out = {"numbers": part.shard_numbers, "batch_rows": part.batch_rows,
           "longest": part.longest_row, "max_id": part.max_token_id, "docs": {}}
    if docs:
        per_row, ids = part.doc_layout
        rows = np.cumsum([0] + [int(b.sum()) for b in part.batch_rows])
        segs = np.concatenate([[0], np.cumsum(per_row)])
        for k, s in enumerate(part.shard_numbers):
            out["docs"][s] = (per_row[rows[k]:rows[k + 1]], ids[segs[rows[k]]:segs[rows[k + 1]]])
    return part, out


def _check_index(index, mine: dict) -> None:
    """The record batches this rank counted in its shards are the ones the index holds."""
    for s, counted in zip(mine["numbers"], mine["batch_rows"]):
        shard = index.shards[s]
        if not np.array_equal(shard.batch_rows, counted):
            raise ShardError(shard.path, f"holds record batches of {counted.tolist()[:8]} rows, the manifest "
                                         f"records {shard.batch_rows.tolist()[:8]}: the shards are not the ones "
                                         "of this run; rebuild them or the manifest")


def open_data(cfg, dist, token_map=None) -> SimpleNamespace:
    """``index`` (a ``ShardIndex``), ``summary``, ``token_map``, ``vocab_size`` and ``docs``
    (``(segments of each row, doc id of each segment)`` over all rows when pruning is on)."""
    from training.streaming import ShardIndex

    need_docs = cfg.pruning.enabled
    held = {}

    def scan():
        held["part"], out = _scan_part(cfg.data.dir, dist.rank, dist.world, need_docs)
        return out

    parts = dist.gather(scan)
    mine = parts[dist.rank]
    summary = ShardSummary(as_path(cfg.data.dir), max(p["longest"] for p in parts),
                           max(p["max_id"] for p in parts))

    def sizes():
        check_seq_len(summary, cfg.model.seq_len)
        if token_map is None and cfg.data.vocab_limit:
            n_ids = tokenizer_vocab_size(cfg.data.tokenizer)
            check_ids_fit(summary, n_ids, f"data.tokenizer ({cfg.data.tokenizer or 'GPT-2'})")
            return n_ids
        return 0

    n_ids = dist.agree(sizes)
    if n_ids:
        counts = dist.gather(lambda: held["part"].iter_token_counts(n_ids))
        token_map = vocab_map_from_counts(np.sum(counts, axis=0), cfg.data.vocab_limit)
    held.clear()

    def vocab():
        m = cfg.model
        if m.vocab_size:
            size, what = m.vocab_size, f"model.vocab_size={m.vocab_size}"
        elif cfg.data.vocab_limit:
            size, what = cfg.data.vocab_limit, f"data.vocab_limit={cfg.data.vocab_limit}"
        else:
            size = tokenizer_vocab_size(cfg.data.tokenizer)
            what = f"{size} ids of data.tokenizer ({cfg.data.tokenizer or 'GPT-2'})"
        check_vocab(summary, size, token_map, what)
        return size

    vocab_size = dist.agree(vocab)

    def index():
        ix = ShardIndex.open(cfg.data.dir)
        _check_index(ix, mine)
        return ix

    ix = dist.agree(index)
    prints = dist.objects(ix.fingerprint)
    if len(set(prints)) > 1:
        other = next(r for r, p in enumerate(prints) if p != prints[0])
        dist.fail_all(ConfigError(f"the ranks see different shard sets in data.dir={cfg.data.dir!r}: rank {other}'s "
                                  f"(fingerprint {prints[other][:12]}) differs from rank 0's ({prints[0][:12]}); "
                                  "every rank must read the same shards"))
    docs = None
    if need_docs:
        layout = {s: d for p in parts for s, d in p["docs"].items()}
        order = sorted(layout)
        docs = (np.concatenate([layout[s][0] for s in order]), np.concatenate([layout[s][1] for s in order]))
    return SimpleNamespace(index=ix, summary=summary, token_map=token_map, vocab_size=vocab_size, docs=docs)
