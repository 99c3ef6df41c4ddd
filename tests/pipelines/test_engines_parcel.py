"""A stage goes to workers as a shell plus its run plan, and the plan is unpickled once per worker
process, not once per item (Ray unpickled the stage's ObjectRef argument on every actor call: for
a tree of 55k files, 0.12 CPU-s a call, ~30 s over a 1 GB corpus's shards) nor packed into every
Beam DoFn (each bz2-compressed by Beam's pickler)."""
from __future__ import annotations

import os
import pickle
import sys
from dataclasses import dataclass

import pytest

from pipelines.config import load_run_config
from pipelines.engines import parcel
from pipelines.partitions import stages as pack_stages
from pipelines.run_plan import build_run_plan
from pipelines.stages import TokenizeUnits
from tests.pipelines.conftest import english_records, write_jsonl

LOADS = 0  # plans of CountedPlan unpickled in this process


class CountedPlan:
    """A plan that counts how often a process unpickles it."""

    def __init__(self, out: str, payload: bytes):
        self.fingerprint, self.out, self.units, self.payload = "counted", out, (), payload

    def __setstate__(self, state):
        global LOADS
        self.__dict__.update(state)
        LOADS += 1


@dataclass(frozen=True)
class ReportLoads:
    """Each item -> (this worker's pid, how many plans it has unpickled so far)."""

    plan: object
    name, gather, threaded = "count", False, False

    def work_size(self, items):
        return len(items), "item"

    def setup(self, threads):
        return lambda items, report=None: [(os.getpid(), sys.modules[__name__].LOADS)
                                           for _ in items]


def test_stages_split_into_small_shells_and_one_parcel(tmp_path, monkeypatch):
    src = write_jsonl(tmp_path / "in.jsonl", english_records(5))
    plan, _ = build_run_plan(load_run_config(None, [f"input.paths={src}",
                                                    f"output.dir={tmp_path / 'o'}"]))
    stages = [TokenizeUnits(plan), *pack_stages(plan)]
    split = [parcel.split(s) for s in stages]
    assert len({p.key for _, p in split}) == 1 and all(p is split[0][1] for _, p in split)
    assert all(len(pickle.dumps(shell)) < 400 and shell.plan is None for shell, _ in split)
    monkeypatch.setattr(parcel, "_PACKED", [])  # a worker: it has opened no plan yet
    monkeypatch.setattr(parcel, "_OPENED", {})
    fetched = []

    def fetch():
        fetched.append(1)
        return pickle.loads(pickle.dumps(split[0][1]))  # as it arrives from the driver

    joined = [parcel.join(shell, p.key, fetch) for shell, p in split]
    assert joined == stages and len(fetched) == 1  # opened once for every stage
    assert all(j.plan is joined[0].plan for j in joined)
    probe = ReportLoads(plan=None)  # a stage without a plan goes whole
    assert parcel.split(probe) == (probe, None) and parcel.join(probe, None) is probe


@pytest.mark.slow
def test_a_ray_actor_unpickles_the_plan_once_not_per_item(tmp_path):
    from pipelines.engines.ray_engine import RayEngine

    rcfg = load_run_config(None, ["ray.num_cpus=2", "ray.concurrency=2"]).ray
    stage = ReportLoads(CountedPlan(str(tmp_path), os.urandom(1 << 20)))
    with RayEngine(rcfg) as engine:
        got = engine.map(stage, list(range(12)))
    assert len(got) == 12
    per_worker: dict = {}
    for pid, loads in got:
        per_worker[pid] = max(per_worker.get(pid, 0), loads)
    assert per_worker and set(per_worker.values()) == {1}, per_worker


@dataclass(frozen=True)
class WriteLoads:
    """Beam collects no outputs: each item leaves ``{stage}-{item}`` in the plan's ``out``,
    holding this worker's pid and the plans it has unpickled so far; outputs the item."""

    plan: object
    name: str = "count"
    gather, threaded = False, False

    def work_size(self, items):
        return len(items), None

    def setup(self, threads):
        def call(items, report=None):
            for item in items:
                path = os.path.join(self.plan.out, f"{self.name}-{item}")
                with open(path, "w") as f:
                    f.write(f"{os.getpid()} {sys.modules[__name__].LOADS}")
            return items
        return call


@pytest.mark.slow
def test_beam_workers_unpickle_the_plan_once_for_every_stage(tmp_path):
    from pipelines.engines.beam_engine import BeamEngine

    bcfg = load_run_config(None, ["engine=beam", "beam.num_workers=2"]).beam
    plan = CountedPlan(str(tmp_path), os.urandom(1 << 20))
    stages = [WriteLoads(plan, "first"), WriteLoads(plan, "second")]
    with BeamEngine(bcfg) as engine:
        engine.run_stages(stages, list(range(8)), progress=False)
    seen = [(tmp_path / f"{s}-{i}").read_text().split() for s in ("first", "second")
            for i in range(8)]
    assert len(seen) == 16
    per_worker: dict = {}
    for pid, loads in seen:
        per_worker[pid] = max(per_worker.get(pid, 0), int(loads))
    assert set(per_worker.values()) == {1}, per_worker  # two stages, one plan opened
