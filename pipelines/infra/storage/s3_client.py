"""One botocore S3 client per environment (and per bucket when its region was asked of it), for
what pyarrow.fs cannot send: the lock's conditional PUTs (``locking.py``) and deletes that leave
no zero-byte "directory" object behind (``deleting.py``). Set up from the same settings as
pyarrow's client (``filesystems.s3_settings``); ``boto3`` is in the ``cloud`` extra."""
from __future__ import annotations

import threading

from pipelines.infra.storage.filesystems import cache_key, s3_settings

_CLIENTS: dict = {}
_LOCK = threading.Lock()


def s3_client(bucket: str, url: str):
    """A botocore S3 client for ``bucket``, from the environment (cached like the filesystems:
    per environment and settings, and per bucket when its region was asked of it)."""
    key = cache_key("s3")
    with _LOCK:
        client = _CLIENTS.get(key) or _CLIENTS.get(key + (bucket,))
    if client is not None:
        return client
    import boto3
    from botocore.config import Config

    s = s3_settings(bucket, url)
    config = Config(connect_timeout=s["connect_timeout"], read_timeout=s["request_timeout"],
                    retries={"max_attempts": s["attempts"], "mode": "standard"},
                    # as pyarrow's client: path-style addressing on an S3-compatible endpoint,
                    # which may also not know the checksums botocore now sends by default
                    **({"s3": {"addressing_style": "path"},
                        "request_checksum_calculation": "when_required",
                        "response_checksum_validation": "when_required"}
                       if s["endpoint"] else {}))
    client = boto3.session.Session().client("s3", region_name=s["region"],
                                            endpoint_url=s["endpoint"], config=config)
    with _LOCK:
        _CLIENTS[key + ((bucket,) if s["per_bucket"] else ())] = client
    return client
