"""engine=ray (a real local cluster on 127.0.0.1) and engine=beam (DirectRunner) with the inputs,
output.dir and _work/ on S3 (moto's server) and on GCS (the storage emulator), both on 127.0.0.1:
the shards are the local engine's on a local disk, byte for byte. The cluster is started without
the storage environment: its workers reach the store only through what the driver passes them
(the runtime environment)."""
from __future__ import annotations

import pytest

import pipelines
from pipelines.infra import atomic
from tests.pipelines.object_stores import (Store, environment, gcs_server,  # noqa: F401
                                           object_store, s3_server)
from tests.pipelines.test_pl_storage_output import (cli, corpus, local_run,  # noqa: F401
                                                    overrides, store_files)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(s3_server):
    from tests.ray_cluster import LocalRayCluster

    c = LocalRayCluster(num_cpus=2)  # its environment has no AWS_* settings
    try:
        c.start()
        yield c
    finally:
        c.stop()


def _upload(corpus, store) -> str:
    for path in sorted(corpus.iterdir()):
        atomic.write_bytes(store.url("in", path.name), path.read_bytes())
    return store.url("in")


@pytest.mark.parametrize("server_name", ["s3_server", "gcs_server"])
def test_ray_cluster_reads_and_writes_a_store(cluster, request, server_name, corpus, local_run):
    server = request.getfixturevalue(server_name)
    store = Store(server)
    with environment(server.env):
        src = _upload(corpus, store)
    out = store.url("ray")
    args = overrides(out, src, **{"engine": "ray", "ray.address": cluster.address})
    done = cli(args, {**cluster.env, **server.env})
    assert done.returncode == 0, done.stdout + done.stderr
    with environment(server.env):
        assert store_files(out) == local_run


def test_beam_reads_and_writes_a_store(object_store, corpus, local_run):
    src = _upload(corpus, object_store)
    out = object_store.url("beam")
    result = pipelines.run(None, overrides(out, src, **{"engine": "beam",
                                                        "beam.num_workers": 2}))
    assert result["status"] == "complete"
    assert store_files(out) == local_run
