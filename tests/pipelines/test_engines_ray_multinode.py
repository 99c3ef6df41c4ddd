"""Two Ray nodes that share no disk: the head, and a second node in its own mount namespace
(private /tmp, scratch and HOME, no AWS_* variables: ``tests/ray_cluster.py``), with the inputs,
the tokenizer and the output on moto's S3 server. Both nodes tokenize and write; the output is
the local engine's; SIGKILL of the second node's raylet mid-run ends in a finished run or in
the one-line stall error, and a rerun with the node back gives the same shards. Skipped, with
the reason, where this machine cannot make a mount namespace."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import yaml

import pipelines
from pipelines.infra import atomic, storage
from tests.pipelines.conftest import english_records
from tests.pipelines.object_stores import (Store, environment, s3_auth_server,  # noqa: F401
                                           s3_server)
from tests.ray_cluster import LocalRayCluster, mount_namespace_problem

pytestmark = pytest.mark.slow
SAME = ("rejects.jsonl", "stats.json")  # with the shards: what the config's spelling leaves be


@pytest.fixture(scope="module")
def keys(s3_auth_server, tmp_path_factory):
    """A credentials file of a user allowed everything on the signature-checking server: the
    head has it (its own \"instance role\"), the second node does not (and cannot see it)."""
    path = tmp_path_factory.mktemp("head-only") / "credentials"
    user = s3_auth_server.user(["s3:*"], ["*"])
    path.write_text(f"[default]\naws_access_key_id = {user['AWS_ACCESS_KEY_ID']}\n"
                    f"aws_secret_access_key = {user['AWS_SECRET_ACCESS_KEY']}\n")
    return {"AWS_SHARED_CREDENTIALS_FILE": str(path)}


@pytest.fixture(scope="module")
def cluster(s3_server, keys):
    problem = mount_namespace_problem()
    if problem:
        pytest.skip(f"no second node in a mount namespace of its own: {problem}")
    c = LocalRayCluster(num_cpus=1, object_store_mb=100, env={**os.environ, **keys})
    try:
        c.start()
        c.add_node(num_cpus=1, private=True)
        yield c
    finally:
        c.stop()
    assert not c.pids()


@pytest.fixture(scope="module")
def corpus(s3_server, tmp_path_factory):
    """16 JSON-lines objects (~25 units) and a tokenizer.json on the store; the same
    tokenizer as a local file (which only the driver has); the local engine's run of it."""
    from pipelines.infra.tokenizer import load_tokenizer

    recs = [json.dumps({"text": f"{k} {r['text']}"}) + "\n" for k in range(2)
            for r in english_records(160)]
    with environment(s3_server.env):
        store = Store(s3_server)
        for i in range(16):
            atomic.write_text(store.url("in", f"part-{i:02d}.jsonl"), "".join(recs[i * 20:][:20]))
        tok = load_tokenizer().to_str()
        atomic.write_text(store.url("tok", "tokenizer.json"), tok)
        local_tok = tmp_path_factory.mktemp("driver-only") / "tokenizer.json"
        local_tok.write_text(tok, encoding="utf-8")
        want = tmp_path_factory.mktemp("multinode") / "local"
        pipelines.run(_config(store, want, store.url("tok", "tokenizer.json")))
    return store, str(local_tok), _outputs(want)


def _config(store, out, tokenizer: str, **ray) -> dict:
    return {"input": {"paths": [store.url("in", "*.jsonl")], "unit_bytes": 40_000},
            "tokenizer": {"path": tokenizer, "batch_bytes": 4000, "backend": "tokenizers"},
            "pack": {"seq_len": 256}, "output": {"dir": str(out), "rows_per_shard": 150,
                                                 "report": False},
            "ray": {"stall_timeout": 20, **ray}}


def _outputs(out) -> dict:
    """The shards, rejects and stats of a run, local or on the store."""
    if "://" not in str(out):
        from pathlib import Path

        return {p.name: p.read_bytes() for p in Path(out).iterdir()
                if p.name.startswith("shard-") or p.name in SAME}
    return {k.rsplit("/", 1)[1]: storage.read_bytes(k) for k, _ in storage.list_files(out)
            if "/_work/" not in k and (k.rsplit("/", 1)[1].startswith("shard-")
                                       or k.endswith(SAME))}


def _start(cluster, server, cfg: dict, tmp_path, name: str, env=None) -> subprocess.Popen:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "run", str(path), "engine=ray",
         f"ray.address={cluster.address}", "--quiet"],
        env={**cluster.env, **(server.env if env is None else env)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _error(proc: subprocess.Popen) -> str:
    """The one line a failed run printed (asserted to be fewtrunc's one error line)."""
    log, _ = proc.communicate(timeout=240)
    errors = [line for line in log.splitlines() if line.startswith("fewtrunc run: error:")]
    assert proc.returncode == 2 and len(errors) == 1, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    return errors[0]


def _s3(server):
    import boto3

    return boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def _unit_workers(out: str) -> list[str]:
    """The mount namespace of the worker that tokenized each unit done so far (its marker)."""
    found = []
    for key, _ in storage.list_files(f"{out}/_work", recursive=False):
        if key.endswith(".done.json") and "/unit-" in key:
            found.append(json.loads(storage.read_bytes(key))["worker"]["mnt"])
    return found


def test_two_nodes_without_a_shared_disk(cluster, s3_server, corpus, tmp_path):
    """Both nodes tokenize (unit markers) and write (timings.json's items per node); the second
    node reads the store with the settings the driver passed and builds the tokenizer from the
    run plan; nothing is left in its scratch, nor below _work/ on the store."""
    store, _, want = corpus
    out = store.url("two-nodes")
    cfg = _config(store, out, store.url("tok", "tokenizer.json"))
    cfg["output"].update(keep_work=True)  # the unit markers say who tokenized what
    run = _start(cluster, s3_server, cfg, tmp_path, "two")
    log, _ = run.communicate(timeout=240)
    assert run.returncode == 0, log[-3000:]
    node = cluster.nodes[0]
    with environment(s3_server.env):
        assert _outputs(out) == want
        assert node.mount_ns in _unit_workers(out), "the second node tokenized nothing"
        assert len(set(_unit_workers(out))) == 2
        per_node = json.loads(storage.read_bytes(f"{out}/timings.json"))["ray_nodes"]
        assert len(per_node["tokenize"]) == 2 and len(per_node["write"]) == 2, per_node
    left = [p.name for p in (node.root() / "tmp").iterdir() if "fewtrunc" in p.name
            or ".tmp-" in p.name]
    assert not left, f"scratch left on the second node: {left}"


def test_node_lost_mid_run_then_rerun(cluster, s3_server, corpus, tmp_path):
    """The tokenizer is a local file on the driver only. SIGKILL of the second node's raylet
    once it has tokenized a unit: the run finishes on the head (or stops with the one-line
    stall error); with a node back, a rerun gives the same shards, and leaves no _work/."""
    store, local_tok, want = corpus
    out = store.url("lost")
    cfg = _config(store, out, local_tok)
    node = cluster.nodes[0]
    ns = node.mount_ns
    run = _start(cluster, s3_server, cfg, tmp_path, "lost")
    killed, deadline = False, time.monotonic() + 120
    with environment(s3_server.env):
        while run.poll() is None and time.monotonic() < deadline:
            if ns in _unit_workers(out):
                node.kill_raylet()
                killed = True
                break
            time.sleep(0.2)
    try:
        log, _ = run.communicate(timeout=240)
    finally:  # the next tests get a live second node whatever happened here
        cluster.nodes.remove(node)
        node.stop()
        cluster.add_node(num_cpus=1, private=True)
    assert killed, f"the second node tokenized no unit before the run ended:\n{log[-2000:]}"
    if run.returncode != 0:
        errors = [line for line in log.splitlines() if line.startswith("fewtrunc run: error:")]
        assert len(errors) == 1 and "ray.stall_timeout" in errors[0], log[-3000:]
    # else: it finished on the head. Whether the pool had to hand an item of the lost node to
    # another actor ("lost its worker") depends on the node holding one at the kill: a unit
    # takes milliseconds, so that is a race; test_engines_ray_cluster kills a busy actor.
    again = _start(cluster, s3_server, cfg, tmp_path, "lost")
    log, _ = again.communicate(timeout=240)
    assert again.returncode == 0, log[-3000:]
    with environment(s3_server.env):
        assert _outputs(out) == want
    keys = [o["Key"] for o in _s3(s3_server).list_objects_v2(
        Bucket=store.bucket, Prefix=out.split("/", 3)[3] + "/")["Contents"]]
    assert not [k for k in keys if "/_work" in k], keys  # nor "directory" objects


def test_a_local_input_the_second_node_cannot_see_is_refused(cluster, s3_server, tmp_path):
    """Inputs in the driver's /tmp (the second node has its own): the second node's first
    item stops the run with one line naming the node, not with rejects of every document."""
    data = tmp_path / "in"
    data.mkdir()
    recs = [json.dumps({"text": r["text"]}) + "\n" for r in english_records(160)]
    for i in range(16):
        (data / f"part-{i:02d}.jsonl").write_text("".join(recs[i::16]), encoding="utf-8")
    with environment(s3_server.env):
        out = Store(s3_server).url("local-input")
    cfg = {"input": {"paths": [f"{data}/*.jsonl"], "unit_bytes": 4000},
           "tokenizer": {"batch_bytes": 2000, "backend": "tokenizers"},
           "output": {"dir": out, "report": False}}
    line = _error(_start(cluster, s3_server, cfg, tmp_path, "local"))
    assert f"{data}/part-" in line and "is not visible on Ray node" in line, line
    assert cluster.nodes[0].node_id[:8] in line, line


def test_a_store_the_second_node_may_not_read_is_one_line_naming_it(cluster, s3_auth_server,
                                                                     keys, tmp_path):
    """The head's workers have credentials (a file only the head sees), the second node's
    none: the run stops with one line naming the second node and the URL it was denied."""
    srv = s3_auth_server
    name = f"denied-{os.urandom(4).hex()}"
    srv.create_bucket(name)
    recs = [json.dumps({"text": r["text"]}) + "\n" for r in english_records(160)]
    for i in range(16):
        srv.put(f"s3://{name}/in/part-{i:02d}.jsonl", "".join(recs[i::16]).encode())
    cfg = {"input": {"paths": [f"s3://{name}/in/*.jsonl"], "unit_bytes": 4000},
           "tokenizer": {"batch_bytes": 2000, "backend": "tokenizers"},
           "output": {"dir": f"s3://{name}/out", "report": False}}
    env = {"AWS_ENDPOINT_URL": srv.endpoint, "AWS_REGION": "us-east-1", **keys}
    line = _error(_start(cluster, srv, cfg, tmp_path, "denied", env=env))
    assert f"s3://{name}/in/part-" in line and "access denied" in line, line
    assert f"on Ray node" in line and cluster.nodes[0].node_id[:8] in line, line
