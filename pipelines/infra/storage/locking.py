"""Conditional writes of one small object, for the output lock (``pipelines/output_lock.py``):
create it only if its key is free, read it with its version, replace it only if it is still the
version read.

- ``s3://``: S3's conditional PUT (``If-None-Match: *`` creates, ``If-Match: ETAG`` replaces; the
  store answers 412 when the condition fails, and of two racing writes exactly one succeeds).
  pyarrow.fs cannot send these headers, so this goes through botocore (``boto3``, in the
  ``cloud`` extra; the client of ``s3_client.py``, set up from the same environment as
  ``filesystems.py``).
- anything else, and S3 without boto3: best effort, a stat then a write (GCS has
  ``ifGenerationMatch``, but gcp-storage-emulator ignores it, so it could not be tested).

Errors are ``StorageError`` lines naming the URL, as everywhere in ``pipelines.infra.storage``."""
from __future__ import annotations

import logging

from pipelines.infra.storage.guard import translated
from pipelines.infra.storage.listing import stat
from pipelines.infra.storage.reading import read_bytes
from pipelines.infra.storage.s3_client import s3_client
from pipelines.infra.storage.urls import split
from pipelines.infra.storage.writing import put_object

_LOST = ("PreconditionFailed", "ConditionalRequestConflict")  # another write won (412, 409)
_GONE = ("NoSuchKey",)
_WARNED: set = set()


def conditional_object(url: str):
    """The conditional writes ``url``'s store allows: ``S3Object`` (exclusive) or
    ``BestEffortObject``."""
    scheme, inner = split(url)
    if scheme in ("s3", "s3a"):
        try:
            import boto3  # noqa: F401
        except ImportError:
            if url not in _WARNED:
                _WARNED.add(url)
                logging.getLogger(__name__).warning(
                    "boto3 is not installed (pip install fewtrunc[cloud]): the lock %s is "
                    "best effort, not exclusive", url)
        else:
            return S3Object(url)
    return BestEffortObject(url)


class BestEffortObject:
    """A stat, then a write: two writers within the same moment can both create. An object of a
    store only (a local output directory is locked with flock)."""

    exclusive = False

    def __init__(self, url: str):
        self.url = url

    def create(self, data: bytes) -> bool:
        if stat(self.url) is not None:
            return False
        self._write(data)
        return True

    def read(self):
        """(bytes, version) of the object, None when there is none (version: None here)."""
        if stat(self.url) is None:
            return None
        try:
            return read_bytes(self.url), None
        except OSError as exc:
            if getattr(exc, "kind", "") == "missing":  # removed since the stat
                return None
            raise

    def replace(self, data: bytes, version) -> bool:
        self._write(data)
        return True

    def _write(self, data: bytes) -> None:
        put_object(self.url, data)


class S3Object:
    """S3's conditional PUT, through botocore."""

    exclusive = True

    def __init__(self, url: str):
        self.url = url
        _, inner = split(url)
        self.bucket, _, self.key = inner.partition("/")

    def create(self, data: bytes) -> bool:
        """Write ``data`` if no object has the key; False when one has."""
        return self._call("put_object", Body=data, IfNoneMatch="*") is not None

    def read(self):
        """(bytes, ETag) of the object, None when there is none."""
        got = self._call("get_object")
        if got is None:
            return None
        with translated(self.url):
            return got["Body"].read(), got["ETag"]

    def replace(self, data: bytes, version) -> bool:
        """Write ``data`` if the object is still the one read with ETag ``version``; False when
        it changed or is gone."""
        return self._call("put_object", Body=data, IfMatch=version) is not None

    def _call(self, name: str, **kwargs):
        """The response; None when a condition failed or the key is absent."""
        from botocore.exceptions import ClientError

        with translated(self.url):
            client = s3_client(self.bucket, self.url)
            try:
                return getattr(client, name)(Bucket=self.bucket, Key=self.key, **kwargs)
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if code in _LOST + _GONE or status in (409, 412):
                    return None
                raise

