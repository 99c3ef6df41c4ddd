"""A run really killed (SIGKILL, in a subprocess) at every kind of point resumes to the bytes of
an uninterrupted run; markers make a finished run a no-op."""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml

import pipelines
from pipelines.infra.errors import ConfigError
from tests.pipelines.conftest import english_records, file_bytes, write_jsonl


@pytest.fixture()
def job(tmp_path):
    recs = [{"text": r["text"]} for r in english_records()]
    a = write_jsonl(tmp_path / "a.jsonl.zst", recs[:100], "zst")
    b = write_jsonl(tmp_path / "b.jsonl.gz", recs[100:], "gz")
    cfg = {
        "input": {"paths": [str(a), str(b), "{stdlib}/json"], "include": ["*.py"],
                  "unit_bytes": 60_000},
        "pack": {"seq_len": 512},
        "output": {"dir": str(tmp_path / "out"), "rows_per_shard": 64, "report": True},
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, tmp_path / "out"


def _cli(config, crash=None, wait=True):
    env = {**os.environ, "FEWTRUNC_CRASH": crash or ""}
    cmd = [sys.executable, "-m", "pipelines.cli", "run", str(config), "--quiet"]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    return subprocess.run(cmd, env=env, capture_output=True, text=True)


@pytest.fixture()
def reference(job):
    config, out = job
    assert _cli(config).returncode == 0
    ref = file_bytes(out)
    assert sum(k.endswith(".arrow") for k in ref) >= 3
    shutil.rmtree(out)
    return ref


@pytest.mark.parametrize("crash", ["unit:1", "shard_tmp:1", "shard:2", "manifest:0"])
def test_killed_at_a_point_resumes_identical(job, reference, crash):
    config, out = job
    killed = _cli(config, crash)
    assert killed.returncode == -signal.SIGKILL
    assert not (out / "manifest.json").exists()
    if crash == "shard_tmp:1":  # killed while shard 1 was written: only its temporary exists
        assert not (out / "shard-00001.arrow").exists()
        assert list(out.glob(".shard-00001.arrow.tmp-*"))
    resumed = _cli(config)
    assert resumed.returncode == 0, resumed.stderr
    assert file_bytes(out) == reference
    assert not (out / "_work").exists()
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


def test_killed_at_random_moments_resumes_identical(job, reference):
    config, out = job
    for delay in (0.6, 1.2, 1.8):
        proc = _cli(config, wait=False)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert _cli(config).returncode == 0
    assert file_bytes(out) == reference


def test_unfinished_run_with_another_config_is_refused(job):
    config, out = job
    assert _cli(config, "unit:0").returncode == -signal.SIGKILL
    with pytest.raises(ConfigError, match="unfinished run"):  # the tokens would differ
        pipelines.run(config, ["tokenizer.add_bos=true"])


def test_finished_run_with_another_config_is_refused(job):
    config, out = job
    done = _cli(config)
    assert done.returncode == 0, done.stderr
    with pytest.raises(ConfigError, match="finished run"):
        pipelines.run(config, ["pack.algorithm=ffd"])
    again = pipelines.run(config)
    assert again["status"] == "already complete", again
