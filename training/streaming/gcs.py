"""Ranged reads of Google Cloud Storage objects over the JSON API: one ``GET ...?alt=media`` with
a ``Range`` header per read, so the streaming reader fetches one record batch per request (as on
S3) and keeps no local copy of a shard.

Why not pyarrow's ``GcsFileSystem.open_input_file``: the random-access file it returns starts a
download of the whole object when it is opened (for its sequential ``read``) and leaves it
unread, then sends each ``read_at`` as another request. gcp-storage-emulator (the GCS server of
the tests) answers one connection at a time: it stays blocked writing the first body into full
socket buffers (any object over ~100 KB) and never accepts the second request, so ``read_at``
hangs. GCS itself answers both, but each open still starts a download of the whole shard.

Where: ``STORAGE_EMULATOR_HOST`` when it is set (anonymous, as ``pipelines.infra.storage.filesystems``
uses it), else ``https://storage.googleapis.com`` with an OAuth access token: google-auth's
application-default credentials when google-auth is installed (``GOOGLE_APPLICATION_CREDENTIALS``,
gcloud's login, the VM's service account), else the VM's metadata server. Timeouts and how long
a failing read is retried are the run's ``storage:`` settings. Errors are one ``StorageError``
line naming the URL. Connections are kept per thread and per process (safe after a fork).
"""
from __future__ import annotations

import http.client
import io
import json
import os
import threading
import time
from urllib.parse import quote, urlsplit

from pipelines.infra.storage import filesystems
from pipelines.infra.storage.errors import StorageError
from pipelines.infra.storage.urls import split

GCS = "https://storage.googleapis.com"
SCOPE = "https://www.googleapis.com/auth/devstorage.read_only"
CREDENTIALS = ("check GOOGLE_APPLICATION_CREDENTIALS or gcloud application-default login, and "
               "the bucket's IAM roles")
_RETRY = {408, 429, 500, 502, 503, 504}
_local = threading.local()


def is_gcs(url: str) -> bool:
    return str(url).startswith(("gs://", "gcs://"))


class GcsObject:
    """One object, read by byte ranges; ``size`` is asked of the store on first use unless given."""

    def __init__(self, url: str, size: int | None = None):
        scheme, inner = split(str(url))
        bucket, _, key = inner.partition("/")
        if scheme not in ("gs", "gcs") or not bucket or not key:
            raise StorageError(url, "not a gs://bucket/key URL")
        self.url, self._size = str(url), size
        self._path = f"/storage/v1/b/{quote(bucket, safe='')}/o/{quote(key, safe='')}"

    @property
    def size(self) -> int:
        if self._size is None:
            self._size = int(json.loads(_get(self.url, self._path, None))["size"])
        return self._size

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset`` (fewer only at the end of the object)."""
        if length <= 0:
            return b""
        return _get(self.url, self._path + "?alt=media", (int(offset), int(offset) + int(length) - 1))


class GcsFile(io.RawIOBase):
    """A ``GcsObject`` as a seekable binary file, for ``pyarrow.PythonFile`` (Arrow's IPC reader
    then sends one ranged GET per read it makes)."""

    def __init__(self, url: str, size: int | None = None):
        super().__init__()
        self.object, self._pos = GcsObject(url, size), 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self.object.size}[whence]
        self._pos = max(0, base + int(offset))
        return self._pos

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = max(0, self.object.size - self._pos)
        data = self.object.read(self._pos, size)
        self._pos += len(data)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def endpoint() -> str:
    host = os.environ.get("STORAGE_EMULATOR_HOST", "").strip().rstrip("/")
    if not host:
        return GCS
    return host if "://" in host else f"http://{host}"


def _settings() -> tuple[float, float]:
    """(seconds per request, seconds a failing read is retried): the run's storage settings."""
    s = filesystems.settings()
    return float(s.get("request_timeout", 60.0)), float(s.get("retry_seconds", 60.0))


def _get(url: str, path: str, span: tuple[int, int] | None) -> bytes:
    """The body of ``GET path`` (``span``: an inclusive byte range), retried while the store
    or the network fails transiently, for up to the retry setting."""
    base = endpoint()
    timeout, retry = _settings()
    deadline, delay, refreshed = time.monotonic() + retry, 0.05, False
    while True:
        try:
            status, body, why = _once(url, base, path, span, timeout)
        except StorageError:
            _drop(base)
            raise
        except (OSError, http.client.HTTPException) as exc:
            _drop(base)
            status, body, why = None, b"", f"{type(exc).__name__}: {exc}"
        if status in (200, 206) and body is not None:
            return body
        if status == 416:  # the range starts at or after the end: nothing there
            return b""
        if status == 404:
            raise StorageError(url, "no such object (or no such bucket)", "missing")
        if status == 401 and not refreshed and base == GCS:
            _TOKEN.clear()
            refreshed = True
            continue
        if status in (401, 403):
            raise StorageError(url, f"access denied to read it: unknown credentials, or not "
                                    f"allowed ({CREDENTIALS}; HTTP {status})", "denied")
        if status is not None and status not in _RETRY and body is not None:
            raise StorageError(url, f"HTTP {status} from {base}: {why}")
        if time.monotonic() + delay > deadline:
            if status is None:
                where = f"{base} (STORAGE_EMULATOR_HOST)" if base != GCS else base
                raise StorageError(url, f"cannot reach {where} ({why})", "unreachable")
            raise StorageError(url, f"HTTP {status} from {base} after retrying for {retry:.0f} s: {why}")
        time.sleep(delay)
        delay = min(2 * delay, 2.0)


