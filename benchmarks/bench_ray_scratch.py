"""The local scratch a Ray node needs for a run on an object store, against what it writes.

A two-node cluster on this machine (``tests/ray_cluster.py``: the head and a second node in its own
mount namespace, with a private ``/tmp``), moto's S3 server, and a corpus of the standard
library's Python sources as JSON-lines objects. While the run goes, the second node's ``/tmp`` is
sampled every 20 ms: the peak of fewtrunc's scratch there (its spill and shard files until their
upload, a writer's copies of spill files, a row plan) is set against what the node wrote: the
spill files of the units it tokenized (from their markers, which name the worker) and its share
of the shards (``timings.json`` counts the items per node).

    python benchmarks/bench_ray_scratch.py [--mb 24] [--partition-chunks 0]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.ray_cluster import LocalRayCluster, exit_on_sigterm  # noqa: E402


def scratch_bytes(tmp: Path) -> int:
    """Bytes of fewtrunc's scratch files below ``tmp`` (not Ray's own temp dir)."""
    total = 0
    for entry in os.scandir(tmp):
        if not (entry.name.startswith("fewtrunc-") or ".tmp-" in entry.name):
            continue
        paths = [entry.path] if entry.is_file() else [os.path.join(d, f) for d, _, fs in
                                                        os.walk(entry.path) for f in fs]
        for p in paths:
            try:
                total += os.stat(p).st_size
            except OSError:
                pass
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=24.0, help="corpus size (MB of text)")
    ap.add_argument("--partition-chunks", type=int, default=0,
                    help="pack.partition_chunks (0: one global pack, the default's behaviour "
                         "for a corpus this small)")
    args = ap.parse_args()
    exit_on_sigterm()
    import logging

    from moto.server import ThreadedMotoServer

    from pipelines.infra import atomic, storage
    from tests.pipelines.object_stores import free_port

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port, bucket = free_port(), "fewtrunc-scratch"
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "x",
           "AWS_SECRET_ACCESS_KEY": "x", "AWS_REGION": "us-east-1"}
    os.environ.update(env)
    import boto3

    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                 aws_access_key_id="x", aws_secret_access_key="x").create_bucket(Bucket=bucket)
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py"))
    part, n, size, held = [], 0, 0, 0
    for f in files:
        try:
            part.append(json.dumps({"text": f.read_text(encoding="utf-8")}) + "\n")
        except (UnicodeDecodeError, OSError):
            continue
        size, held = size + len(part[-1]), held + len(part[-1])
        if held >= 3e6:  # one object (and unit) per ~3 MB
            atomic.write_text(f"s3://{bucket}/in/part-{n:03d}.jsonl", "".join(part))
            n, part, held = n + 1, [], 0
            if size >= args.mb * 1e6:
                break
    out = f"s3://{bucket}/out"
    with LocalRayCluster(num_cpus=1, object_store_mb=200) as cluster:
        node = cluster.add_node(num_cpus=1, private=True, object_store_mb=200)
        tmp = node.root() / "tmp"
        peak, stop = [0], threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], scratch_bytes(tmp))
                time.sleep(0.02)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        extra = [f"pack.partition_chunks={args.partition_chunks}"] if args.partition_chunks else []
        t = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "pipelines.cli", "run", "configs/demo.yaml",
             f"input.paths=s3://{bucket}/in/*.jsonl", "input.unit_bytes=3000000",
             f"output.dir={out}",
             "output.keep_work=true", "output.report=false", "engine=ray",
             f"ray.address={cluster.address}", "--quiet", *extra],
            env={**cluster.env, **env}, capture_output=True, text=True,
            cwd=Path(__file__).resolve().parent.parent)
        wall = time.perf_counter() - t
        stop.set()
        sampler.join()
        if proc.returncode:
            raise SystemExit(proc.stdout[-2000:] + proc.stderr[-2000:])
        ns = node.mount_ns
        spill = {"all": 0, "node": 0}
        for key, st in storage.list_files(f"{out}/_work", recursive=False):
            if "/unit-" in key and key.endswith((".tokens", ".tokens16")):
                marker = json.loads(storage.read_bytes(key.rsplit(".", 1)[0] + ".done.json"))
                spill["all"] += st.size
                spill["node"] += st.size if marker["worker"]["mnt"] == ns else 0
        manifest = json.loads(storage.read_bytes(f"{out}/manifest.json"))
        timings = json.loads(storage.read_bytes(f"{out}/timings.json"))
        shard_bytes = sum(s["bytes"] for s in manifest["shards"])
        writes = timings["ray_nodes"]["write"]
        share = writes.get(node.node_id, 0) / max(1, sum(writes.values()))
        left = scratch_bytes(tmp)
    wrote = spill["node"] + share * shard_bytes
    mb = 1e6
    print(f"corpus {n} objects, {manifest['totals']['tokens_in']:,} tokens; run {wall:.1f} s")
    print(f"spill (all units) {spill['all'] / mb:.1f} MB; shards {shard_bytes / mb:.1f} MB in "
          f"{len(manifest['shards'])} files")
    print(f"second node: tokenized {spill['node'] / mb:.1f} MB of spill, wrote "
          f"{sum(writes.values()) and writes.get(node.node_id, 0)} of {sum(writes.values())} "
          f"shards ({share * shard_bytes / mb:.1f} MB)")
    print(f"second node's scratch: peak {peak[0] / mb:.1f} MB = {peak[0] / max(wrote, 1):.2f}x "
          f"what it wrote, {peak[0] / max(spill['all'], 1):.2f}x the whole spill; left after "
          f"the run: {left} bytes")
    moto.stop()


if __name__ == "__main__":
    main()
