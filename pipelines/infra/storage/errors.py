"""One line naming the URL for what goes wrong on a store: a missing bucket or key, denied access,
an unreachable endpoint. pyarrow's messages carry the AWS or GCS error code; they are matched here
so the line says what to check, and the original's first line is kept after it. botocore's
``ClientError`` text (the lock's conditional write, ``locking.py``) is matched the same way.
The URL and reason are redacted (``redact.py``): a presigned URL's signature is never shown."""
from __future__ import annotations

import os
import re

from pipelines.infra.errors import FewtruncError
from pipelines.infra.storage.redact import redact_text


class StorageError(FewtruncError, OSError):
    """A store cannot be used for ``url``: ``kind`` is ``missing bucket``, ``missing``,
    ``denied``, ``unreachable`` or ``error``. An ``OSError``, so a reader that turns an unreadable
    file into a reject does the same for an unreadable object."""

    def __init__(self, url: str, reason: str, kind: str = "error"):
        url, reason = redact_text(str(url)), redact_text(str(reason))  # what every copy shows
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason
        self.kind = kind

    def __str__(self) -> str:  # OSError's own __str__ would show the args tuple
        return f"{self.url}: {self.reason}"

    def __reduce__(self):  # pickled across processes (a Ray or Beam worker's error)
        return type(self), (self.url, self.reason, self.kind)


_KINDS = (  # (kind, markers in pyarrow's message, what to say)
    ("missing bucket", ("NO_SUCH_BUCKET", "bucket does not exist", "NoSuchBucket",
                        "Bucket '", "bucket not found"), "the bucket does not exist"),
    ("denied", ("ACCESS_DENIED", "AccessDenied", "Forbidden", "PERMISSION_DENIED",
                "PermissionDenied", "INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH",
                "InvalidAccessKeyId", "SignatureDoesNotMatch", "Unauthorized",
                "UNAUTHENTICATED", "Unable to locate credentials"), "access denied"),
    ("unreachable", ("NETWORK_CONNECTION", "curlCode", "Couldn't connect", "Could not resolve",
                     "Could not connect", "Connection refused", "UNAVAILABLE", "Unavailable",
                     "timed out", "Timeout", "connect to server", "Retry policy exhausted"),
     "cannot reach the endpoint"),
    ("missing", ("NO_SUCH_KEY", "NoSuchKey", "Path does not exist", "not found",
                 "does not exist", "NOT_FOUND"), "no such object"),
)


_CONTEXT = re.compile(r"^When [^:]*(?:key|bucket) '[^']*'[^:]*: ")  # pyarrow's: the URL says it
_CREDENTIALS = {  # scheme -> where its credentials come from, and what else decides access
    "s3": "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the instance role, and the "
          "bucket's policy",
    "gs": "GOOGLE_APPLICATION_CREDENTIALS or gcloud application-default login, and the bucket's "
          "IAM roles",
}
_WRITES = ("Put", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "Delete",
           "Copy", "insert", "delete", "compose", "rewrite", "upload", "Upload")
_OPERATION = re.compile(r"(?:during|calling the) (\w+) operation")


def _denied(url: str, text: str) -> str:
    """What to say for a denied request: whether it read or wrote, and what to check."""
    op = _OPERATION.search(text)
    what = ""
    if op:
        what = " to write it" if op.group(1).startswith(_WRITES) else " to read it"
    scheme = "gs" if url.startswith(("gs://", "gcs://")) else "s3"
    return (f"access denied{what}: unknown credentials, or not allowed (check "
            f"{_CREDENTIALS[scheme]})")


def _endpoint(url: str) -> str:
    if url.startswith(("s3://", "s3a://")):
        ep = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        return f"{ep} (AWS_ENDPOINT_URL)" if ep else "the AWS S3 endpoint"
    if url.startswith(("gs://", "gcs://")):
        ep = os.environ.get("STORAGE_EMULATOR_HOST")
        return f"{ep} (STORAGE_EMULATOR_HOST)" if ep else "the Google Cloud Storage endpoint"
    return "the store"


def translate(exc: BaseException, url: str) -> BaseException:
    """A ``StorageError`` for ``exc`` raised while using ``url`` (already one: unchanged)."""
    if isinstance(exc, StorageError):
        return exc
    text = str(exc)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    first = _CONTEXT.sub("", first)  # "When getting information for key 'k' in bucket 'b': "
    if isinstance(exc, FileNotFoundError) and "bucket" not in text.lower():
        return StorageError(url, "no such object", "missing")
    for kind, markers, said in _KINDS:
        if any(m in text for m in markers):
            if kind == "missing bucket":
                bucket = url.split("://", 1)[-1].split("/", 1)[0]
                return StorageError(url, f"bucket {bucket!r} does not exist", kind)
            if kind == "unreachable":
                said = f"cannot reach {_endpoint(url)}"
            elif kind == "denied":
                said = _denied(url, text)
            return StorageError(url, f"{said} ({first[:200]})", kind)
    return StorageError(url, first[:400])
