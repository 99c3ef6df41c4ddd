"""The streaming shard reader (``training.streaming``) against today's random-access
``training.data.ShardDataset``, on a local directory, on a moto S3 server and (``--gcs``) on
gcp-storage-emulator: start-up, rows/s, MB/s and bytes read per epoch; plus the reader's start-up
at 10x the count of shards with synthetic manifests (sparse files, no data).

    python benchmarks/bench_loader.py --shards DIR            # a finished run (>= 1 GB of shards)
    python benchmarks/bench_loader.py --tree SRC --copies 6   # build it first: fewtrunc run

``--tree``/``--copies``: the shards of a ``fewtrunc run`` (seq_len 8192, zstd) over ``--copies``
copies of a source tree (``*.c,*.h``; the pipeline refuses a file listed twice, hard links
included; the copies go to a temporary folder), so 1 GB of kernel C sources six times gives
~1.1 GB of shards. The reader reads one full epoch (every row) with ``canonical_streams=8``,
``window_blocks=4``; its bytes are counted by its file layer, for 1 rank and summed over 2 ranks.
``ShardDataset`` decompresses every record batch at start-up, then serves shuffled rows (a
seeded permutation, ``--sample`` rows timed); its bytes per epoch are extrapolated from the
record batches it had to read (its LRU cache of 8 batches missed) times each batch's size. moto
and the GCS emulator run in their own processes on 127.0.0.1; ``--gcs-shards`` uploads only the
first shards to the emulator (it holds them in memory and serves one request at a time).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.data import ShardDataset  # noqa: E402
from training.streaming import ShardIndex, StreamingShardDataset  # noqa: E402
from training.streaming.blocks import BlockReader  # noqa: E402

MB = 1e6


def build(tree: Path, copies: int, out: Path) -> Path:
    """A fewtrunc run over ``copies`` copies of ``tree``."""
    import pipelines

    links = [tree]
    for k in range(2, copies + 1):
        link = out.parent / f"{tree.name}-copy{k}"
        if not link.exists():
            shutil.copytree(tree, link)
        links.append(link)
    pipelines.run(str(ROOT / "configs" / "demo.yaml"),
                  [f"output.dir={out}", f"input.paths={json.dumps([str(p) for p in links])}",
                   'input.include=["*.c","*.h"]', "input.exclude=[]", "input.max_documents=0",
                   "pack.seq_len=8192", "output.report=false"])
    return out


def streaming(location: str, world: int = 1) -> dict:
    t = time.perf_counter()
    index = ShardIndex.open(location)
    readers = [StreamingShardDataset(location, 64, r, world, seed=0, canonical_streams=8,
                                     window_blocks=4, index=index) for r in range(world)]
    startup = time.perf_counter() - t
    t, rows = time.perf_counter(), 0
    for ds in readers:
        for _ in ds:
            rows += 1
    seconds = time.perf_counter() - t
    read = sum(ds.bytes_read for ds in readers)
    for ds in readers:
        ds.close()
    assert rows == index.rows
    return {"startup": startup, "rows_s": rows / seconds, "mb_s": read / MB / seconds,
            "epoch_bytes": read, "ratio": read / index.shard_bytes, "seconds": seconds}


def random_access(location: str, sample: int, index: ShardIndex) -> dict:
    """``ShardDataset``: start-up, then ``sample`` rows of a shuffled order."""
    t = time.perf_counter()
    ds = ShardDataset(location)
    startup = time.perf_counter() - t
    sizes = {}
    reader = BlockReader([s.path for s in index.shards], [s.bytes for s in index.shards])
    for k, s in enumerate(index.shards):
        lay = reader.layout(k)
        for b in range(lay.offsets.size):
            sizes[(k, b)] = int(lay.lengths[b])
    reader.close()
    misses = []
    real = ds._batch

    def counted(k):
        if k not in ds._cache:
            misses.append(ds._locs[k])
        return real(k)
    ds._batch = counted
    order = np.random.default_rng(0).permutation(len(ds))[:sample]
    t = time.perf_counter()
    for i in order:
        ds[int(i)]
    seconds = time.perf_counter() - t
    per_row = sum(sizes[m] for m in misses) / sample
    return {"startup": startup, "rows_s": sample / seconds,
            "mb_s": per_row * sample / MB / seconds, "epoch_bytes": per_row * len(ds),
            "ratio": per_row * len(ds) / index.shard_bytes, "seconds": seconds,
            "startup_bytes": index.shard_bytes}


def without_counts(src: Path, dst: Path) -> Path:
    """The same shards (hard links) with a manifest of an older run: no ``batch_rows``."""
    from pipelines.infra.manifest import manifest_seal

    dst.mkdir(parents=True)
    for p in src.glob("shard-*.arrow"):
        os.link(p, dst / p.name)
    m = json.loads((src / "manifest.json").read_text())
    for e in m["shards"]:
        e.pop("batch_rows", None)
    m["seal"] = manifest_seal(m)
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def synthetic(src: Path, dst: Path, factor: int, put=None) -> tuple[int, Path]:
    """A run directory with ``factor`` times the shards of ``src``: each shard entry repeated
    under new names; local files are sparse files of the recorded size, on a store (``put``)
    tiny objects whose manifest entries record their size."""
    m = json.loads((src / "manifest.json").read_text())
    entries = []
    for k in range(factor * len(m["shards"])):
        e = dict(m["shards"][k % len(m["shards"])], file=f"shard-{k:05d}.arrow")
        if put is not None:
            e["bytes"] = 16
        entries.append(e)
    m["shards"] = entries
    m.pop("seal", None)
    dst.mkdir(parents=True, exist_ok=True)
    for e in entries:
        if put is None:
            with open(dst / e["file"], "wb") as f:
                f.truncate(e["bytes"])
    (dst / "manifest.json").write_text(json.dumps(m))
    return len(entries), dst


def moto():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"})
    import boto3

    client = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")
    for _ in range(100):
        try:
            client.create_bucket(Bucket="bench")
            return proc, client
        except Exception:
            time.sleep(0.1)
    raise SystemExit("moto did not start")


def gcs_emulator(run: Path, shards: int):
    """The emulator in its own process with the manifest and the first ``shards`` shards of
    ``run`` (the manifest cut to them, sealed again); returns (process, URL)."""
    import urllib.request

    from pipelines.infra.manifest import manifest_seal

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "gcp_storage_emulator", "start", "--host",
                             "127.0.0.1", "--port", str(port), "--in-memory", "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"

    def post(path: str, data: bytes, kind: str):
        req = urllib.request.Request(endpoint + path, data=data, method="POST",
                                     headers={"Content-Type": kind})
        urllib.request.urlopen(req, timeout=600).read()

    try:
        for _ in range(100):
            try:
                post("/storage/v1/b?project=bench", json.dumps({"name": "bench"}).encode(),
                     "application/json")
                break
            except OSError:
                time.sleep(0.1)
        m = json.loads((run / "manifest.json").read_text())
        m["shards"] = m["shards"][:shards] if shards else m["shards"]
        m.pop("files", None)
        m["seal"] = manifest_seal(m)
        files = [(e["file"], (run / e["file"]).read_bytes) for e in m["shards"]]
        for name, data in files + [("manifest.json", lambda: json.dumps(m).encode())]:
            # octet-stream: the emulator parses a JSON body as the object's metadata
            post(f"/upload/storage/v1/b/bench/o?uploadType=media&name=run/{name}", data(),
                 "application/octet-stream")
    except BaseException:
        proc.terminate()
        raise
    return proc, "gs://bench/run"


def upload(client, directory: Path, prefix: str) -> str:
    for p in sorted(directory.iterdir()):
        client.upload_file(str(p), "bench", f"{prefix}/{p.name}")
    return f"s3://bench/{prefix}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shards", type=Path, help="a finished run directory")
    ap.add_argument("--tree", type=Path, help="build the shards from this source tree")
    ap.add_argument("--copies", type=int, default=6)
    ap.add_argument("--sample", type=int, default=300, help="shuffled rows timed for ShardDataset")
    ap.add_argument("--factor", type=int, default=10, help="shard count multiple, synthetic")
    ap.add_argument("--no-s3", action="store_true")
    ap.add_argument("--gcs", action="store_true", help="also read from gcp-storage-emulator")
    ap.add_argument("--gcs-shards", type=int, default=0, help="shards uploaded to it (0: all)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-loader-"))
    try:
        run = args.shards or build(args.tree, args.copies, tmp / "run")
        index = ShardIndex.open(run)
        print(f"shards: {len(index.shards)} files, {index.shard_bytes / MB:,.0f} MB, {index.blocks:,} "
              f"record batches, {index.rows:,} rows")
        rows = [("local", "streaming, 1 rank", streaming(str(run))),
                ("local", "streaming, 2 ranks (bytes summed)", streaming(str(run), 2)),
                ("local", "ShardDataset, shuffled", random_access(str(run), args.sample, index))]
        old = without_counts(run, tmp / "old")
        t = time.perf_counter()
        ShardIndex.open(old)
        footers = time.perf_counter() - t
        n, syn = synthetic(run, tmp / "syn", args.factor)
        t = time.perf_counter()
        ShardIndex.open(syn)
        starts = [("local", f"manifest, {len(index.shards)} shards", rows[0][2]["startup"]),
                  ("local", f"manifest without batch_rows (footers), {len(index.shards)} shards", footers),
                  ("local", f"synthetic manifest, {n:,} shards", time.perf_counter() - t)]
        if not args.no_s3:
            proc, client = moto()
            try:
                url = upload(client, run, "run")
                s3_index = ShardIndex.open(url)
                rows += [("s3", "streaming, 1 rank", streaming(url)),
                         ("s3", "streaming, 2 ranks (bytes summed)", streaming(url, 2)),
                         ("s3", "ShardDataset, shuffled", random_access(url, args.sample // 3, s3_index))]
                n, syn = synthetic(run, tmp / "syn-s3", args.factor, put=True)
                for k in range(n):
                    client.put_object(Bucket="bench", Key=f"syn/shard-{k:05d}.arrow", Body=bytes(16))
                client.upload_file(str(syn / "manifest.json"), "bench", "syn/manifest.json")
                t = time.perf_counter()
                ShardIndex.open("s3://bench/syn")
                starts.append(("s3", f"synthetic manifest, {n:,} shards", time.perf_counter() - t))
            finally:
                proc.terminate()
        if args.gcs:
            proc, url = gcs_emulator(run, args.gcs_shards)
            try:
                gcs_index = ShardIndex.open(url)
                print(f"gcs: {len(gcs_index.shards)} shards, {gcs_index.shard_bytes / MB:,.0f} MB")
                rows += [("gcs", "streaming, 1 rank", streaming(url)),
                         ("gcs", "streaming, 2 ranks (bytes summed)", streaming(url, 2)),
                         ("gcs", "ShardDataset, shuffled", random_access(url, args.sample // 3, gcs_index))]
            finally:
                proc.terminate()
        print("\n| store | reader | start-up s | rows/s | MB/s read | bytes read per epoch | "
              "x shard bytes |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for store, name, r in rows:
            print(f"| {store} | {name} | {r['startup']:.2f} | {r['rows_s']:,.0f} | {r['mb_s']:,.0f} | "
                  f"{r['epoch_bytes'] / MB:,.0f} MB | {r['ratio']:.3f} |")
        print("\n| store | start-up of the streaming reader | seconds |\n|---|---|---:|")
        for store, name, s in starts:
            print(f"| {store} | {name} | {s:.3f} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
