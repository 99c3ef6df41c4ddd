"""Workers' local scratch: every scratch file and folder fewtrunc names is swept once its process
is gone (by pid and age), and a writer's local copies of spill files go when its engine ends the
stage (``release_copies``) or a partition (``SpillStore.retain``)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

from pipelines.infra.atomic import scratch_dir, sweep_scratch, write_bytes
from pipelines.steps.gather import SpillStore, release_copies
from pipelines.steps.spill import SUFFIX, unit_path
from pipelines.infra.storage.paths import as_path

_KILLED = """
import os, tempfile
from pipelines.infra.atomic import scratch_dir, temp_name, write_bytes
from pipelines.infra.storage.reading import local_copy
scratch = tempfile.gettempdir()
d = scratch_dir("spill")
open(os.path.join(d, "unit-00001.tokens16"), "wb").write(b"copy of a spill file")
for name in ("manifest.json", "docs.doc_id.npy", "partitions.json", "lengths.png"):
    open(os.path.join(scratch, temp_name(name).name), "wb").write(b"x")
write_bytes("memory://bucket/in/big.parquet", b"a Parquet input")
reading = local_copy("memory://bucket/in/big.parquet")
reading.__enter__()  # being read when the worker is killed
print(os.getpid(), flush=True)
os.kill(os.getpid(), 9)
"""


def test_every_scratch_name_of_a_killed_worker_is_swept(tmp_path, monkeypatch):
    """A writer killed with a folder of spill copies and published-file temporaries (a run's
    files on a store): the next sweep removes all of it once its pid is gone and it is old
    enough; a live process's, a young one's and names fewtrunc never makes stay."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", _KILLED], env={**os.environ,
                          "TMPDIR": str(tmp_path)}, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    dead = int(proc.stdout.split()[0])
    killed = sorted(p.name for p in tmp_path.iterdir())
    assert len(killed) == 6 and f"fewtrunc-spill-{dead}-" in " ".join(killed)
    mine = scratch_dir("copy")  # this process: alive
    others = [f"fewtrunc-spill-{dead}", "fewtrunc-spill-k2bx0sk", f".notes.txt.tmp-{dead}-0123abcd",
              f"fewtrunc-{dead}.yaml"]  # not names of fewtrunc's scratch
    for name in others:
        (tmp_path / name).write_bytes(b"x")
    old = time.time() - 3600
    for path in tmp_path.iterdir():
        os.utime(path, (old, old))
    young = tmp_path / f"fewtrunc-ids-{dead}-abc"
    young.mkdir()
    gone = sweep_scratch(min_age_s=600)
    assert sorted(p.name for p in gone) == killed
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [os.path.basename(mine), *others, young.name])


def test_a_writers_copies_go_with_its_stage_and_its_partition(tmp_path, monkeypatch):
    """Spill files on a store are copied to scratch once per writer; ``retain`` drops the units
    a writer no longer reads, ``release_copies`` every copy (a later gather copies again)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    work = as_path("memory://fewtrunc-scratch-test/_work")
    tokens = [np.arange(u * 100, u * 100 + 50, dtype=np.uint16) for u in range(3)]
    for u, t in enumerate(tokens):
        write_bytes(unit_path(work, u, SUFFIX[np.dtype(np.uint16)]), t.tobytes())
    store = SpillStore(work, 3)

    def gather(*units):
        u = np.array(units, np.int64)
        got = store.gather(u, np.zeros(u.size, np.int64), np.full(u.size, 5, np.int64))
        assert got.tolist() == np.concatenate([tokens[x][:5] for x in units]).tolist()

    def copies():
        return sorted(f for d in tmp_path.iterdir() if d.name.startswith("fewtrunc-spill-")
                      for f in os.listdir(d))

    gather(0, 1, 2)
    assert copies() == ["unit-00000.tokens16", "unit-00001.tokens16", "unit-00002.tokens16"]
    store.retain([2])
    assert copies() == ["unit-00002.tokens16"]
    gather(1, 2)
    assert copies() == ["unit-00001.tokens16", "unit-00002.tokens16"]
    release_copies()
    assert not [d for d in tmp_path.iterdir() if d.name.startswith("fewtrunc-")]
    gather(0)
    assert copies() == ["unit-00000.tokens16"]
    release_copies()
