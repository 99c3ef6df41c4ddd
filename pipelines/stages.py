"""The run's stages, each a frozen, picklable config that knows nothing of engines.

Each implements ``pipelines.contracts.Stage``: ``stage.setup(threads)`` runs once per worker (it
loads the tokenizer, or memory-maps the row plan) and returns the stage's call: ``call(items,
report=None)`` does every item, leaves its result in a marker file (``marker``: the driver reads
the markers, so no engine carries results back) and returns the next stage's items. A stage
declares what it needs: ``gather = True`` makes it one call on every output of the stage before
(a barrier); ``threaded = True`` says its call keeps several threads busy (the encoder and zstd
release the GIL), so an engine gives it the worker's cores, and 1 thread otherwise. An engine
only decides where and how often ``setup`` and the call run; every name, marker and byte comes
from here and from ``pipelines/steps``.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipelines.infra.atomic import sweep_scratch
from pipelines.faults import crash_point
from pipelines.markers import SHARD, UNIT, done_among, read_marker, write_marker
from pipelines.run_plan import RunPlan
from pipelines.infra.shard_format import shard_name, write_shard_batches
from pipelines.steps.read import Reader
from pipelines.steps.tokenize import Tokenize, set_worker_threads
from pipelines.infra.hashing import sha256_file
from pipelines.steps.write import build_shard
from pipelines.unit_stream import tokenize_units

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


def worker_setup(plan: RunPlan) -> None:
    """What every stage's ``setup`` does first, on whatever worker runs it: the run's
    ``storage:`` settings (timeouts, retries) for its requests to ``s3://`` and ``gs://``; and,
    for a run on a store (its files are written on local scratch, then uploaded), the removal
    of scratch files that killed writers left on this machine."""
    from dataclasses import asdict

    from pipelines.infra.storage import configure

    configure(**asdict(plan.cfg.storage))
    if plan.out_location.uploads_whole:
        sweep_scratch()


@dataclass(frozen=True)
class TokenizeUnits:
    """Unit index -> the unit's spill files and marker: read, tokenize and spill the whole unit
    (``unit_stream``). Units given together stream back to back on ``threads`` encoders."""

    plan: RunPlan
    name, gather, threaded, marker = "tokenize", False, True, UNIT

    def work_size(self, items) -> tuple[int, str]:
        """For a progress bar (and the Beam DirectRunner's deal): the input bytes of these units
        (unit ``i`` is ``plan.units[i]``)."""
        units = self.plan.units
        return sum(units[i].bytes for i in items), "B"

    def done_size(self, items, names) -> int:
        """For a progress bar polled while an engine runs: the input bytes of these units whose
        marker is there (``names(dir, pattern)``: its file names that match, from one listing
        per poll)."""
        units = self.plan.units
        return sum(units[i].bytes for i in done_among(self.plan.work, self.marker, items, names))

    def setup(self, threads: int):
        worker_setup(self.plan)
        cfg = self.plan.cfg
        tokenize = worker_tokenizer(cfg.tokenizer, threads)
        reader = Reader(cfg.input, cfg.tokenizer.batch_bytes)
        units = {u.index: u for u in self.plan.units}

        def call(items, report=None) -> list:
            # in input order: the pieces of a cut file follow each other, and each goes on
            # reading where the one before stopped (``read_piece``), not from its file's start
            tokenize_units(self.plan.work, tokenize, [units[i] for i in sorted(items)], reader,
                           threads, report)
            return []
        return call


def write_shard_range(plan: RunPlan, rows, docs, store, k: int, start: int, end: int) -> dict:
    """Write shard ``k`` unless its marker shows an identical file is already there. The marker
    (and so the manifest's shard entry) records ``batch_rows``, the rows of each record batch:
    a streaming reader starts from them without opening a shard (``training.streaming``)."""
    path = plan.out / shard_name(k)
    entry = read_marker(plan.work, SHARD, k) if path.is_file() else None
    if entry is not None:
        # on a store a shard is complete or absent, and its marker follows it: the size says
        # it is this one (hashing it would download it)
        same = (sha256_file(path) == entry["sha256"] if plan.out_location.cheap_reads
                else path.stat().st_size == entry["bytes"])
        if entry["rows"] == end - start and same:
            return entry
    step = batch_rows(plan.cfg.pack.seq_len)

    def batches():
        for a in range(start, end, step):
            yield build_shard(rows, a, min(a + step, end), docs, store)
        crash_point("shard_tmp", k)

    size, digest, per_batch = write_shard_batches(batches(), path, plan.cfg.output.compression)
    entry = {"file": path.name, "rows": end - start,
             "tokens": int(rows.seg_len[rows.row_offsets[start] : rows.row_offsets[end]].sum()),
             "bytes": size, "sha256": digest, "batch_rows": per_batch}
    write_marker(plan.work, SHARD, k, entry)
    crash_point("shard", k)
    return entry


def batch_rows(seq_len: int) -> int:
    """Rows per Arrow record batch inside a shard: about 1M tokens, fixed by seq_len alone."""
    return max(1, (1 << 20) // seq_len)
