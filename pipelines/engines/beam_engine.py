"""The Beam engine: the stages chained in one pipeline,

    Create(units) | Reshuffle | ParDo(StageDoFn(tokenize))
                  | ToList    | ParDo(StageDoFn(pack))      (a gather stage: one call, a barrier)
                  | Reshuffle | ParDo(StageDoFn(write))

(on the DirectRunner the units are dealt to its workers by size instead of reshuffled, and the
plan is read from a scratch file instead of a side input: ``beam_direct``)

``StageDoFn.setup`` sets the stage up once per DoFn instance (``beam.num_workers`` single-threaded
workers: the workers are the parallelism); each stage's outputs are the next one's items. One
pipeline, not one per stage: each costs the start of every worker process. Results stay in the
stages' markers, so nothing is collected: a replayed bundle rewrites the same fixed file names;
the progress bars poll them (``progress.MarkerProgress``) while the pipeline runs.
The inputs, ``output.dir`` and its ``_work/`` may be ``s3://`` or ``gs://`` URLs, read and
written by the same code on every worker (``pipelines.infra.storage``), so a Dataflow job needs no
shared file system; a local output directory must be visible to every worker. The DirectRunner's
workers inherit the driver's environment (credentials, ``AWS_ENDPOINT_URL``,
``STORAGE_EMULATOR_HOST``).

Runners: ``DirectRunner`` (default) runs Beam's portable FnApiRunner directly, in
``beam.running_mode`` (multi_processing) with ``beam.num_workers`` processes, started warm
while the driver plans (``beam.warm_workers``: ``beam_warm``). Beam's own
DirectRunner first tries the PrismRunner, which downloads a binary; fewtrunc skips that, and an
explicit ``--runner PrismRunner`` without a local binary is refused with a clear message.
Command-line flags fewtrunc does not know (``--project``, ``--region``, ``--temp_location``,
``--setup_file`` ...) go to ``PipelineOptions``.
"""
from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from pipelines.engines.base import EngineBase
from pipelines.infra.errors import ConfigError, FatalError, FewtruncError

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


class BeamEngine(EngineBase):
    """Imports Beam and parses its options on entry, while the driver plans the run
    (``start_early``: the import alone takes ~2 s); bad flags stop the run before it writes."""

    start_early = True

    def __init__(self, bcfg, engine_args=(), bars=None):
        self.bcfg, self.engine_args = bcfg, tuple(engine_args)
        self.bars = bars  # where the progress bars go (the terminal, past ``quiet_stderr``)
        self.options = self.runner = self.pool = self.scratch = None

    @classmethod
    def from_config(cls, cfg, engine_args=()):
        return cls(cfg.beam, engine_args)

    @classmethod
    @contextmanager
    def session(cls, cfg, engine_args=()):
        """Around the whole run: Beam's logging goes to a scratch log, the bars to the terminal
        (``quiet_stderr``)."""
        with quiet_stderr() as bars:
            yield cls(cfg.beam, engine_args, bars)

    def __enter__(self):
        from pipelines.engines import beam_direct
        from pipelines.infra.atomic import scratch_dir

        self.options = pipeline_options(self.bcfg, self.engine_args)
        self.runner = make_runner(self.options)
        if beam_direct.is_direct(self.runner):  # its workers are on this machine
            self.scratch = scratch_dir("beam")
            if self.bcfg.warm_workers:
                runner, self.pool = beam_direct.warm_runner(self.options, self.scratch)
                self.runner = runner or self.runner
        return self

    def __exit__(self, *exc) -> None:
        import shutil

        if self.pool is not None:
            self.pool.close()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def run_stages(self, stages: list, items: list, progress: bool) -> dict:
        import apache_beam as beam

        from pipelines.engines.beam_direct import deal, parcel_file, stage_weight, worker_count
        from pipelines.engines.beam_dofn import StageDoFn
        from pipelines.engines.beam_watch import run_watched
        from pipelines.engines.parcel import split
        from pipelines.progress import MarkerProgress

        direct = self.scratch is not None  # the DirectRunner: see ``beam_direct``
        dealt_first = direct and bool(stages) and not stages[0].gather
        p = beam.Pipeline(runner=self.runner, options=self.options)
        if dealt_first:  # a group of items per worker
            weights = [stage_weight(stages[0], item) for item in items]
            dealt = deal(items, weights, worker_count(self.options))
            pcoll = (p | "Items" >> beam.Create(dealt, reshuffle=False)
                     | "Deal" >> beam.GroupByKey() | "Dealt" >> beam.FlatMap(lambda kv: kv[1]))
        else:  # no reshuffle of its own: the first stage's ``Reshuffle`` spreads the items
            pcoll = p | "Items" >> beam.Create(items, reshuffle=False)
        plans = {}
        for i, stage in enumerate(stages):
            name = stage.name.capitalize()
            shell, parcel = split(stage)  # the plan goes once, as a side input or a file
            key, side, path = None if parcel is None else parcel.key, (), None
            if parcel is not None and direct:
                path = parcel_file(self.scratch, parcel)
            elif parcel is not None:
                if parcel.key not in plans:
                    plans[parcel.key] = p | f"Plan{len(plans)}" >> beam.Create(
                        [parcel.blob]).with_output_types(bytes)
                side = (beam.pvalue.AsSingleton(plans[parcel.key]),)
            if i == 0 and self.pool is not None:  # set up on the warm workers while Beam starts
                self.pool.ahead(shell, key, path)
            if stage.gather:
                pcoll = pcoll | f"Before{name}" >> beam.combiners.ToList()
            elif i > 0 or not dealt_first:
                pcoll = pcoll | f"Before{name}" >> beam.Reshuffle()
            pcoll = pcoll | name >> beam.ParDo(StageDoFn(shell, key, path), *side)
        with MarkerProgress(stages, items, progress, self.bars):  # bars from the markers
            state = run_watched(p)  # a worker process that dies ends it with one line
        if str(state).split(".")[-1] not in ("DONE", "UNKNOWN"):
            raise FatalError(f"Beam pipeline ended {state}")
        return {}


@contextmanager
def quiet_stderr():
    """Beam logs at INFO while its worker processes start (they inherit this process's stderr,
    and set the level before reading any option), dozens of lines a run. File descriptor 2 goes
    to a scratch log meanwhile; the progress bars are written to the terminal through a copy of
    it (yielded). fewtrunc's own messages come after, from the exception. A run that fails
    otherwise than with one of fewtrunc's errors prints the log's last lines."""
    sys.stderr.flush()
    saved, log = os.dup(2), tempfile.TemporaryFile()
    os.dup2(log.fileno(), 2)
    bars = os.fdopen(os.dup(saved), "w", buffering=1, encoding=sys.stderr.encoding,
                     errors="backslashreplace")
    failed = False
    try:
        yield bars
    except Exception as exc:  # fewtrunc's own errors are one clear line: no log for them
        failed = not isinstance(exc, FewtruncError)
        raise
    finally:
        sys.stderr.flush()
        bars.close()
        os.dup2(saved, 2)
        os.close(saved)
        if failed:
            log.seek(max(0, os.fstat(log.fileno()).st_size - 6000))
            tail = log.read().decode("utf-8", "replace").strip()
            if tail:
                print(f"(the last lines Beam logged)\n{tail}", file=sys.stderr)
        log.close()
