"""The Beam engine: the same steps as the local engine, as composite PTransforms.

    Create(units) | ReadDocuments | TokenizeBatches | SpillUnits    -> unit markers (work dir)
                  | PackRows   (one worker: split + pack on document lengths, plan saved)
                  | WriteShards (shards in parallel: tmp name, then rename to shard-K.arrow)
                  | Finalize   (rejects, stats, report, manifest last)

Each DoFn wraps one step (``Reader``, ``Tokenize``, ``UnitSpill``, ``plan``, ``write_shard_job``,
``finalize``); ``TokenizeFn.setup`` loads the tokenizer once per worker. ``part`` numbers carry
input order through the shuffles, so the bytes never depend on bundles or workers. A retried
bundle rewrites the same fixed file names from temporaries, so it leaves no duplicate and no
partial file. The work and output directories must be visible to every worker (a shared file
system); with the DirectRunner they are local.

Runners: ``DirectRunner`` (default) runs Beam's portable FnApiRunner directly, in
``beam.running_mode`` (multi_processing) with ``beam.num_workers`` processes. Beam's own
DirectRunner first tries the PrismRunner, which downloads a binary; fewtrunc skips that, and an
explicit ``--runner PrismRunner`` without a local binary is refused with a clear message.
Command-line flags fewtrunc does not know (``--project``, ``--region``, ``--temp_location``,
``--setup_file`` ...) go to ``PipelineOptions``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path


from pipelines.engines import common
from pipelines.engines.beam_plan import PARTS
from pipelines.errors import ConfigError, FatalError

_DIRECT = {"", "directrunner", "direct", "switchingdirectrunner"}
_PRISM = {"prismrunner", "prism"}


# --- options and runner ---------------------------------------------------------------------


def pipeline_options(bcfg, engine_args=()):
    """``PipelineOptions`` from the ``beam:`` section, then ``beam.options``, then CLI flags."""
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    flags = [f"--runner={bcfg.runner}", *bcfg.options, *engine_args]
    runner = (PipelineOptions(flags).view_as(StandardOptions).runner or "").lower()
    if runner in _DIRECT:
        flags = [f"--direct_num_workers={bcfg.num_workers}",
                 f"--direct_running_mode={bcfg.running_mode}",
                 "--default_sdk_harness_log_level=WARNING", *flags]
    return PipelineOptions(flags)


def prism_binary(options) -> str | None:
    """A local Prism binary: ``--prism_location`` when it is a file, else Beam's cache."""
    from apache_beam.options.pipeline_options import PrismRunnerOptions

    location = options.view_as(PrismRunnerOptions).prism_location
    if location:
        return location if os.path.isfile(location) else None
    cache = Path.home() / ".apache_beam" / "cache" / "prism" / "bin"
    found = sorted(p for p in cache.glob("*") if p.is_file() and not p.name.endswith(".zip"))
    return str(found[0]) if found else None


def make_runner(options):
    """The runner object; never one that downloads Prism behind the user's back."""
    from apache_beam.options.pipeline_options import StandardOptions

    name = (options.view_as(StandardOptions).runner or "").lower()
    if name in _DIRECT:
        # What DirectRunner falls back to after Prism, minus the download attempt.
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        return FnApiRunner()
    if name in _PRISM:
        if prism_binary(options) is None:
            raise ConfigError(
                "the PrismRunner needs its binary, which Beam downloads from GitHub; none is "
                "available here (offline?). Use --runner DirectRunner (the default), or pass "
                "--prism_location=/path/to/prism for a binary on disk.")
    return None  # by name, through PipelineOptions (DataflowRunner, FlinkRunner, Prism, ...)


# --- transforms -----------------------------------------------------------------------------


def build(p, ctx, units: list[int], t0: float):
    """The whole job on pipeline ``p``; ``ctx`` is a ``common.RunContext`` without tokenizer."""
    import apache_beam as beam

    from pipelines.engines import beam_stages as s  # imports Beam: only when a job runs

    cfg = ctx.cfg
    units_in = p | "Units" >> beam.Create(units)
    if common.spread_batches(cfg.beam.rebalance, len(units), cfg.beam.num_workers):
        markers = (
            units_in
            | "ReadDocuments" >> s.ReadDocuments(cfg.input, cfg.tokenizer.batch_bytes, ctx.units)
            | "TokenizeBatches" >> s.TokenizeBatches(cfg.tokenizer, str(ctx.work / PARTS))
            | "SpillUnits" >> s.SpillUnits(str(ctx.work), str(ctx.work / PARTS))
        )
    else:
        markers = units_in | "StreamUnits" >> s.StreamUnits(ctx.work, cfg, ctx.units)
    shards = (
        markers
        | "AllUnitsDone" >> beam.combiners.Count.Globally()
        | "PackRows" >> beam.ParDo(s.PackFn(ctx))
        | "WriteShards" >> s.WriteShards(ctx)
    )
    return (
        shards
        | "AllShards" >> beam.combiners.ToList()
        | "Finalize" >> beam.Map(s.finalize_run, ctx, t0)
    )


def run(cfg, progress: bool = False, engine_args=(), check: str = "size") -> dict:
    """Run (or resume, or recognize as finished) ``cfg`` with Beam; the local engine's contract."""
    t0 = time.time()
    options = pipeline_options(cfg.beam, engine_args)  # bad flags fail before any work
    runner = make_runner(options)
    ctx, finished = common.prepare(cfg, check)
    if finished is not None:
        return {"status": "already complete", "manifest": finished, "out": str(ctx.out)}
    import apache_beam as beam

    light = dataclasses.replace(ctx, tokenize=None)  # workers load their own tokenizer
    todo = [u.index for u in common.pending_units(ctx)]
    parts = ctx.work / PARTS
    shutil.rmtree(parts, ignore_errors=True)  # parts of a killed run are redone
    parts.mkdir(parents=True)
    p = beam.Pipeline(runner=runner, options=options)
    build(p, light, todo, t0)
    result = p.run()
    state = result.wait_until_finish()
    if str(state).split(".")[-1] not in ("DONE", "UNKNOWN"):
        raise FatalError(f"Beam pipeline ended {state}")
    manifest_path = ctx.out / "manifest.json"
    if not manifest_path.is_file():
        return {"status": f"submitted ({state})", "manifest": None, "out": str(ctx.out)}
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    timings = {"total_s": time.time() - t0}
    return {"status": "complete", "manifest": manifest, "out": str(ctx.out), "timings": timings}
