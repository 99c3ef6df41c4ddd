"""Credentials out of every URL that fewtrunc writes down: records, logs and error messages.

A URL is *used* as given (fsspec sends ``http://user:pass@host/`` as basic auth, a presigned
URL's query signs the request); only what is written about it is redacted:

- user info: ``http://user:pass@host/x`` -> ``http://***@host/x`` (any scheme);
- the values of these query parameters (case-insensitive), after ``?``, ``&`` or ``;``:
  ``SECRET_PARAMS``. Besides the signatures, keys and tokens it holds the signing time and
  expiry of presigned URLs (``X-Amz-Date``, ``X-Amz-Expires``, ``X-Goog-Date``, ...): not
  secret, but new on every signing, so every signing of one object is recorded as the same URL.

A run's recorded config, its inputs' stable names (which seed the document ids) and so its
fingerprint are built from the redacted text (``pipelines.run_plan``): a re-signed presigned URL
resumes the same run and gives the same bytes. ``s3://`` and ``gs://`` never take credentials in
the URL (``inline_credentials``): a config that has them is refused (``pipelines.config``).
"""
from __future__ import annotations

import re

MASK = "***"
SECRET_PARAMS = (
    # AWS Signature Version 4 and 2 (presigned S3 URLs)
    "X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token", "X-Amz-Date",
    "X-Amz-Expires", "AWSAccessKeyId", "Signature", "Expires",
    # Google Cloud Storage signed URLs (V4 and V2)
    "X-Goog-Signature", "X-Goog-Credential", "X-Goog-Date", "X-Goog-Expires", "GoogleAccessId",
    # Azure shared access signatures
    "sig",
    # tokens, keys and passwords of HTTP APIs
    "token", "access_token", "id_token", "refresh_token", "session_token", "security_token",
    "auth", "authorization", "key", "api_key", "apikey", "api-key", "x-api-key", "password",
    "passwd", "pwd", "secret", "client_secret", "credential", "credentials",
)
_USERINFO = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s'\"<>?#]*@")
# a value ends at the next parameter, a quote or space, or where a message goes on after the
# URL: ``URL:line 3`` (an input's position, ``InputError``) or ``URL: reason``
_PARAM = re.compile(r"([?&;](?:%s)=)[^&;#\s'\"<>]*?(?=:(?:line|row) \d|:\s|:$|[&;#\s'\"<>]|$)"
                    % "|".join(map(re.escape, SECRET_PARAMS)), re.IGNORECASE)
_STORES = ("s3", "s3a", "gs", "gcs")


def redact_text(text: str) -> str:
    """``text`` (a URL, a path, a whole error message) with user info and secret query values
    masked; anything else unchanged. Idempotent."""
    if "@" not in text and "=" not in text:  # the common case: nothing to look at
        return text
    return _PARAM.sub(r"\1" + MASK, _USERINFO.sub(r"\1" + MASK + "@", text))


redact_url = redact_text  # one URL is one text


def redact_tree(value):
    """Every string of a JSON-like tree (dicts, lists, tuples) redacted; a new tree."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {redact_tree(k): redact_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_tree(v) for v in value)
    return value


def inline_credentials(url: str) -> str:
    """The scheme (``s3``, ``gs``) when ``url`` is an object-store URL with user info
    (``s3://KEY:SECRET@bucket/k``), else ``""``. Bucket names hold no ``@``: any is user info."""
    scheme, sep, rest = str(url).partition("://")
    if not sep or scheme.lower() not in _STORES:
        return ""
    return scheme.lower() if "@" in rest.split("/", 1)[0] else ""


def environment_hint(scheme: str) -> str:
    """Where the credentials of ``scheme`` go instead of the URL."""
    if scheme in ("gs", "gcs"):
        return ("GOOGLE_APPLICATION_CREDENTIALS (a service account key file) or `gcloud auth "
                "application-default login`")
    return "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), or AWS_PROFILE"
