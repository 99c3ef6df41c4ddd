"""Scratch files of killed writers (a run on a store spills and writes shards on local scratch,
then uploads): the next worker on the machine removes those whose writer is gone, and nothing
else."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

from pipelines.infra.atomic import sweep_scratch, temp_name

_WRITER = """
import os, tempfile
from pipelines.infra.atomic import temp_name
for name in ("unit-00001.tokens16", "shard-00002.arrow"):
    path = os.path.join(tempfile.gettempdir(), temp_name(name).name)
    with open(path, "wb") as f:
        f.write(b"half a file")
print(os.getpid(), flush=True)
os.kill(os.getpid(), 9)
"""


def test_a_killed_writers_scratch_is_swept_and_nothing_else(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", _WRITER], env={**os.environ,
                          "TMPDIR": str(tmp_path)}, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    dead = int(proc.stdout.split()[0])
    killed = sorted(p.name for p in tmp_path.iterdir())
    assert len(killed) == 2 and all(f".tmp-{dead}-" in n for n in killed)
    mine = tmp_path / temp_name("unit-00003.tokens16").name  # this process: alive
    foreign = tmp_path / f".notes.txt.tmp-{dead}-0123abcd"  # not a fewtrunc work file
    for path in (mine, foreign):
        path.write_bytes(b"x")
    old = time.time() - 3600
    for path in tmp_path.iterdir():
        os.utime(path, (old, old))
    young = tmp_path / f".unit-00004.tokens.tmp-{dead}-89abcdef"  # dead, but just written
    young.write_bytes(b"x")
    gone = sweep_scratch(min_age_s=600)
    assert sorted(p.name for p in gone) == killed
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, foreign.name,
                                                                  young.name])
    assert sweep_scratch(min_age_s=600) == []