def _once(url: str, base: str, path: str, span, timeout: float):
    """(status, body or None when it must be retried, why)."""
    conn = _conn(base, timeout)
    headers = {"Accept-Encoding": "identity"}
    token = _TOKEN.get(url) if base == GCS else None
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if span is not None:
        headers["Range"] = f"bytes={span[0]}-{span[1]}"
    conn.request("GET", urlsplit(base).path.rstrip("/") + path, headers=headers)
    resp = conn.getresponse()
    if span is not None and resp.status == 200:  # the whole object is coming: do not read it
        _drop(base)
        raise StorageError(url, f"{base} ignored the Range header of a ranged read")
    body = resp.read()
    if resp.will_close:
        _drop(base)
    if resp.status not in (200, 206):
        return resp.status, (None if resp.status in _RETRY else b""), body[:200].decode("utf-8", "replace")
    if span is not None:
        total = resp.getheader("Content-Range", "").rpartition("/")[2]
        want = span[1] - span[0] + 1
        if total.isdigit():
            want = max(0, min(want, int(total) - span[0]))
        if len(body) != want:  # cut short: read it again
            _drop(base)
            return None, None, f"{len(body)} of {want} bytes received"
    return resp.status, body, ""


def _conn(base: str, timeout: float):
    conns = getattr(_local, "conns", None)
    if conns is None or getattr(_local, "pid", None) != os.getpid():  # a forked child: its own
        conns = _local.conns = {}
        _local.pid = os.getpid()
    conn = conns.get(base)
    if conn is None:
        parts = urlsplit(base)
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = conns[base] = cls(parts.hostname, parts.port, timeout=timeout)
    return conn


def _drop(base: str) -> None:
    conn = getattr(_local, "conns", {}).pop(base, None)
    if conn is not None:
        conn.close()


class _Token:
    """An OAuth access token for GCS, refreshed before it expires (one refresh at a time)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._token, self._expires, self._creds = "", 0.0, None

    def clear(self) -> None:
        with self._lock:
            self._token, self._expires = "", 0.0

    def get(self, url: str) -> str:
        with self._lock:
            if not self._token or time.time() > self._expires - 60:
                self._token, self._expires = self._fetch(url)
            return self._token

    def _fetch(self, url: str) -> tuple[str, float]:
        try:
            import google.auth
            import google.auth.exceptions
        except ImportError:
            return _metadata_token(url)
        try:
            if self._creds is None:
                self._creds, _ = google.auth.default(scopes=[SCOPE])
            self._creds.refresh(_auth_request())
        except google.auth.exceptions.GoogleAuthError as exc:
            raise StorageError(url, f"access denied to read it: no usable credentials "
                                    f"({CREDENTIALS}; {str(exc).splitlines()[0][:200]})", "denied") from None
        expiry = self._creds.expiry
        return self._creds.token, (expiry.timestamp() if expiry else time.time() + 300)


def _auth_request():
    try:
        from google.auth.transport.requests import Request

        return Request()
    except ImportError:
        import urllib3
        from google.auth.transport.urllib3 import Request

        return Request(urllib3.PoolManager())


def _metadata_token(url: str) -> tuple[str, float]:
    """The VM's service account token (no google-auth installed)."""
    host = os.environ.get("GCE_METADATA_HOST", "metadata.google.internal")
    conn = http.client.HTTPConnection(host, timeout=5)
    try:
        conn.request("GET", "/computeMetadata/v1/instance/service-accounts/default/token",
                     headers={"Metadata-Flavor": "Google"})
        resp = conn.getresponse()
        answer = json.loads(resp.read()) if resp.status == 200 else {}
    except (OSError, http.client.HTTPException, ValueError):
        answer = {}
    finally:
        conn.close()
    if "access_token" not in answer:
        raise StorageError(url, f"access denied to read it: no credentials (google-auth is not "
                                f"installed and no metadata server answered; {CREDENTIALS})", "denied")
    return answer["access_token"], time.time() + float(answer.get("expires_in", 300))


_TOKEN = _Token()
