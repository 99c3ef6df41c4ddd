"""Denied access and the exclusive output lock on S3, against real servers on 127.0.0.1.

- Denied access (moto's server in a process of its own that checks signatures and IAM policies):
  ``fewtrunc run`` reading a bucket its credentials may not read, writing one they may not write,
  or with keys the store does not know, ends with one line ``fewtrunc run: error: ...`` naming the
  URL, before any work. gcp-storage-emulator checks no credentials: for GCS, an endpoint on
  127.0.0.1 answers every request as GCS answers a caller without the IAM role (403 and its JSON
  error), reached through pyarrow's own GCS client, so what the user sees is tested end to end.
- The lock object on S3 is created with a conditional PUT: of runs of different configs starting
  at once on one ``output.dir``, exactly one proceeds; runs of the same config take it over.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipelines.infra import atomic, storage
from pipelines.infra.errors import OutputError
from pipelines.output_lock import LOCK, _parse, lock_output, release_output
from pipelines.infra.storage.paths import UrlPath
from tests.pipelines.conftest import base_overrides
from tests.pipelines.object_stores import Store, s3_auth_server, s3_server  # noqa: F401

DOCS = b"".join(b'{"text": "document %d: a few words to tokenize"}\n' % i for i in range(20))


def arns(*buckets: str) -> list[str]:
    return [a for b in buckets for a in (f"arn:aws:s3:::{b}", f"arn:aws:s3:::{b}/*")]


# reading: moto names HeadBucket's permission s3:HeadBucket (AWS checks s3:ListBucket)
READ = ["s3:GetObject", "s3:ListBucket", "s3:HeadBucket"]


def fewtrunc_run(overrides: list[str], store_env: dict, tmp_path) -> str:
    """``fewtrunc run`` in a process of its own with ``store_env``; asserts it failed, and
    returns its one error line."""
    config = tmp_path / "run.yaml"
    config.write_text("pack: {seq_len: 256}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "STORAGE_EMU"))}
    env["FEWTRUNC_CRASH"] = ""
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", str(config), *overrides,
                           "--quiet"], env={**env, **store_env}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fewtrunc run: error: "), done.stderr
    return lines[0]


class _GcsForbidden(BaseHTTPRequestHandler):
    """GCS's answer to a caller without the role: 403 with the JSON API's error body."""

    def _deny(self):
        body = json.dumps({"error": {"code": 403, "message": "caller does not have "
                           "storage.objects.list access to the Google Cloud Storage bucket.",
                           "errors": [{"reason": "forbidden", "domain": "global"}]}}).encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _deny

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def gcs_forbidden():
    pytest.importorskip("pyarrow.fs").GcsFileSystem  # noqa: B018 - pyarrow built without GCS
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _GcsForbidden)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{srv.server_address[1]}"}
    finally:
        srv.shutdown()
        srv.server_close()


def test_gcs_denied_input_and_output_are_one_line_naming_the_url(gcs_forbidden, tmp_path):
    out = tmp_path / "out"
    line = fewtrunc_run(base_overrides(out, "gs://corpus/in/*.jsonl"), gcs_forbidden, tmp_path)
    assert "'gs://corpus/in/*.jsonl': access denied" in line, line
    assert "GOOGLE_APPLICATION_CREDENTIALS" in line and "AWS_" not in line, line
    assert not out.exists()
    data = tmp_path / "a.jsonl"
    data.write_bytes(DOCS)
    line = fewtrunc_run(base_overrides("gs://runs/out", str(data)), gcs_forbidden, tmp_path)
    assert "gs://runs/out" in line and "access denied" in line, line


def bucket(server, name: str) -> str:
    name = f"{name}-{uuid.uuid4().hex[:8]}"
    server.create_bucket(name)
    return name


def test_an_input_it_may_not_read_is_one_line_before_any_work(s3_auth_server, tmp_path):
    """Allowed everything on its own bucket, nothing on the corpus's; then keys the store does
    not know at all."""
    srv = s3_auth_server
    secret, mine = bucket(srv, "secret"), bucket(srv, "mine")
    srv.put(f"s3://{secret}/in/a.jsonl", DOCS)
    out = tmp_path / "out"
    for env in (srv.user(["s3:*"], arns(mine)),
                {**srv.user(["s3:*"], arns(mine)), "AWS_ACCESS_KEY_ID": "AKIAUNKNOWN000000000"}):
        line = fewtrunc_run(base_overrides(out, f"s3://{secret}/in/*.jsonl"), env, tmp_path)
        assert f"s3://{secret}/in" in line and "access denied to read it" in line, line
        assert not out.exists()  # nothing done: the plan stopped at the input


def test_an_output_dir_it_may_not_write_is_one_line_before_any_work(s3_auth_server, tmp_path):
    """Allowed to read a bucket, not to write it: the corpus is read from it, and output.dir on
    it is refused at its first write (the lock), before any input is tokenized."""
    srv = s3_auth_server
    shelf = bucket(srv, "shelf")
    srv.put(f"s3://{shelf}/in/a.jsonl", DOCS)
    env = srv.user(READ, arns(shelf))
    out = f"s3://{shelf}/out"
    line = fewtrunc_run(base_overrides(out, f"s3://{shelf}/in/*.jsonl"), env, tmp_path)
    assert f"error: output.dir {out!r}: {out}/{LOCK}: access denied to write it" in line, line
    listed = srv.client("s3", srv.admin).list_objects_v2(Bucket=shelf)["Contents"]
    assert [o["Key"] for o in listed] == ["in/a.jsonl"]


def test_denied_calls_name_the_url_and_say_read_or_write(s3_auth_server, monkeypatch):
    srv = s3_auth_server
    shelf = bucket(srv, "shelf")
    srv.put(f"s3://{shelf}/a.jsonl", DOCS)
    for k, v in srv.user(["s3:GetObject"], arns(shelf)).items():
        monkeypatch.setenv(k, v)
    assert storage.read_bytes(f"s3://{shelf}/a.jsonl") == DOCS
    for call, url in ((lambda u: atomic.write_text(u, "x"), f"s3://{shelf}/b.txt"),
                      (storage.remove, f"s3://{shelf}/a.jsonl")):
        with pytest.raises(storage.StorageError) as exc:
            call(url)
        text = str(exc.value)
        assert "\n" not in text and text.startswith(url), text
        assert "access denied to write it: unknown credentials, or not allowed (check " \
               "AWS_ACCESS_KEY_ID" in text, text
    with pytest.raises(OutputError, match=rf"^output.dir 's3://{shelf}/out': s3://{shelf}/out/"
                                          rf"{LOCK}: access denied to write it: "):
        lock_output(UrlPath(f"s3://{shelf}/out"), "fp")


@pytest.fixture()
def s3(s3_server, monkeypatch):
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    return Store(s3_server)


def _contend(base: str, fingerprints: list[str], barrier, results) -> None:
    """One run per round: take the lock of ``base/ROUND`` with that round's fingerprint at the
    moment every other contender does."""
    from pipelines.infra.storage.locking import conditional_object

    conditional_object(f"{base}/warm").read()  # the client made before the race, not in it
    for rnd, fp in enumerate(fingerprints):
        barrier.wait(60)
        try:
            lock_output(UrlPath(f"{base}/{rnd}"), fp)
            results.put((rnd, fp, "took"))
        except OutputError as exc:
            results.put((rnd, fp, str(exc)))
        except Exception as exc:  # noqa: BLE001 (reported, not lost in the child)
            results.put((rnd, fp, f"failed: {exc!r}"))


def test_runs_of_different_configs_starting_at_once_one_proceeds(s3):
    """Four runs race for each output.dir: with four configs exactly one takes the lock, the
    others are refused naming it; with two configs run twice each, both runs of one config
    proceed (the same run, restarted elsewhere) and the other config's are refused."""
    from pipelines.infra.storage.locking import conditional_object

    assert conditional_object(s3.url("x")).exclusive  # S3: the conditional PUT, not a stat
    n, distinct, paired = 4, 4, 3
    plans = [[f"fp{i}"] * distinct + [f"fp{i % 2}"] * paired for i in range(n)]
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_contend, args=(s3.url("race"), plan, barrier, results))
             for plan in plans]
    for p in procs:
        p.start()
    try:
        got = [results.get(timeout=60) for _ in range(n * (distinct + paired))]
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    for rnd in range(distinct + paired):
        outcome = {fp: said for r, fp, said in got if r == rnd}
        took = sorted(fp for r, fp, said in got if r == rnd and said == "took")
        refused = [said for r, fp, said in got if r == rnd and said != "took"]
        held = _parse(storage.read_bytes(s3.url("race", str(rnd), LOCK)))
        assert len(set(took)) == 1 and held["fingerprint"] == took[0], (rnd, outcome)
        assert len(took) == (1 if rnd < distinct else 2), (rnd, got)
        assert all("is in use by another fewtrunc run (pid " in s for s in refused), refused


