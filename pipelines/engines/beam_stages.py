"""Beam workers' side of the Beam engine: composite PTransforms and DoFns, each wrapping one step.

Imported lazily by ``beam_engine`` (Beam is an optional extra); neither imports the other at
module level (what both need is in ``beam_plan``).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import apache_beam as beam

from pipelines.engines import beam_plan, common
from pipelines.engines.arrow_batches import read_part, write_part
from pipelines.errors import FatalError
from pipelines.steps import spill


class ReadFn(beam.DoFn):
    """unit index -> (unit, part, TextBatch) for each batch of the unit, in input order."""

    def __init__(self, input_cfg, batch_bytes: int, units):
        self.input_cfg, self.batch_bytes = input_cfg, batch_bytes
        self.units = {u.index: u for u in units}

    def setup(self):
        from pipelines.steps.read import Reader

        self.reader = Reader(self.input_cfg, self.batch_bytes)

    def process(self, unit: int):
        for part, batch in enumerate(self.reader(self.units[unit])):
            yield unit, part, batch


class ReadDocuments(beam.PTransform):
    """Unit indices -> text batches, spread over the workers again after reading, so that one
    large unit is tokenized in parallel. The second shuffle is a barrier (the FnApiRunner runs
    stage after stage: every unit is read before tokenizing starts), so this path is taken only
    when units are too few for the workers (``beam.rebalance``); else ``StreamUnits``.
    """

    def __init__(self, input_cfg, batch_bytes: int, units):
        super().__init__()
        self.fn = ReadFn(input_cfg, batch_bytes, units)

    def expand(self, units):
        return (units
                | "Spread" >> beam.Reshuffle()
                | "Read" >> beam.ParDo(self.fn)
                | "Rebalance" >> beam.Reshuffle())


class StreamUnitsFn(beam.DoFn):
    """unit index -> its completion marker: the worker reads, tokenizes and spills the whole
    unit (``unit_stream.tokenize_units``, as the local engine does). The spill files have fixed
    names and private temporaries, so a replayed bundle rewrites the same bytes."""

    def __init__(self, work: str, cfg, units):
        self.work, self.cfg = work, cfg
        self.units = {u.index: u for u in units}

    def setup(self):
        from pipelines.steps.read import Reader
        from pipelines.steps.tokenize import Tokenize, set_worker_threads

        set_worker_threads(1)  # the workers are the parallelism
        self.tokenize = Tokenize(self.cfg.tokenizer)
        self.reader = Reader(self.cfg.input, self.cfg.tokenizer.batch_bytes)

    def process(self, unit: int):
        from pipelines.engines.unit_stream import tokenize_units

        yield from tokenize_units(Path(self.work), self.tokenize, [self.units[unit]],
                                  self.reader, workers=1)


class StreamUnits(beam.PTransform):
    """Unit indices -> markers, each unit on one worker (no text or tokens cross workers)."""

    def __init__(self, work, cfg, units):
        super().__init__()
        self.fn = StreamUnitsFn(str(work), cfg, units)

    def expand(self, units):
        return units | "Spread" >> beam.Reshuffle() | "ReadTokenizeSpill" >> beam.ParDo(self.fn)


class TokenizeFn(beam.DoFn):
    """(unit, part, TextBatch) -> (unit, (part, docs)); the tokenizer loads in ``setup``.

    The token batch goes to the part file ``unit-U.part-P.arrow`` (fixed name, written to a
    temporary and renamed: a replayed bundle overwrites it); only (part, docs) travels through
    the shuffle, so token ids are neither pickled nor sent through the runner.
    """

    def __init__(self, tokenizer_cfg, parts_dir: str, threads: int = 1):
        self.tokenizer_cfg, self.parts_dir, self.threads = tokenizer_cfg, parts_dir, threads

    def setup(self):
        from pipelines.steps.tokenize import Tokenize, set_worker_threads

        set_worker_threads(self.threads)  # the workers are the parallelism
        self.tokenize = Tokenize(self.tokenizer_cfg)

    def process(self, element):
        unit, part, batch = element
        tokens = self.tokenize(batch)
        write_part(self.parts_dir, unit, part, tokens)
        yield unit, (part, int(tokens.doc_ids.size))


class TokenizeBatches(beam.PTransform):
    def __init__(self, tokenizer_cfg, parts_dir: str):
        super().__init__()
        self.fn = TokenizeFn(tokenizer_cfg, parts_dir)

    def expand(self, batches):
        return batches | "Tokenize" >> beam.ParDo(self.fn)


class CommitUnitFn(beam.DoFn):
    """(unit, [(part, docs)...]) -> the unit's spill files and marker from its part files, in
    part order (exactly the parts grouped here, never a directory listing)."""

    def __init__(self, work: str, parts_dir: str):
        self.work, self.parts_dir = work, parts_dir

    def process(self, element):
        unit, parts = element
        numbers = sorted({p for p, _ in parts})
        out = spill.UnitSpill(Path(self.work), unit)
        for p in numbers:
            out.add(read_part(self.parts_dir, unit, p))
        yield out.finish()  # parts stay: a retried bundle reads them again (PackFn drops them)


class SpillUnits(beam.PTransform):
    def __init__(self, work: str, parts_dir: str):
        super().__init__()
        self.work, self.parts_dir = work, parts_dir

    def expand(self, tokenized):
        return (tokenized
                | "GroupByUnit" >> beam.GroupByKey()
                | "Commit" >> beam.ParDo(CommitUnitFn(self.work, self.parts_dir)))


class PackFn(beam.DoFn):
    """After every unit: split + pack on lengths (one worker), save the plan, emit shard ranges."""

    def __init__(self, ctx):
        self.ctx = ctx

    def process(self, _units_done):
        shutil.rmtree(self.ctx.work / beam_plan.PARTS, ignore_errors=True)  # all committed
        docs, rows, _ = common.plan(self.ctx)
        beam_plan.save_plan(self.ctx.work, docs, rows)
        for k, (a, b) in enumerate(common.plan_shards_and_remove_strays(self.ctx, rows)):
            yield k, a, b


class WriteShardFn(beam.DoFn):
    """(k, start, end) -> (k, entry): ``write_shard_job`` writes to a temporary name, renames."""

    def __init__(self, ctx):
        self.ctx = ctx

    def process(self, element):
        k, a, b = element
        docs, rows = beam_plan.load_plan(self.ctx.work)
        store = spill.SpillStore(self.ctx.work, len(self.ctx.units))
        yield k, common.write_shard_job(self.ctx, rows, docs, store, k, a, b)


class WriteShards(beam.PTransform):
    def __init__(self, ctx):
        super().__init__()
        self.ctx = ctx

    def expand(self, ranges):
        return (ranges
                | "Spread" >> beam.Reshuffle()
                | "Write" >> beam.ParDo(WriteShardFn(self.ctx)))


def finalize_run(entries: list, ctx, t0: float) -> str:
    """Every shard written: rejects, stats, report, manifest (last); returns the manifest path."""
    entries = sorted(entries, key=lambda e: e[0])
    docs, rows = beam_plan.load_plan(ctx.work)
    if [k for k, _ in entries] != list(range(len(entries))) or (
        sum(e["rows"] for _, e in entries) != rows.n_rows
    ):
        raise FatalError(f"shards {[k for k, _ in entries]} do not cover the {rows.n_rows} rows")
    markers = beam_plan.unit_markers(ctx)
    common.finalize(ctx, docs, rows, markers, [e for _, e in entries],
                    {"total_s": time.time() - t0})
    return str(ctx.out / "manifest.json")
