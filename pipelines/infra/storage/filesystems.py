"""A path or URL -> (pyarrow filesystem, path inside it), credentials from the environment.

- ``s3://bucket/key``: ``pyarrow.fs.S3FileSystem``. Endpoint from ``AWS_ENDPOINT_URL_S3`` or
  ``AWS_ENDPOINT_URL`` (MinIO, moto, R2...), keys from ``AWS_ACCESS_KEY_ID``/
  ``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN`` or the AWS SDK's usual chain (profile, instance
  role), region from ``AWS_REGION``/``AWS_DEFAULT_REGION``, else asked of the bucket once.
- ``gs://bucket/key``: ``pyarrow.fs.GcsFileSystem`` with application-default credentials, or the
  emulator at ``STORAGE_EMULATOR_HOST`` (anonymous) when it is set.
- ``file://`` and local paths: ``pyarrow.fs.LocalFileSystem`` (callers keep using ``os`` for
  those; see ``urls.local_path``).
- any other scheme fsspec knows (``memory://``; ``hf://``, ``az://`` when their packages are
  installed): fsspec's filesystem behind ``pyarrow.fs.PyFileSystem``.

Filesystems are cached per process and per environment (a changed ``AWS_ENDPOINT_URL`` gets a new
one). What the environment cannot say (timeouts, how long to retry) is ``configure``'s.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from datetime import timedelta

from pipelines.infra.storage.errors import StorageError
from pipelines.infra.storage.urls import local_path, scheme_of, split

_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION",
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
        "STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS")
_SETTINGS = {"connect_timeout": 10.0, "request_timeout": 60.0, "retry_attempts": 3,
             "retry_seconds": 60.0}
_CACHE: dict = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Resolved:
    fs: object  # a pyarrow.fs.FileSystem
    path: str  # the path inside ``fs`` (``bucket/key`` for S3 and GCS)
    scheme: str  # "" for a local path

    def url(self, path: str | None = None) -> str:
        """The URL of ``path`` (default: this location's) on the same store."""
        path = self.path if path is None else path
        if not self.scheme:
            return path
        if hasattr(self.fs, "handler"):  # fsspec behind PyFileSystem
            return self.fs.handler.fs.unstrip_protocol(path)
        return f"{self.scheme}://{path}"


def settings() -> dict:
    """The storage settings in force (timeouts, retries), for clients of their own (training's
    ranged GCS reader)."""
    return dict(_SETTINGS)


def configure(*, connect_timeout: float | None = None, request_timeout: float | None = None,
              retry_attempts: int | None = None, retry_seconds: float | None = None) -> None:
    """Set what the environment cannot: seconds to connect and per request (S3), attempts of a
    failing S3 request (backing off exponentially), and how long GCS retries one (a run's
    ``storage:`` section). Clears the cache of filesystems when they change."""
    given = {"connect_timeout": connect_timeout, "request_timeout": request_timeout,
             "retry_attempts": retry_attempts, "retry_seconds": retry_seconds}
    with _LOCK:
        new = {**_SETTINGS, **{k: type(_SETTINGS[k])(v) for k, v in given.items() if v is not None}}
        if new != _SETTINGS:  # the same settings again (each stage's setup): keep the cache
            _SETTINGS.update(new)
            _CACHE.clear()


def resolve(path) -> Resolved:
    """The filesystem and inner path of a local path or URL (no request is made, except the one
    that finds an S3 bucket's region when no region or endpoint is configured)."""
    path = str(path)
    scheme = scheme_of(path)
    if scheme in ("", "file"):
        import pyarrow.fs as pfs

        return Resolved(pfs.LocalFileSystem(), os.path.abspath(local_path(path)), "")
    _, inner = split(path)
    bucket = inner.split("/", 1)[0]
    if not bucket:
        raise StorageError(path, "no bucket in the URL")
    key = cache_key(scheme)
    with _LOCK:
        fs = _CACHE.get(key) or _CACHE.get(key + (bucket,))
    if fs is None:
        fs, per_bucket = _make(scheme, bucket, path)
        with _LOCK:
            _CACHE[key + ((bucket,) if per_bucket else ())] = fs
    if hasattr(fs, "handler"):
        return Resolved(fs, fs.handler.fs._strip_protocol(path), scheme)
    return Resolved(fs, inner, scheme)


def _make(scheme: str, bucket: str, url: str):
    """(filesystem, whether it is bound to this bucket's region)."""
    import pyarrow.fs as pfs

    if scheme in ("s3", "s3a"):
        return _s3(pfs, bucket, url)
    if scheme in ("gs", "gcs"):
        retry = timedelta(seconds=_SETTINGS["retry_seconds"])
        host = os.environ.get("STORAGE_EMULATOR_HOST", "").strip()
        if host:
            proto, _, hostport = host.rpartition("://")
            return pfs.GcsFileSystem(anonymous=True, scheme=proto or "http",
                                     endpoint_override=hostport.rstrip("/"),
                                     retry_time_limit=retry), False
        return pfs.GcsFileSystem(retry_time_limit=retry), False
    try:
        import fsspec
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        return PyFileSystem(FSSpecHandler(fsspec.filesystem(scheme))), False
    except (ImportError, ValueError) as exc:
        raise StorageError(url, f"no filesystem for {scheme}:// ({exc}); fewtrunc reads "
                           "s3://, gs://, file:// and local paths") from None


def s3_settings(bucket: str, url: str) -> dict:
    """How to reach S3 for ``bucket``, from the environment: ``endpoint`` (None: AWS), ``region``,
    the timeouts and retry attempts of ``configure``, and ``per_bucket`` (the region was asked of
    the bucket). One resolution for pyarrow's client and botocore's (``locking.py``)."""
    import pyarrow.fs as pfs

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    per_bucket = False
    if endpoint:
        region = region or "us-east-1"
    elif not region:  # a bucket lives in one region: ask it (once per process)
        try:
            region = pfs.resolve_s3_region(bucket)
        except OSError as exc:
            from pipelines.infra.storage.errors import translate

            raise translate(exc, url) from None
        per_bucket = True
    return {"endpoint": endpoint, "region": region, "per_bucket": per_bucket,
            "connect_timeout": _SETTINGS["connect_timeout"],
            "request_timeout": _SETTINGS["request_timeout"],
            "attempts": max(1, _SETTINGS["retry_attempts"])}


def cache_key(scheme: str) -> tuple:
    """What a client made from the environment depends on: a changed variable or setting makes
    another."""
    return (scheme, tuple(os.environ.get(v) for v in _ENV), tuple(_SETTINGS.items()))


def _s3(pfs, bucket: str, url: str):
    s = s3_settings(bucket, url)
    kwargs = dict(connect_timeout=s["connect_timeout"], request_timeout=s["request_timeout"],
                  retry_strategy=pfs.AwsStandardS3RetryStrategy(max_attempts=s["attempts"]))
    if s["endpoint"]:
        proto, _, host = s["endpoint"].rpartition("://")
        kwargs.update(endpoint_override=host.rstrip("/"), scheme=proto or "https")
    return pfs.S3FileSystem(region=s["region"], **kwargs), s["per_bucket"]
