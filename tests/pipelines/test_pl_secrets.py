"""Credentials in URLs never reach a file, the terminal or an error line (issue 21, point 5).

Real runs of ``fewtrunc run`` in a subprocess: a tokenizer.json served over HTTP behind basic auth
(``http://user:pass@host/``), an input on moto's S3 server whose URL carries presigned-URL
parameters, and failing inputs whose URLs hold secrets. Every output file (bytes) and both
streams are searched for each secret string.
"""
from __future__ import annotations

import base64
import http.server
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import pipelines
from pipelines.config import load_run_config
from pipelines.infra.errors import ConfigError, InputError
from pipelines.infra.storage.errors import StorageError
from pipelines.infra.storage.redact import SECRET_PARAMS, redact_text
from tests.pipelines.conftest import base_overrides, english_records, write_jsonl
from tests.pipelines.object_stores import s3_server  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "pw-SECRET-4d1f"
SIGNATURE = "sig-SECRET-9a7c"
CREDENTIAL = "cred-SECRET-51e2"


def fewtrunc(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def assert_nowhere(secrets: tuple, proc: subprocess.CompletedProcess, out: Path | None = None):
    for secret in secrets:
        assert secret not in proc.stdout and secret not in proc.stderr, (secret, proc.stderr)
        if out is not None and out.exists():
            for path in out.rglob("*"):
                if path.is_file():
                    assert secret.encode() not in path.read_bytes(), (secret, path)


def corpus(tmp_path: Path) -> Path:
    """12 documents and one line that is not JSON (a reject naming its file)."""
    path = write_jsonl(tmp_path / "docs.jsonl", english_records(12))
    path.write_text(path.read_text() + "{not json\n")
    return path


@pytest.fixture
def tokenizer_server(tmp_path):
    """GPT-2's tokenizer.json over HTTP, only for basic auth user:PASSWORD."""
    from pipelines.infra.tokenizer import load_tokenizer

    body = load_tokenizer().to_str().encode()
    wanted = "Basic " + base64.b64encode(f"user:{PASSWORD}".encode()).decode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self, send_body: bool):
            found = self.path == "/tok.json"
            ok = self.headers.get("Authorization") == wanted
            self.send_response(200 if ok and found else 401 if not ok else 404)
            self.send_header("Content-Length", str(len(body) if ok and found else 0))
            self.end_headers()
            if send_body and ok and found:
                self.wfile.write(body)

        def do_GET(self):  # noqa: N802
            self._answer(True)

        def do_HEAD(self):  # noqa: N802
            self._answer(False)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://user:{PASSWORD}@127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_tokenizer_over_http_with_a_password_is_used_and_never_written(tokenizer_server,
                                                                          tmp_path):
    out = tmp_path / "out"
    proc = fewtrunc("run", "configs/demo.yaml", *base_overrides(out, str(corpus(tmp_path))),
                    f"tokenizer.path={tokenizer_server}/tok.json", "output.report=true",
                    "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert_nowhere((PASSWORD,), proc, out)
    recorded = (out / "config.yaml").read_text()
    assert "http://***@127.0.0.1:" in recorded  # recorded, without its user info
    assert (out / "rejects.jsonl").read_text().count("\n") == 1


def test_a_presigned_style_s3_input_is_read_and_never_written(s3_server, tmp_path):
    """An object whose URL carries presigned-URL parameters: its reject line, config.yaml and
    manifest.json name it with the values masked."""
    import boto3

    bucket = f"secrets-{os.getpid()}"
    s3_server.create_bucket(bucket)
    key = f"docs.jsonl?X-Amz-Credential={CREDENTIAL}&X-Amz-Signature={SIGNATURE}"
    boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing").put_object(
        Bucket=bucket, Key=key, Body=corpus(tmp_path).read_bytes())
    out = tmp_path / "out"
    proc = fewtrunc("run", "configs/demo.yaml", *base_overrides(out, f"s3://{bucket}/{key}"),
                    "input.format=jsonl", "--quiet", env=s3_server.env)
    assert proc.returncode == 0, proc.stderr
    assert_nowhere((SIGNATURE, CREDENTIAL), proc, out)
    masked = f"s3://{bucket}/docs.jsonl?X-Amz-Credential=***&X-Amz-Signature=***"
    assert masked in (out / "rejects.jsonl").read_text()
    assert masked in (out / "manifest.json").read_text()


