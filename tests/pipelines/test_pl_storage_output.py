"""output.dir (with _work/) on S3 or GCS (real protocol servers on 127.0.0.1): a local-engine run
writes the shards of the same run on a local disk, byte for byte; a rerun changes nothing; a run
killed (SIGKILL) while writing resumes to the same bytes; verify, inspect and report read it, and
training reads its shards. The corpus is packed in two partitions (pack.partition_chunks), so the
partitioned pack's work files cross the store too."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile

import pytest

import pipelines
from pipelines.infra import atomic, storage
from pipelines.infra.errors import FewtruncError
from tests.pipelines.conftest import base_overrides, english_records, write_jsonl
from tests.pipelines.object_stores import gcs_server, object_store, s3_server  # noqa: F401

SKIP = ("timings.json", "config.yaml", "manifest.json")  # these name output.dir


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    recs = [{"text": r["text"], "id": i} for i, r in enumerate(english_records(80))]
    write_jsonl(root / "a.jsonl.gz", recs[:40], "gz")
    write_jsonl(root / "b.jsonl", recs[40:], None)
    return root


def overrides(out, corpus, **extra) -> list[str]:
    return base_overrides(out, f"{corpus}/*.jsonl*", **{"input.id_field": "id",
                                                       "input.unit_bytes": 20_000,
                                                       "output.report": "true",
                                                       "pack.partition_chunks": 40, **extra})


@pytest.fixture(scope="module")
def local_run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "out"
    pipelines.run(None, overrides(out, corpus))
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())
            if p.is_file() and p.name not in SKIP}


def store_files(url: str) -> dict:
    found = {}
    for key, _ in storage.list_files(url):
        name = key[len(url) + 1:]
        if name not in SKIP:
            found[name] = storage.read_bytes(key)
    return found


def test_output_on_a_store_is_the_local_run(object_store, corpus, local_run, capsys):
    """... and a rerun changes nothing; verify, inspect and report read the run's URL."""
    from pipelines.cli import main

    out = object_store.url("runs/out")
    result = pipelines.run(None, overrides(out, corpus))
    assert result["status"] == "complete"
    assert sum(n.endswith(".arrow") for n in local_run) >= 3
    assert store_files(out) == local_run  # no _work/, no lock object left
    assert storage.exists(f"{out}/manifest.json")
    again = pipelines.run(None, overrides(out, corpus))
    assert again["status"] == "already complete" and store_files(out) == local_run
    assert main(["verify", out]) == 0
    assert main(["inspect", out, "--row", "0"]) == 0
    assert main(["report", out]) == 0
    assert "ok:" in capsys.readouterr().out
    storage.remove(f"{out}/shard-00001.arrow")
    assert main(["verify", out]) == 1
    assert "shard-00001.arrow" in capsys.readouterr().out


def cli(args: list[str], env: dict, crash: str = "", timeout: float = 240, config=None):
    """``fewtrunc run CONFIG ARGS`` in a subprocess (``CONFIG``: a one-key file by default)."""
    with tempfile.TemporaryDirectory(dir=env.get("TMPDIR")) as scratch:
        if config is None:  # a one-key file of its own, removed after the call
            config = os.path.join(scratch, "run.yaml")
            with open(config, "w") as f:
                f.write("pack: {seq_len: 256}\n")
        return subprocess.run([sys.executable, "-m", "pipelines.cli", "run", config, *args,
                               "--quiet"], env={**env, "FEWTRUNC_CRASH": crash},
                              capture_output=True, text=True, timeout=timeout)


@pytest.fixture()
def s3(s3_server, monkeypatch):
    """A fresh bucket on the S3 server, the environment pointing at it."""
    from tests.pipelines.object_stores import Store

    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    return Store(s3_server)


def test_killed_on_s3_resumes_to_the_same_bytes(s3, corpus, local_run):
    """SIGKILL after a unit is spilled, then after a shard and its marker are published (two
    partitions of consecutive units: pack.partition_chunks): each restart takes over the run
    (its lock object names the same fingerprint) and the result is the uninterrupted run's."""
    out = s3.url("killed")
    args = overrides(out, corpus)
    for crash in ("unit:1", "shard:1"):
        killed = cli(args, dict(os.environ), crash)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert not storage.exists(f"{out}/manifest.json")
        assert storage.exists(f"{out}/_work/run.json")
    resumed = cli(args, dict(os.environ))
    assert resumed.returncode == 0, resumed.stderr
    assert store_files(out) == local_run


def test_another_run_on_the_same_url_is_refused(s3, corpus):
    """A lock object of another fingerprint: refused before any work, naming its holder."""
    from pipelines.infra import atomic

    out = s3.url("busy")
    atomic.write_json(f"{out}/.fewtrunc.lock", {"fingerprint": "other", "holder": "pid 1 on x"})
    with pytest.raises(FewtruncError, match=r"in use by another fewtrunc run \(pid 1 on x"):
        pipelines.run(None, overrides(out, corpus))
    assert [u for u, _ in storage.list_files(out)] == [f"{out}/.fewtrunc.lock"]


def test_a_missing_bucket_is_one_line_before_any_work(s3, corpus):
    with pytest.raises(FewtruncError, match=r"s3://no-such-bucket-fewtrunc/out.*bucket "
                                             r"'no-such-bucket-fewtrunc' does not exist"):
        pipelines.run(None, overrides("s3://no-such-bucket-fewtrunc/out", corpus))


def test_training_reads_shards_on_a_store(object_store, corpus, tmp_path):
    """``data.dir`` as a URL: the dataset reads each record batch with ranged requests, and
    gives the rows of the same shards on a local disk."""
    pytest.importorskip("torch")
    from training.data import ShardDataset

    local = tmp_path / "local"
    pipelines.run(None, overrides(local, corpus))
    for p in sorted(local.glob("shard-*.arrow")):
        atomic.write_bytes(object_store.url("data", p.name), p.read_bytes())
    want, got = ShardDataset(local), ShardDataset(object_store.url("data"))
    assert len(got) == len(want) > 0
    for i in (0, len(want) // 2, len(want) - 1):
        assert all((got[i][k] == want[i][k]).all() for k in ("input_ids", "doc_ids"))


def test_an_output_dir_inside_an_input_prefix_is_refused(s3, corpus):
    from pipelines.infra.errors import ConfigError

    atomic.write_bytes(s3.url("in", "a.jsonl.gz"), (corpus / "a.jsonl.gz").read_bytes())
    with pytest.raises(ConfigError, match="is inside input.paths"):  # a prefix: a file tree
        pipelines.run(None, base_overrides(s3.url("in/out"), s3.url("in")))
