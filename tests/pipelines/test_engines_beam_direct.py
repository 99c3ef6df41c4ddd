"""The Beam engine on the DirectRunner (``pipelines/engines/beam_direct.py`` and
``beam_warm.py``): warm worker processes, the plan read from a scratch file, the first stage's
items dealt by weight; and the path of every other runner (the plan as a side input, the items
reshuffled), run by Beam's bundle-based DirectRunner. Every run writes the local engine's bytes,
and leaves no process or scratch folder behind, however it ends."""
from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pipelines
from pipelines.engines.beam_direct import deal
from tests.pipelines.test_engines_equivalence import (assert_same_output, job_config,
                                                      local_reference, write_config)

pytest.importorskip("apache_beam")
pytestmark = pytest.mark.slow


# --- the deal ---------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 1000), max_size=8), st.integers(1, 3))
def test_deal_gives_each_item_once_and_keeps_within_lpts_bound(weights, workers):
    items = list(range(100, 100 + len(weights)))
    dealt = deal(items, weights, workers)
    assert sorted(item for _, item in dealt) == items
    assert all(0 <= w < workers for w, _ in dealt)
    loads = [0] * workers
    for w, item in dealt:
        loads[w] += weights[item - 100]
    best = min((max(sum(weights[i] for i in range(len(weights)) if a[i] == w)
                    for w in range(workers))
                for a in itertools.product(range(workers), repeat=len(weights))), default=0)
    # Graham: LPT's makespan is at most (4/3 - 1/(3m)) of the optimum (integers: exact)
    assert 3 * workers * max(loads, default=0) <= (4 * workers - 1) * best


def test_deal_puts_the_heaviest_first_and_evens_out_what_round_robin_does_not():
    # round-robin on the sorted items (Beam's split) gives 9+7+6+1 = 23 against 8+6+5 = 19
    items, weights = ["a", "b", "c", "d", "e", "f", "g"], [9, 8, 7, 6, 6, 5, 1]
    dealt = deal(items, weights, 2)
    assert [item for _, item in dealt] == items  # heaviest first, each worker's in that order
    loads = [sum(weights[items.index(i)] for w, i in dealt if w == k) for k in (0, 1)]
    assert sorted(loads) == [21, 21]
    assert deal(["x", "y"], [1, 1], 3) == [(0, "x"), (1, "y")]  # ties: the lowest worker


# --- runs -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return local_reference(tmp_path_factory.mktemp("beam_direct"))


def _marked(mark: str, word: bytes = b"") -> dict[int, bytes]:
    """Live processes whose environment carries ``mark`` (and whose command line ``word``)."""
    found = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if mark.encode() in (entry / "environ").read_bytes():
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
                state = (entry / "stat").read_text().split(") ")[1][0]
                if word in cmd and state != "Z":
                    found[int(entry.name)] = cmd
        except OSError:
            continue
    return found


def _gone(mark: str, within: float = 15.0) -> dict[int, bytes]:
    deadline = time.monotonic() + within
    while (left := _marked(mark)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def _cli(config: Path, scratch: Path, mark: str, *overrides: str) -> subprocess.Popen:
    scratch.mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(scratch), "FEWTRUNC_TEST_MARK": mark}
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", str(config),
                             "engine=beam", "beam.num_workers=2", "--quiet", *overrides],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_warm_workers_do_the_work_and_nothing_is_left(corpus, tmp_path):
    root, paths, want = corpus
    out, mark = tmp_path / "beam", uuid.uuid4().hex
    proc = _cli(write_config(tmp_path / "c.yaml", job_config(paths, out)), tmp_path / "tmp", mark)
    warm, stock = {}, {}
    while proc.poll() is None:  # who works: warm workers, never Beam's own worker command
        warm.update(_marked(mark, b"beam_warm serve"))
        stock.update(_marked(mark, b"apache_beam.runners.worker.sdk_worker_main"))
        time.sleep(0.05)
    assert proc.returncode == 0, proc.stderr.read()[-3000:]
    assert len(warm) == 2 and not stock, (warm, stock)
    assert_same_output(out, want)
    assert not _gone(mark), "a Beam worker process outlived its run"
    assert not list((tmp_path / "tmp").glob("fewtrunc-beam-*")), "the engine's scratch is left"


def test_a_warm_worker_lost_before_its_claim_gives_way_to_beams_own(corpus, tmp_path,
                                                                        monkeypatch):
    from pipelines.engines.beam_engine import BeamEngine

    root, paths, want = corpus
    original, killed = BeamEngine.run_stages, []

    def lose_one(self, stages, items, progress):
        victim = self.pool.procs[0]
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        killed.append(victim.pid)
        return original(self, stages, items, progress)

    monkeypatch.setattr(BeamEngine, "run_stages", lose_one)
    out = tmp_path / "beam"
    pipelines.run(job_config(paths, out, engine="beam", beam={"num_workers": 2}))
    assert killed
    assert_same_output(out, want)


def test_warm_workers_end_with_a_run_refused_while_they_start(corpus, tmp_path):
    root, paths, want = corpus
    mark = uuid.uuid4().hex
    config = write_config(tmp_path / "c.yaml", job_config([str(tmp_path / "none-*.jsonl")],
                                                         tmp_path / "beam"))
    proc = _cli(config, tmp_path / "tmp", mark)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "matches nothing" in err, err[-2000:]
    assert not _gone(mark), "a warm worker outlived the refused run"
    assert not list((tmp_path / "tmp").glob("fewtrunc-beam-*"))


def test_warm_workers_end_with_a_killed_driver(corpus, tmp_path):
    root, paths, want = corpus
    mark = uuid.uuid4().hex
    proc = _cli(write_config(tmp_path / "c.yaml", job_config(paths, tmp_path / "beam")),
                tmp_path / "tmp", mark)
    deadline = time.monotonic() + 60
    while not _marked(mark, b"beam_warm serve") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _marked(mark, b"beam_warm serve"), "no warm worker started"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = _gone(mark)
    assert not left, f"processes outlived the killed driver: {left}"


def test_other_runners_get_the_plan_as_a_side_input_and_the_same_bytes(corpus, tmp_path):
    root, paths, want = corpus
    out = tmp_path / "bundles"  # Beam's bundle-based DirectRunner: not the FnApiRunner
    pipelines.run(job_config(paths, out, engine="beam"),
                  engine_args=["--runner=BundleBasedDirectRunner"])
    assert_same_output(out, want)