def test_the_lock_is_taken_over_by_its_own_run_and_released_only_by_its_holder(s3):
    out = UrlPath(s3.url("out"))
    url = s3.url("out", LOCK)
    lock_output(out, "a")
    mine = _parse(storage.read_bytes(url))
    assert mine["fingerprint"] == "a" and mine["holder"].startswith(f"pid {os.getpid()} ")
    release_output(out)
    assert not storage.exists(url)
    atomic.write_json(url, {"fingerprint": "a", "holder": "pid 1 on gone"})  # a killed run
    lock_output(out, "a")  # restarted: taken over
    assert _parse(storage.read_bytes(url))["holder"].startswith(f"pid {os.getpid()} ")
    atomic.write_json(url, {"fingerprint": "a", "holder": "pid 2 on elsewhere"})  # taken again
    release_output(out)
    assert _parse(storage.read_bytes(url))["holder"] == "pid 2 on elsewhere"  # not ours: kept
    with pytest.raises(OutputError, match=r"in use by another fewtrunc run \(pid 2 on elsewhere"):
        lock_output(out, "b")
    storage.remove(url)
    lock_output(out, "b")  # released by its holder: another config may start
    assert _parse(storage.read_bytes(url))["fingerprint"] == "b"
    release_output(out)
    assert not storage.exists(url)
