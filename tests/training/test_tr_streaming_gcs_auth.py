"""Where the GCS reader's access token comes from on GCS itself (the emulator needs none): google-auth's
application-default credentials (here a service-account key whose ``token_uri`` is a local token
endpoint: google-auth signs and posts the real JWT grant), else the VM's metadata server (a
local one via ``GCE_METADATA_HOST``); no credentials at all is one line, never a hang."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest

from pipelines.infra.storage.errors import StorageError
from tests.pipelines.object_stores import free_port
from training.streaming.gcs import _metadata_token, _Token

URL = "gs://bucket/run/shard-00000.arrow"


class _Handler(BaseHTTPRequestHandler):
    seen: list = []

    def _answer(self, body: dict, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # an OAuth token endpoint: the JWT bearer grant
        form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
        self.seen.append(("grant", form.get("grant_type", [""])[0], form.get("assertion", [""])[0]))
        self._answer({"access_token": "token-from-grant", "expires_in": 3600, "token_type": "Bearer"})

    def do_GET(self):  # the metadata server: only with its header
        self.seen.append(("metadata", self.path, self.headers.get("Metadata-Flavor")))
        if self.headers.get("Metadata-Flavor") != "Google":
            return self._answer({}, 403)
        self._answer({"access_token": "token-from-metadata", "expires_in": 1800})

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    _Handler.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def no_adc(tmp_path, monkeypatch):
    """No application-default credentials anywhere google-auth looks, and no metadata server."""
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("GCE_METADATA_HOST", f"127.0.0.1:{free_port()}")  # nobody there
    try:  # google-auth reads NO_GCE_CHECK=true when it is imported: set what it would have set
        from google.auth.compute_engine import _metadata

        monkeypatch.setattr(_metadata, "_NO_GCE_CHECK", True)
    except ImportError:
        pass


def test_a_service_account_key_gives_a_token_through_google_auth(endpoint, tmp_path, monkeypatch):
    pytest.importorskip("google.auth")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    info = {"type": "service_account", "project_id": "p", "private_key_id": "k1",
            "private_key": pem, "client_email": "reader@p.iam.gserviceaccount.com",
            "client_id": "1", "token_uri": f"http://{endpoint}/token"}
    (tmp_path / "key.json").write_text(json.dumps(info))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "key.json"))
    token = _Token()
    assert token.get(URL) == "token-from-grant"
    assert token.get(URL) == "token-from-grant"  # cached until it is about to expire
    grants = [s for s in _Handler.seen if s[0] == "grant"]
    assert len(grants) == 1 and grants[0][1] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    assert grants[0][2].count(".") == 2  # a signed JWT


def test_the_metadata_server_gives_a_token_without_google_auth(endpoint, monkeypatch):
    monkeypatch.setenv("GCE_METADATA_HOST", endpoint)
    token, expires = _metadata_token(URL)
    assert token == "token-from-metadata" and 1700 < expires - time.time() <= 1800
    assert _Handler.seen == [("metadata", "/computeMetadata/v1/instance/service-accounts/default/token",
                              "Google")]


def test_no_credentials_is_one_line(no_adc):
    pytest.importorskip("google.auth")
    with pytest.raises(StorageError, match=r"^gs://bucket/run/shard-00000\.arrow: access denied to "
                                           r"read it: no usable credentials \(check "
                                           r"GOOGLE_APPLICATION_CREDENTIALS"):
        _Token().get(URL)
    with pytest.raises(StorageError, match=r"access denied to read it: no credentials \(google-auth "
                                           r"is not installed and no metadata server answered"):
        _metadata_token(URL)
