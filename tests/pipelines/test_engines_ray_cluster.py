"""Against a real ``ray start --head`` cluster on 127.0.0.1 (token auth): ``ray job submit``,
joining by address, and an actor SIGKILLed mid-run. One cluster for the module, always
stopped (by pid: only the processes it started). The head is started with moto's S3 settings
exported, as the README's recipe does, so jobs reach the store through them: ``ray job submit``
as written there, with ``--runtime-env-json`` too, and ``ray.address=http://...``."""
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
from tests.pipelines.object_stores import Store, environment, s3_server  # noqa: F401
from tests.ray_cluster import STORE_VARS, LocalRayCluster
from tests.pipelines.test_engines_equivalence import (assert_same_output, job_config,
                                                      local_reference, write_config)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(s3_server):
    c = LocalRayCluster(num_cpus=2, env={**os.environ, **s3_server.env})  # exported on the head
    try:
        c.start()
        yield c
    finally:
        c.stop()
    assert not c.pids()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return local_reference(tmp_path_factory.mktemp("ray-cluster"))


def test_cluster_is_loopback_only(cluster):
    assert cluster.address.startswith("127.0.0.1:")
    assert cluster.pids(), "no Ray process runs in the cluster's session"


def test_work_the_cluster_cannot_place_stops_with_one_line(cluster, corpus):
    """Actors of 3 CPUs on a cluster of 2: nothing can run; after ``ray.stall_timeout`` the run
    names the stage, the pending units and the resources, and ends (it waited forever)."""
    root, paths, _ = corpus
    config = write_config(root / "stall.yaml", job_config(paths, root / "stalled"))
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run", str(config), "engine=ray",
         f"ray.address={cluster.address}", "ray.cpus_per_actor=3", "ray.stall_timeout=2",
         "--quiet"], env=cluster.env, capture_output=True, text=True, timeout=180)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("fewtrunc run:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-3000:]
    line = errors[0]
    assert "the tokenize stage cannot place its work: " in line and " items pending ([" in line
    assert "2 s (ray.stall_timeout)" in line and "{'CPU': 3}" in line, line
    assert "{'CPU': 2.0} in all" in line and "rerun to resume" in line, line


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


def test_killed_actor_is_replaced_and_output_identical(cluster, corpus):
    """A StageWorker actor SIGKILLed once one unit is spilled, not all: its unit goes to another
    actor (a replacement is started); the output is the local engine's."""
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


@pytest.fixture(scope="module")
def on_s3(s3_server, tmp_path_factory):
    """A corpus on the store (objects named as in the README's recipe) and the local engine's
    run of it."""
    from tests.pipelines.conftest import english_records

    from pipelines.infra import atomic
    from pipelines.infra.tokenizer import load_tokenizer

    with environment(s3_server.env):
        store = Store(s3_server)
        recs = [json.dumps({"text": r["text"]}) + "\n" for r in english_records(60)]
        for i in range(3):
            atomic_text(store.url("web", f"part-{i}.jsonl.zst"), "".join(recs[i::3]))
        atomic.write_text(store.url("tok", "tokenizer.json"), load_tokenizer().to_str())
        want = tmp_path_factory.mktemp("recipe") / "local"
        pipelines.run(str(ROOT / "configs" / "demo.yaml"),
                      [*_recipe(store), f"output.dir={want}"])
    return store, {p.name: p.read_bytes() for p in want.iterdir() if p.name in OUTPUT
                   or p.name.startswith("shard-")}


ROOT = Path(pipelines.__file__).resolve().parent.parent


def _recipe(store) -> list[str]:
    """The README's inputs and tokenizer, on this store."""
    return [f"input.paths={store.url('web', '*.jsonl.zst')}",
            f"tokenizer.path={store.url('tok', 'tokenizer.json')}"]
OUTPUT = ("rejects.jsonl", "stats.json")


def atomic_text(url: str, text: str) -> None:
    import zstandard

    from pipelines.infra import atomic

    atomic.write_bytes(url, zstandard.ZstdCompressor().compress(text.encode()))


def _store_output(s3_server, out: str) -> dict:
    from pipelines.infra import storage

    with environment(s3_server.env):
        return {k.rsplit("/", 1)[1]: storage.read_bytes(k) for k, _ in storage.list_files(out)
                if k.rsplit("/", 1)[1] in OUTPUT or "/shard-" in k}


def test_readme_recipe_job_submit_with_settings_exported_on_the_head(cluster, s3_server, on_s3):
    """``ray job submit --address http://HEAD:8265 --working-dir . -- fewtrunc run
    configs/demo.yaml engine=ray ray.address=auto input.paths=s3://... tokenizer.path=s3://...
    output.dir=s3://...`` from the checkout, in a shell without AWS_*: the job's driver has the
    head's, and hands them to the workers."""
    store, want = on_s3
    out = store.url("runs", "fewtrunc", "demo")
    shell = {k: v for k, v in cluster.env.items() if not k.startswith(STORE_VARS)}
    proc = cluster.submit(["fewtrunc", "run", "configs/demo.yaml", "engine=ray",
                           "ray.address=auto", *_recipe(store), f"output.dir={out}"],
                          working_dir=ROOT, env=shell, timeout=240)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert _store_output(s3_server, out) == want


def test_job_with_settings_in_its_runtime_env(cluster, s3_server, on_s3, tmp_path):
    """``--runtime-env-json '{"env_vars": {AWS_*...}}'``: the job's driver does not hand the same
    keys to ``ray.init`` again (Ray refused to merge them: "because of a conflict")."""
    store, want = on_s3
    out = store.url("runs", "env-json")
    proc = cluster.submit(["fewtrunc", "run", str(ROOT / "configs" / "demo.yaml"), "engine=ray",
                           "ray.address=auto", *_recipe(store), f"output.dir={out}", "--quiet"],
                          working_dir=tmp_path,
                          runtime_env_json=json.dumps({"env_vars": s3_server.env}), timeout=240)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "conflict" not in proc.stdout + proc.stderr
    assert _store_output(s3_server, out) == want


def test_dashboard_address_submits_a_job_with_this_shells_settings(cluster, s3_server, on_s3,
                                                                   tmp_path):
    """``ray.address=http://HEAD:8265`` while AWS_* are set: the run submits itself as a job
    with them, and the job's driver does not pass them to ``ray.init`` a second time."""
    store, want = on_s3
    out = store.url("runs", "http")
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run", str(ROOT / "configs" / "demo.yaml"),
         "engine=ray", f"ray.address={cluster.dashboard_url}", *_recipe(store),
         f"output.dir={out}", "--quiet"],
        env={**cluster.env, **s3_server.env}, cwd=tmp_path, capture_output=True, text=True,
        timeout=240)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "complete (Ray job" in proc.stdout
    assert _store_output(s3_server, out) == want
