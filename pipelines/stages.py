"""The run's two parallel stages, each a frozen, picklable config that knows nothing of engines.

``stage.setup(threads)`` runs once per worker (it loads the tokenizer, or memory-maps the row
plan) and returns the stage's call on work items: ``call(items, report=None)`` does every item
and leaves its result in a marker file (the driver reads the markers, so no engine has to carry
results back). An engine only decides where and how often ``setup`` and the call run; every name,
marker and byte comes from here and from ``pipelines/steps``.
"""
from __future__ import annotations

import dataclasses
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.atomic import atomic_path, write_json
from pipelines.faults import crash_point
from pipelines.run_plan import RunPlan
from pipelines.shard_format import shard_name, write_shard_batches
from pipelines.steps import spill
from pipelines.steps.read import Reader
from pipelines.steps.tokenize import Tokenize, set_worker_threads
from pipelines.steps.write import build_shard, sha256_file
from pipelines.unit_stream import tokenize_units

PLAN = "plan"  # the row plan's arrays in the work directory, for the shard writers

_TOKENIZERS: dict = {}  # tokenizer config -> this process's Tokenize (one per worker)


def keep_tokenizer(tokenize: Tokenize) -> None:
    """Let stages set up in this process use ``tokenize`` (the driver's, already loaded)."""
    _TOKENIZERS[tokenize.cfg] = tokenize


def worker_tokenizer(cfg, threads: int) -> Tokenize:
    """This process's tokenizer; a fresh worker sizes the tokenizer's pool to ``threads`` first."""
    if cfg not in _TOKENIZERS:
        set_worker_threads(threads)
        _TOKENIZERS[cfg] = Tokenize(cfg)
    return _TOKENIZERS[cfg]


@dataclass(frozen=True)
class TokenizeUnits:
    """Unit index -> the unit's spill files and marker: read, tokenize and spill the whole unit
    (``unit_stream``). Units given together stream back to back on ``threads`` encoders."""

    plan: RunPlan
    name = "tokenize"

    def setup(self, threads: int):
        cfg = self.plan.cfg
        tokenize = worker_tokenizer(cfg.tokenizer, threads)
        reader = Reader(cfg.input, cfg.tokenizer.batch_bytes)
        units = {u.index: u for u in self.plan.units}

        def call(items, report=None):
            tokenize_units(self.plan.work, tokenize, [units[i] for i in items], reader,
                           threads, report)
        return call


@dataclass(frozen=True)
class WriteShards:
    """(k, start, end) -> ``shard-K.arrow`` and its marker, from the saved row plan (fixed names,
    atomic: a retried item rewrites the same bytes); ``threads`` shards at once (zstd and the
    gather release the GIL)."""

    plan: RunPlan
    name = "write"

    def setup(self, threads: int):
        docs, rows = load_row_plan(self.plan.work)
        store = spill.SpillStore(self.plan.work, len(self.plan.units))

        def call(items, report=None):
            with ThreadPoolExecutor(max(1, threads)) as pool:
                for _ in pool.map(lambda j: write_shard(self.plan, rows, docs, store, *j), items):
                    if report is not None:
                        report(1)
        return call


def write_shard(plan: RunPlan, rows, docs, store, k: int, start: int, end: int) -> dict:
    """Write shard ``k`` unless its marker shows an identical file is already there."""
    path = plan.out / shard_name(k)
    marker = shard_marker(plan.work, k)
    if marker.is_file() and path.is_file():
        entry = json.loads(marker.read_text())
        if entry["rows"] == end - start and sha256_file(path) == entry["sha256"]:
            return entry
    step = batch_rows(plan.cfg.pack.seq_len)

    def batches():
        for a in range(start, end, step):
            yield build_shard(rows, a, min(a + step, end), docs, store)
        crash_point("shard_tmp", k)

    write_shard_batches(batches(), path, plan.cfg.output.compression)
    entry = {"file": path.name, "rows": end - start,
             "tokens": int(rows.seg_len[rows.row_offsets[start] : rows.row_offsets[end]].sum()),
             "bytes": path.stat().st_size, "sha256": sha256_file(path)}
    write_json(marker, entry)
    crash_point("shard", k)
    return entry


def shard_marker(work: Path, k: int) -> Path:
    return Path(work) / f"shard-{k:05d}.done.json"


def batch_rows(seq_len: int) -> int:
    """Rows per Arrow record batch inside a shard: about 1M tokens, fixed by seq_len alone."""
    return max(1, (1 << 20) // seq_len)


def save_row_plan(work: Path, docs, rows) -> None:
    """The plan's arrays as ``.npy`` (atomic), for every shard writer to memory-map."""
    d = Path(work) / PLAN
    d.mkdir(parents=True, exist_ok=True)
    for prefix, obj in (("docs", docs), ("rows", rows)):
        for f in dataclasses.fields(obj):
            with atomic_path(d / f"{prefix}.{f.name}.npy", suffix=".npy") as tmp:
                np.save(tmp, getattr(obj, f.name))


def load_row_plan(work: Path):
    from pipelines.steps.pack import RowPlan
    from pipelines.steps.write import DocTable

    d = Path(work) / PLAN

    def load(cls, prefix):
        return cls(**{f.name: np.load(d / f"{prefix}.{f.name}.npy", mmap_mode="r")
                      for f in dataclasses.fields(cls)})

    return load(DocTable, "docs"), load(RowPlan, "rows")
