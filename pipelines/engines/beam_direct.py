"""What the Beam engine does differently on the DirectRunner, whose workers all run on this
machine: three fixed costs and one imbalance of ``fewtrunc run engine=beam`` that the
FnApiRunner has and a cluster runner (Dataflow, Flink) does not.

- **Worker start-up.** Its ``multi_processing`` workers start when the pipeline runs, then
  import Beam's harness and the stages' modules (~1.2 CPU-s each): they start warm instead,
  while the driver plans (``beam_warm``), and set the first stage up (the tokenizer) while the
  runner still starts the pipeline.
- **The plan as a side input.** Beam pickles what ``Create`` holds with bz2 at level 9, several
  times over while it builds and translates the pipeline (~0.1 s per pickling of the ~1 MB plan
  of a 55k-file tree, on the driver, before any worker has work). Here the plan goes to a file
  in the engine's scratch folder, which every worker of this machine reads.
- **A fixed split.** The runner splits a stage's items between its workers once, before any
  starts, and nothing steals work: by Beam's random keys one worker got a unit more than the
  other and ended ~0.5 s later on the kernel tree. The first stage's items are *dealt*
  instead, by weight (``deal``).
"""
from __future__ import annotations

import logging
import os

from pipelines.engines.parcel import Parcel


def is_direct(runner) -> bool:
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    return isinstance(runner, FnApiRunner)


def worker_count(options) -> int:
    """The DirectRunner's worker count (``direct_num_workers``; 0: one per core)."""
    from apache_beam.options.pipeline_options import DirectOptions

    return options.view_as(DirectOptions).direct_num_workers or os.cpu_count() or 1


def warm_runner(options, folder: str):
    """(a FnApiRunner whose workers are warm ones, their ``WarmPool``) when ``options`` ask for
    ``multi_processing``; (None, None) otherwise."""
    from apache_beam.options.pipeline_options import DirectOptions
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from apache_beam.transforms.environments import SubprocessSDKEnvironment

    from pipelines.engines.beam_warm import WarmPool

    direct = options.view_as(DirectOptions)
    if direct.direct_running_mode != "multi_processing":
        return None, None
    pool = WarmPool(worker_count(options), folder)
    # in ``multi_processing`` mode the runner would replace the environment by its own
    direct.direct_running_mode = "in_memory"
    logger = logging.getLogger("apache_beam.runners.portability.fn_api_runner.fn_runner")
    if not any(isinstance(f, _NotInMemory) for f in logger.filters):
        logger.addFilter(_NotInMemory())
    environment = SubprocessSDKEnvironment.from_command_string(pool.command())
    return FnApiRunner(default_environment=environment), pool


class _NotInMemory(logging.Filter):
    """Drops the runner's warning that ``in_memory`` mode runs one worker: not so with an
    environment of one's own (``warm_runner``)."""

    def filter(self, record) -> bool:
        return not str(record.msg).startswith("If direct_num_workers is not equal to 1")


def parcel_file(folder: str, parcel: Parcel) -> str:
    """The parcel's bytes in ``folder`` (written once per plan), for the workers to read."""
    from pipelines.infra.atomic import write_bytes

    path = os.path.join(folder, f"plan-{parcel.key[:16]}.parcel")
    if not os.path.exists(path):
        write_bytes(path, parcel.blob)
    return path


def stage_weight(stage, item) -> float:
    """An item's share of its stage's work: what its progress bar counts (1 when it has none)."""
    total, unit = stage.work_size([item])
    return float(total) if unit is not None else 1.0


def deal(items: list, weights: list, workers: int) -> list[tuple[int, object]]:
    """``(worker, item)`` pairs: the heaviest item first to the least-loaded worker (LPT), so
    that the workers end together. Grouped by worker, each group goes to one worker: the
    runner hands out a grouped stage's keys round-robin, and there are ``workers`` keys."""
    import heapq

    load = [(0.0, w) for w in range(workers)]  # a heap of (load, worker)
    dealt = []
    for i in sorted(range(len(items)), key=lambda i: (-weights[i], i)):
        total, slot = heapq.heappop(load)
        heapq.heappush(load, (total + weights[i], slot))
        dealt.append((slot, items[i]))
    return dealt
