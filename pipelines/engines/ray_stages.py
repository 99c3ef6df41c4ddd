"""Ray workers' side of the Ray engine: the callables Ray Data runs, each wrapping one step.

Imported only after ``ray_engine`` has prepared Ray's environment (importing Ray fixes some of
its settings), never at ``fewtrunc`` start-up.
"""
from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
from ray.data import Datasink

from pipelines.engines import common
from pipelines.engines.arrow_batches import TOKEN_SCHEMA, text_batches, text_table, token_batches
from pipelines.engines.arrow_batches import token_table
from pipelines.steps import spill
from pipelines.steps.read import Reader
from pipelines.steps.tokenize import Tokenize

PARTS = "ray-parts"
_PART_RE = re.compile(r"unit-(\d+)\.part-(\d+)\.arrow$")


def read_units(table: pa.Table, *, input_cfg, batch_bytes: int, units: dict):
    """Read task: each unit of ``table`` -> its text batches, numbered in input order."""
    reader = Reader(input_cfg, batch_bytes)
    for u in table.column("unit").to_pylist():
        for part, batch in enumerate(reader(units[u])):
            yield text_table(u, part, batch)


class TokenizeActor:
    """Callable class for ``map_batches``: the tokenizer is loaded once per actor."""

    def __init__(self, tokenizer_cfg, threads: int = 1):
        # The Rust tokenizer sizes its thread pool from this on first use: one per reserved CPU.
        os.environ["RAYON_NUM_THREADS"] = str(max(1, threads))
        self.tokenize = Tokenize(tokenizer_cfg)

    def __call__(self, table: pa.Table) -> pa.Table:
        out = [token_table(u, p, self.tokenize(b)) for u, p, b in text_batches(table)]
        return pa.concat_tables(out) if out else TOKEN_SCHEMA.empty_table()


def _atomic_ipc(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    with ipc.new_file(str(tmp), table.schema) as writer:
        writer.write_table(table)
    os.replace(tmp, path)


class PartSink(Datasink):
    """Each token batch to ``unit-U.part-P.arrow``: fixed names, so retries overwrite."""

    def __init__(self, parts_dir: str):
        self.parts_dir = parts_dir

    def write(self, blocks, ctx) -> int:
        n = 0
        for block in blocks:
            block = pa.table(block) if not isinstance(block, pa.Table) else block
            units = block.column("unit").to_pylist()
            parts = block.column("part").to_pylist()
            for i, (u, p) in enumerate(zip(units, parts)):
                _atomic_ipc(block.slice(i, 1), Path(self.parts_dir) / f"unit-{u:05d}.part-{p:06d}.arrow")
                n += 1
        return n


def commit_unit(work: str, parts_dir: str, unit: int) -> dict:
    """The unit's parts, in order, through the local engine's ``UnitSpill``: same files, marker."""
    paths = []
    for path in Path(parts_dir).glob(f"unit-{unit:05d}.part-*.arrow"):
        m = _PART_RE.search(path.name)
        if m:
            paths.append((int(m.group(2)), path))
    out = spill.UnitSpill(Path(work), unit)
    for _, path in sorted(paths):
        with pa.memory_map(str(path)) as source:
            table = ipc.open_file(source).read_all()
        for _, _, batch in token_batches(table):
            out.add(batch)
    return out.finish()


class ShardSink(Datasink):
    """Shard ranges -> shard files via ``common.write_shard_job`` (fixed names, atomic)."""

    def __init__(self, ctx, rows_ref, docs_ref):
        self.ctx, self.rows_ref, self.docs_ref = ctx, rows_ref, docs_ref
        self.entries: list = []

    def write(self, blocks, ctx) -> list:
        import ray

        rows, docs = ray.get(self.rows_ref), ray.get(self.docs_ref)
        store = spill.SpillStore(self.ctx.work, len(self.ctx.units))
        out = []
        try:
            for block in blocks:
                block = pa.table(block) if not isinstance(block, pa.Table) else block
                for k, a, b in zip(*(block.column(c).to_pylist() for c in ("shard", "start", "end"))):
                    out.append((k, common.write_shard_job(self.ctx, rows, docs, store, k, a, b)))
        finally:
            store.close()
        return out

    def on_write_complete(self, write_result) -> None:
        self.entries = sorted((e for r in write_result.write_returns for e in r), key=lambda e: e[0])
