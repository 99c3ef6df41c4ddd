"""Errors of a store as one ``StorageError`` line naming the URL, wherever a request is made:
``guarded`` for pyarrow's (OSErrors; a missing object told apart from a missing bucket),
``translated`` for botocore's (the S3 deletes and the lock's conditional writes).

Every other module of ``pipelines.infra.storage`` takes them from here, and this one takes nothing but
``errors.py``: the store's modules import each other one way only."""
from __future__ import annotations

from contextlib import contextmanager

from pipelines.infra.storage.errors import StorageError, translate


@contextmanager
def guarded(url: str, loc=None):
    """Any OSError raised inside becomes a ``StorageError`` naming ``url``; with ``loc`` (its
    ``resolve``), an object that is not found is told apart from a bucket that is not there."""
    try:
        yield
    except OSError as exc:
        error = translate(exc, url)
        if loc is not None and getattr(error, "kind", "") == "missing":
            try:
                check_bucket(loc, url)
            except OSError as missing:
                raise missing from None
        raise error from None


def check_bucket(loc, url: str) -> None:
    """Nothing at ``url``: raise when its bucket is what is missing (S3 and GCS answer a key in a
    missing bucket as not found)."""
    import pyarrow.fs as pfs

    if not loc.scheme or hasattr(loc.fs, "handler"):
        return
    bucket = loc.path.split("/", 1)[0]
    if bucket != loc.path and loc.fs.get_file_info(bucket).type == pfs.FileType.NotFound:
        raise StorageError(url, f"bucket {bucket!r} does not exist", "missing bucket")


@contextmanager
def translated(url: str):
    """botocore's errors (not OSErrors) as ``StorageError`` lines naming the URL."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError, OSError) as exc:
        raise translate(exc, url) from None