def test_a_re_signed_url_resumes_the_same_run(s3_server, tmp_path, monkeypatch):
    """The documented choice: a presigned URL's signature is new on every signing, so it is not
    part of the fingerprint nor of the document ids; the same object under a new signature is the
    same run (here: two objects of the same bytes, as S3 keys hold the query literally)."""
    import boto3

    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    bucket = f"resign-{os.getpid()}"
    s3_server.create_bucket(bucket)
    client = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    data = corpus(tmp_path).read_bytes()
    urls = []
    for signature in ("first-signature", "second-signature"):
        key = f"d.jsonl?X-Amz-Date=2026010{len(urls)}T000000Z&X-Amz-Signature={signature}"
        client.put_object(Bucket=bucket, Key=key, Body=data)
        urls.append(f"s3://{bucket}/{key}")
    out = tmp_path / "out"
    first, again = (pipelines.run("configs/demo.yaml",
                                  base_overrides(out, url) + ["input.format=jsonl"])
                    for url in urls)
    assert first["status"] == "complete" and again["status"] == "already complete"
    assert again["manifest"]["run_fingerprint"] == first["manifest"]["run_fingerprint"]


def test_errors_about_urls_with_secrets_do_not_print_them(s3_server, tokenizer_server, tmp_path):
    """A missing object behind a presigned-style URL, and a missing tokenizer behind a
    password: one line each, naming the URL without its secret."""
    bucket = f"missing-{os.getpid()}"
    s3_server.create_bucket(bucket)
    gone = f"s3://{bucket}/gone.jsonl?X-Amz-Signature={SIGNATURE}"
    proc = fewtrunc("run", "configs/demo.yaml", *base_overrides(tmp_path / "o1", gone),
                    env=s3_server.env)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"s3://{bucket}/gone.jsonl?X-Amz-Signature=***" in proc.stderr
    proc = fewtrunc("run", "configs/demo.yaml", *base_overrides(tmp_path / "o2",
                                                                str(corpus(tmp_path))),
                    f"tokenizer.path={tokenizer_server}/missing.json")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "tokenizer.path 'http://***@127.0.0.1:" in proc.stderr
    assert_nowhere((SIGNATURE, PASSWORD), proc, tmp_path)


def test_inline_store_credentials_are_refused_in_one_line(tmp_path):
    url = f"s3://AKIAEXAMPLE:{PASSWORD}@bucket/docs.jsonl"
    proc = fewtrunc("run", "configs/demo.yaml", *base_overrides(tmp_path / "o", url))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "AWS_ACCESS_KEY_ID" in proc.stderr and "s3://***@bucket/docs.jsonl" in proc.stderr
    assert_nowhere((PASSWORD, "AKIAEXAMPLE"), proc, tmp_path)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("override,hint", [
    (f"output.dir=s3://KEY:{PASSWORD}@bucket/out", "AWS_ACCESS_KEY_ID"),
    (f"tokenizer.path=gs://user:{PASSWORD}@bucket/tok.json", "GOOGLE_APPLICATION_CREDENTIALS"),
    (f"input.paths=a.jsonl,gcs://{PASSWORD}@bucket/b.jsonl", "GOOGLE_APPLICATION_CREDENTIALS"),
])
def test_every_store_url_key_refuses_inline_credentials(override, hint):
    with pytest.raises(ConfigError, match=hint) as info:
        load_run_config("configs/demo.yaml", [override])
    assert PASSWORD not in str(info.value)


@pytest.mark.parametrize("name", SECRET_PARAMS)
def test_each_listed_query_parameter_is_masked_and_others_kept(name):
    url = f"https://h/b/k.jsonl?X-Amz-Algorithm=AWS4&{name}=s3cr3t%2Fv&versionId=7"
    assert redact_text(url) == f"https://h/b/k.jsonl?X-Amz-Algorithm=AWS4&{name}=***&versionId=7"
    assert redact_text(redact_text(url)) == redact_text(url)


def test_error_classes_redact_their_text_and_keep_the_position():
    url = f"https://u:{PASSWORD}@h/k?sig={SIGNATURE}"
    errors = [InputError(f"{url}:line 3", f"cannot read {url}"), ConfigError(f"bad {url}"),
              StorageError(url, f"denied for {url}", "denied")]
    errors.append(pickle.loads(pickle.dumps(errors[2])))  # as a Ray or Beam worker sends it
    for exc in errors:
        assert PASSWORD not in str(exc) and SIGNATURE not in str(exc)
        assert PASSWORD not in repr(exc.args) and "https://***@h/k?sig=***" in str(exc)
    assert errors[0].where == "https://***@h/k?sig=***:line 3"
