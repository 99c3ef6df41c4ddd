"""Ray workers' side of the Ray engine: the callables Ray Data runs, each wrapping one step.

Imported only after ``ray_engine`` has prepared Ray's environment (importing Ray fixes some of
its settings), never at ``fewtrunc`` start-up.
"""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
from ray.data import Datasink

from pipelines.engines import common
from pipelines.engines.arrow_batches import read_part, text_batches, text_table, write_part
from pipelines.engines.unit_stream import tokenize_units, usable_cores
from pipelines.steps import spill
from pipelines.steps.read import Reader
from pipelines.steps.tokenize import Tokenize, set_worker_threads

PARTS = "ray-parts"
_PART_RE = re.compile(r"unit-(\d+)\.part-(\d+)\.arrow$")


class ReadActor:
    """Callable class for ``map_batches``: each unit of a block -> its text batches, numbered in
    input order. An actor pool, not tasks: Ray started a fresh worker process (importing Ray Data
    and pyarrow, ~1.3 s of CPU) for most read tasks, one per unit, on the tokenizers' cores."""

    def __init__(self, input_cfg, batch_bytes: int, units: dict):
        self.reader, self.units = Reader(input_cfg, batch_bytes), units

    def __call__(self, table: pa.Table):
        for u in table.column("unit").to_pylist():
            for part, batch in enumerate(self.reader(self.units[u])):
                yield text_table(u, part, batch)


class StreamUnitsActor:
    """Callable class for ``map_batches``: each unit of a block is read, tokenized and spilled
    whole by this actor (``unit_stream.tokenize_units``, as the local engine does), so no text
    batch or token part goes through the object store and nothing is committed afterwards. The
    spill files have fixed names and private temporaries: a retried call rewrites the same bytes.
    """

    def __init__(self, work: str, input_cfg, tokenizer_cfg, units: dict, threads: int = 1):
        set_worker_threads(threads)
        self.work, self.units, self.threads = Path(work), units, threads
        self.tokenize = Tokenize(tokenizer_cfg)
        self.reader = Reader(input_cfg, tokenizer_cfg.batch_bytes)

    def __call__(self, table: pa.Table) -> pa.Table:
        units = [self.units[u] for u in table.column("unit").to_pylist()]
        markers = tokenize_units(self.work, self.tokenize, units, self.reader, self.threads)
        return pa.table({"unit": pa.array([m["unit"] for m in markers], pa.int32()),
                         "docs": pa.array([m["accepted"] for m in markers], pa.int64())})


PART_SCHEMA = pa.schema([pa.field("unit", pa.int32()), pa.field("part", pa.int32()),
                         pa.field("docs", pa.int64())])


class TokenizeActor:
    """Callable class for ``map_batches``: the tokenizer is loaded once per actor.

    Each token batch is written by the actor itself to ``unit-U.part-P.arrow`` (fixed names, so a
    retried call or a restarted actor overwrites); only a small (unit, part, docs) row goes back
    to Ray Data. Token ids never travel through the object store, and no write task (one more
    worker process competing for the cores) is needed per block.
    """

    def __init__(self, tokenizer_cfg, threads: int = 1, parts_dir: str = ""):
        set_worker_threads(threads)  # one tokenizer thread per reserved CPU
        self.tokenize = Tokenize(tokenizer_cfg)
        self.parts_dir = Path(parts_dir)

    def __call__(self, table: pa.Table) -> pa.Table:
        units, parts, docs = [], [], []
        for u, p, b in text_batches(table):
            tb = self.tokenize(b)
            write_part(self.parts_dir, u, p, tb)
            units.append(u)
            parts.append(p)
            docs.append(int(tb.doc_ids.size))
        return pa.Table.from_arrays(
            [pa.array(units, pa.int32()), pa.array(parts, pa.int32()), pa.array(docs, pa.int64())],
            schema=PART_SCHEMA)


def commit_unit(work: str, parts_dir: str, unit: int) -> dict:
    """The unit's parts, in order, through the local engine's ``UnitSpill``: same files, marker."""
    paths = []
    for path in Path(parts_dir).glob(f"unit-{unit:05d}.part-*.arrow"):
        m = _PART_RE.search(path.name)
        if m:
            paths.append((int(m.group(2)), path))
    out = spill.UnitSpill(Path(work), unit)
    for part, _ in sorted(paths):
        out.add(read_part(parts_dir, unit, part))
    return out.finish()


def commit_units(work: str, parts_dir: str, units: list[int]) -> list[dict]:
    """``commit_unit`` for several units in one task: a task per unit would start a worker
    process per unit (0-CPU tasks all at once), each importing Ray and pyarrow."""
    return [commit_unit(work, parts_dir, u) for u in units]


class ShardSink(Datasink):
    """Shard ranges -> shard files via ``common.write_shard_job`` (fixed names, atomic), on a
    thread per core of the node, as the local engine writes them."""

    def __init__(self, ctx, rows_ref, docs_ref):
        self.ctx, self.rows_ref, self.docs_ref = ctx, rows_ref, docs_ref
        self.entries: list = []

    def write(self, blocks, ctx) -> list:
        import ray

        rows, docs = ray.get(self.rows_ref), ray.get(self.docs_ref)
        store = spill.SpillStore(self.ctx.work, len(self.ctx.units))
        jobs = []
        for block in blocks:
            block = pa.table(block) if not isinstance(block, pa.Table) else block
            jobs += zip(*(block.column(c).to_pylist() for c in ("shard", "start", "end")))
        with ThreadPoolExecutor(min(usable_cores(), 8)) as pool:
            entries = pool.map(lambda j: common.write_shard_job(self.ctx, rows, docs, store, *j),
                               jobs)
            return [(k, e) for (k, _, _), e in zip(jobs, entries)]

    def on_write_complete(self, write_result) -> None:
        self.entries = sorted((e for r in write_result.write_returns for e in r), key=lambda e: e[0])
