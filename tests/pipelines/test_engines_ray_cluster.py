"""Against a real ``ray start --head`` cluster on 127.0.0.1 (token auth): ``ray job submit``,
joining by address, and an actor SIGKILLed mid-run. One cluster for the module, always
stopped (by pid: only the processes it started)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pipelines
from tests.ray_cluster import LocalRayCluster
from tests.pipelines.test_engines_equivalence import (assert_same_output, job_config,
                                                      make_corpus, write_config)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    c = LocalRayCluster(num_cpus=2)
    try:
        c.start()
        yield c
    finally:
        c.stop()
    assert not c.pids()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray-cluster")
    paths = make_corpus(root)
    want = root / "local"
    pipelines.run(job_config(paths, want))
    return root, paths, want


def test_cluster_is_loopback_only(cluster):
    assert cluster.address.startswith("127.0.0.1:")
    assert cluster.pids(), "no Ray process runs in the cluster's session"


def test_job_submit_runs_the_ray_engine(cluster, corpus):
    root, paths, want = corpus
    workdir = root / "job"
    workdir.mkdir()
    out = root / "job-out"
    write_config(workdir / "job.yaml", job_config(paths, out))
    proc = cluster.submit(["fewtrunc", "run", "job.yaml", "engine=ray", "ray.address=auto",
                           "--quiet"], working_dir=workdir, timeout=240)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "succeeded" in proc.stdout + proc.stderr
    assert_same_output(out, want)


def _actor_pids(cluster, actor: str) -> list[int]:
    pids = []
    for pid in cluster.pids():
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if actor in cmd:
            pids.append(pid)
    return pids


def _unit_spilled(work: Path) -> bool:
    return len(list(work.glob("unit-*.done.json"))) >= 1


def test_killed_actor_is_restarted_and_output_identical(cluster, corpus):
    """A StageWorker actor SIGKILLed once one unit is spilled, not all: Ray restarts it and
    retries its unit; the output is the local engine's."""
    root, paths, _ = corpus
    actor, started = "StageWorker", _unit_spilled
    out = root / "killed"
    # Many small units and batches: after the first unit is spilled, most are still pending
    # however fast the machine tokenizes, so the kill lands mid-run.
    small = {"tokenizer": {"batch_bytes": 15_000}, "input": {"unit_bytes": 30_000}}
    want = root / "local-small"
    pipelines.run(job_config(paths, want, **small))
    units = json.loads((want / "manifest.json").read_text())["inputs"]["units"]
    config = write_config(root / "killed.yaml", job_config(paths, out, **small))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "run", str(config), "engine=ray",
         f"ray.address={cluster.address}", "--quiet"],
        env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    work = out / "_work"
    killed = None
    try:
        deadline = time.monotonic() + 120
        while killed is None and proc.poll() is None and time.monotonic() < deadline:
            actors = _actor_pids(cluster, actor)
            if actors and started(work):
                killed = actors[0]
                os.kill(killed, signal.SIGKILL)
                done_at_kill = len(list(work.glob("unit-*.done.json")))
                break
            time.sleep(0.05)
        output, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert killed is not None, f"the run ended before a {actor} could be killed"
    assert done_at_kill < units, "every unit was spilled before the kill: nothing was retried"
    assert proc.returncode == 0, output[-4000:]
    assert not Path(f"/proc/{killed}").exists() or killed not in _actor_pids(cluster, actor)
    assert_same_output(out, want)


def test_second_cluster_coexists_and_takes_jobs(cluster, tmp_path):
    """Every port Ray would fix is a free one: a second cluster on the machine gets its own job
    agent (Ray's default agent port clashed, and its jobs failed with "No available agent")."""
    with LocalRayCluster(num_cpus=1) as other:
        assert other.agent_port != cluster.agent_port
        proc = other.submit([sys.executable, "-c", "print('second cluster ok')"],
                            working_dir=tmp_path, timeout=120)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        assert "second cluster ok" in proc.stdout + proc.stderr
    assert not other.pids()
