"""Deleting files and objects without leaving "directory" objects behind.

pyarrow's ``S3FileSystem.delete_file`` re-creates the deleted key's parent as a zero-byte
``prefix/`` object whenever the key was the last one below it (Arrow keeps the "directory"
existing), and ``create_dir`` writes such objects too. A finished run on S3 then left ``out/``,
``out/_work/`` and ``out/_work/part-N/plan/`` behind, and a refused run ``out/`` (its lock's
removal). On S3 keys are therefore deleted through botocore (``DeleteObject``/``DeleteObjects``
touch nothing but the keys named; the client of ``s3_client.py``); without boto3 installed, through
pyarrow, with a warning that markers may remain. GCS's client creates no markers when it
deletes, and local paths are ``os.unlink``: both go through ``remove``.
"""
from __future__ import annotations

import logging
import os

from pipelines.infra.storage.errors import StorageError
from pipelines.infra.storage.filesystems import resolve
from pipelines.infra.storage.guard import guarded, translated
from pipelines.infra.storage.s3_client import s3_client
from pipelines.infra.storage.urls import is_url, local_path, split

_WARNED: set = set()
BATCH = 1000  # keys per DeleteObjects request (S3's limit)


def _s3(url: str) -> bool:
    """Whether ``url`` is on S3 and botocore can delete it (warns once when it cannot)."""
    if split(url)[0] not in ("s3", "s3a"):
        return False
    try:
        import boto3  # noqa: F401
    except ImportError:
        if "boto3" not in _WARNED:
            _WARNED.add("boto3")
            logging.getLogger(__name__).warning(
                "boto3 is not installed (pip install fewtrunc[cloud]): deleting on S3 goes "
                "through pyarrow, which may leave zero-byte directory objects ending in '/'")
        return False
    return True


def remove_object(url) -> bool:
    """Delete one file or object; False when there was none. On S3 no marker is created."""
    url = str(url)
    if not is_url(url) or not _s3(url):
        return remove(url)
    from botocore.exceptions import ClientError

    bucket, _, key = split(url)[1].partition("/")
    with translated(url):
        client = s3_client(bucket, url)
        try:
            client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return False
            raise
        client.delete_object(Bucket=bucket, Key=key)
    return True


def remove_objects(urls: list) -> None:
    """Delete every one of ``urls`` (absent ones included, without error); on S3 in batches of
    ``BATCH`` keys per request, without markers."""
    by_bucket: dict = {}
    for url in map(str, urls):
        if is_url(url) and _s3(url):
            bucket, _, key = split(url)[1].partition("/")
            by_bucket.setdefault(bucket, []).append((url, key))
        else:
            remove(url)
    for bucket, items in by_bucket.items():
        for i in range(0, len(items), BATCH):
            chunk = items[i : i + BATCH]
            with translated(chunk[0][0]):
                got = s3_client(bucket, chunk[0][0]).delete_objects(
                    Bucket=bucket, Delete={"Objects": [{"Key": k} for _, k in chunk],
                                           "Quiet": True})
            errors = got.get("Errors") or []
            if errors:
                first = errors[0]
                raise StorageError(f"s3://{bucket}/{first.get('Key', '')}",
                                   f"could not delete it ({first.get('Code')}: "
                                   f"{first.get('Message')}; {len(errors)} keys not deleted)")


def remove(path) -> bool:
    """Delete a file or object; False when there was none (not an error: markers are removed
    by retried attempts too)."""
    path = str(path)
    if not is_url(path):
        try:
            os.unlink(local_path(path))
            return True
        except FileNotFoundError:
            return False
    if _s3(path):  # pyarrow would leave a zero-byte "directory" object behind
        return remove_object(path)
    loc = resolve(path)
    with guarded(path):
        try:
            loc.fs.delete_file(loc.path)
        except FileNotFoundError:
            return False
    return True
