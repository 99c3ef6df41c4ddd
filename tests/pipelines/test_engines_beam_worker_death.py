"""A Beam DirectRunner worker process killed mid-run (``FEWTRUNC_CRASH`` makes the worker that
reaches a point SIGKILL itself, exactly as ``kill -9`` would): the run ends with one line saying a
worker died and that a rerun resumes, stops the surviving worker, and the rerun writes the local
engine's bytes. While tokenizing, the runner raised a raw ``Channel closed prematurely``
traceback; while writing, it waited forever for the dead worker's answer."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import pipelines
from tests.pipelines.test_engines_equivalence import (assert_same_output, job_config,
                                                      make_corpus, write_config)

pytestmark = pytest.mark.slow


def _marked(mark: str) -> list[int]:
    """Processes whose environment carries ``mark`` (the run's and every worker it started)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if mark.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.parametrize("crash", ["unit:1", "shard:1"])
def test_a_killed_beam_worker_ends_the_run_in_one_line_and_the_rerun_resumes(tmp_path, crash):
    paths = make_corpus(tmp_path)
    want = tmp_path / "local"
    pipelines.run(job_config(paths, want))
    out = tmp_path / "beam"
    config = write_config(tmp_path / "beam.yaml", job_config(paths, out))
    cmd = [sys.executable, "-m", "pipelines.cli", "run", str(config), "engine=beam",
           "beam.num_workers=2", "--quiet"]
    mark = f"FEWTRUNC_TEST_MARK={uuid.uuid4().hex}"
    env = {**os.environ, "FEWTRUNC_CRASH": crash, mark.split("=")[0]: mark.split("=")[1]}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("fewtrunc run: error: Beam: a worker process died mid-run"), lines
    assert "rerun the same command to resume" in lines[0]
    deadline = time.monotonic() + 20  # the surviving worker was stopped: none is left
    while _marked(mark) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _marked(mark), "a Beam worker process outlived its run"
    again = subprocess.run(cmd, env={**os.environ, "FEWTRUNC_CRASH": ""}, capture_output=True,
                           text=True, timeout=240)
    assert again.returncode == 0, again.stderr[-3000:]
    assert_same_output(out, want)
