"""Object-store throughput of the two candidate clients, against the same local servers the tests
use (moto's S3 server, gcp-storage-emulator): pyarrow.fs (what ``pipelines.infra.storage`` uses) and
fsspec's s3fs/gcsfs, where installed.

    python benchmarks/bench_storage.py                 # 64 MiB object, 500 small objects
    python benchmarks/bench_storage.py --mib 256 --repeat 3
    python benchmarks/bench_storage.py --spill         # how a shard writer reads a spill file

Each row is the best of --repeat runs: upload one object, read it back (1 MiB reads, 8 MiB
requests), list and stat a prefix of small objects. Both servers are single-process Python, so
the absolute numbers are the servers' more than the clients'; the ratio between clients on the
same server is the measurement.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.pipelines.object_stores import GcsServer, S3Server, environment  # noqa: E402


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


BUFFER = 8 << 20  # both clients: pipelines.infra.storage.reading.BUFFER


def spill_reads() -> None:
    """A shard gathers scattered segments of a unit's spill file: copy the file to local scratch
    once and read there (what ``SpillStore`` does on a store), or one ranged read per segment."""
    import shutil
    import tempfile

    import numpy as np

    from pipelines.infra import atomic, storage
    from pipelines.infra.storage.filesystems import resolve

    server = S3Server()
    try:
        server.create_bucket("benchspill")
        with environment(server.env):
            n_tok = 8 << 20  # uint16 ids: a 16 MiB unit file
            url = "s3://benchspill/_work/unit-00000.tokens16"
            atomic.write_bytes(url, np.random.default_rng(0).integers(
                0, 50_000, n_tok, dtype=np.uint16).tobytes())
            rng = np.random.default_rng(1)
            print("| segments (mean tokens) | copy to scratch + pread | ranged read_at |")
            print("|---|---|---|")
            for nseg, mean in ((400, 1000), (4000, 100)):
                starts = rng.integers(0, n_tok - 2 * mean, nseg)
                lens = rng.integers(1, 2 * mean, nseg)
                t = time.perf_counter()
                scratch = tempfile.mkdtemp()
                local = os.path.join(scratch, "unit")
                with open(local, "wb") as out, storage.open_input(url) as f:
                    shutil.copyfileobj(f, out, BUFFER)
                fd = os.open(local, os.O_RDONLY)
                for a, n in zip(starts.tolist(), lens.tolist()):
                    os.pread(fd, n * 2, a * 2)
                os.close(fd)
                shutil.rmtree(scratch)
                copied = time.perf_counter() - t
                t = time.perf_counter()
                loc = resolve(url)
                with loc.fs.open_input_file(loc.path) as f:
                    for a, n in zip(starts.tolist(), lens.tolist()):
                        f.read_at(n * 2, a * 2)
                ranged = time.perf_counter() - t
                print(f"| {nseg} ({mean}) | {copied:.2f} s | {ranged:.2f} s "
                      f"({ranged / nseg * 1e3:.1f} ms a request) |", flush=True)
    finally:
        server.stop()


def pyarrow_client(root: str, blob: bytes, small: int):
    from pipelines.infra import atomic, storage

    def put():
        atomic.write_bytes(f"{root}/big.bin", blob)

    def get():
        with storage.open_input(f"{root}/big.bin", BUFFER) as f:
            while f.read(1 << 20):
                pass

    def populate():
        for i in range(small):
            atomic.write_bytes(f"{root}/small/{i:05d}.jsonl", b"{}\n")

    def listing():
        assert len(storage.list_files(f"{root}/small")) == small

    return put, get, populate, listing


def fsspec_client(root: str, blob: bytes, small: int, server):
    import fsspec

    if server.scheme == "s3":
        fs = fsspec.filesystem("s3", client_kwargs={"endpoint_url": server.endpoint},
                               key="testing", secret="testing")
    else:
        fs = fsspec.filesystem("gcs", endpoint_url=server.endpoint, token="anon")

    def put():
        with fs.open(f"{root}/big-fsspec.bin", "wb") as f:
            f.write(blob)

    def get():
        with fs.open(f"{root}/big-fsspec.bin", "rb", block_size=BUFFER) as f:
            while f.read(1 << 20):
                pass

    def populate():
        pass  # listed: the objects pyarrow wrote

    def listing():
        fs.invalidate_cache()
        assert len(fs.find(f"{root}/small", detail=True)) == small

    return put, get, populate, listing


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--small", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--spill", action="store_true", help="spill-file reads on S3 instead")
    args = ap.parse_args()
    if args.spill:
        return spill_reads()
    blob = os.urandom(args.mib << 20)
    print(f"| store | client | upload {args.mib} MiB | MiB/s | read {args.mib} MiB | MiB/s "
          f"| list+stat {args.small} |")
    print("|---|---|---|---|---|---|---|")
    for cls in (S3Server, GcsServer):
        server = cls()
        try:
            bucket = f"bench{server.scheme}"
            server.create_bucket(bucket)
            with environment(server.env):
                clients = [("pyarrow.fs", pyarrow_client(f"{server.scheme}://{bucket}", blob,
                                                         args.small))]
                lib = "s3fs" if server.scheme == "s3" else "gcsfs"
                try:
                    __import__(lib)
                    clients.append((f"fsspec {lib}", fsspec_client(bucket, blob, args.small,
                                                                    server)))
                except ImportError:
                    print(f"| {server.scheme} | fsspec {lib} | not installed | | | | |")
                clients[0][1][2]()  # the small objects, once
                for name, (put, get, _, listing) in clients:
                    up = best(put, args.repeat)
                    down = best(get, args.repeat)
                    ls = best(listing, args.repeat)
                    print(f"| {server.scheme} | {name} | {up:.2f} s | {args.mib / up:.0f} "
                          f"| {down:.2f} s | {args.mib / down:.0f} | {ls:.3f} s |", flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
