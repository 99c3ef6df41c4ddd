"""Read step: a unit's sources -> batches of (document id, text), with rejects on the side.

Each source format lives in its own module and yields ``Record``s; this step finds it in the
format registry (``formats.py``), validates its records the same way for every format
(missing/non-string/empty/huge text), applies ``input.on_error`` and cuts batches by text size.
Document ids are a hash of the source's stable key and the record's line/row (or of
``input.id_field``), so any engine derives the same id for the same record; a piece of a big
file (``cut.py``) numbers its lines and rows as the whole file does.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from dataclasses import dataclass, field
from typing import Iterator

from pipelines.infra.errors import InputError
from pipelines.steps.formats import FORMATS
from pipelines.steps.sources import Record, Source, Unit
from pipelines.infra.storage import stat as storage_stat
from pipelines.infra.storage.redact import redact_text
from pipelines.infra.storage.reading import NotRegularFile

_MASK63 = (1 << 63) - 1


@dataclass
class TextBatch:
    doc_ids: list = field(default_factory=list)
    texts: list = field(default_factory=list)
    rejects: list = field(default_factory=list)  # {"file", "line"|"row", "reason"}
    records: int = 0  # records read, accepted or not
    bytes: int = 0
    first: bool = False  # the first batch of its unit (of a cut file: of its first piece)
    index: list = field(default_factory=list)  # each document's line/row (see Record.index)
    spans: list = field(default_factory=list)  # (first document, source path, "line"|"row"|"")

    def locate(self, i: int) -> str:
        """Where document ``i`` of the batch comes from: ``file:line N``, ``file:row N`` or a path."""
        start, path, unit = next((s for s in reversed(self.spans) if s[0] <= i), (0, "?", ""))
        return f"{path}:{unit} {self.index[i]}" if unit else path


def stable_id(*parts) -> int:
    """A non-negative int64 from blake2b of the parts: the same on every machine and engine."""
    # surrogateescape: a file name that is not UTF-8 hashes as its raw bytes (valid names are
    # unchanged, so ids do not move)
    blob = "\0".join(map(str, parts)).encode("utf-8", "surrogateescape")
    digest = hashlib.blake2b(blob, digest_size=8).digest()
    return int.from_bytes(digest, "little") & _MASK63


def _index_word(source: Source) -> str:
    """What a record's index counts in this source: "row", "line", or "" (a whole file)."""
    return FORMATS[source.format].index


def _where(source: Source, index: int) -> tuple[str, dict]:
    unit = _index_word(source)
    if not unit or index is None:
        return source.path, {"file": source.path}
    return f"{source.path}:{unit} {index}", {"file": source.path, unit: index}


def check_text(text, cfg, nbytes: int) -> str | None:
    """Why a record's text is unusable, or None."""
    if text is None:
        return f"missing text field {cfg.text_field!r}"
    if not isinstance(text, str):
        return f"text field {cfg.text_field!r} is {type(text).__name__}, not a string"
    if not text:
        return "empty document"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate, e.g. the JSON escape "\ud800"
            return (f"lone surrogate U+{ord(text[exc.start]):04X} at character {exc.start}: "
                    "not valid Unicode text")
    if len(text) > cfg.max_document_bytes or nbytes > cfg.max_document_bytes:
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > cfg.max_document_bytes:
            return f"document of {size:,} bytes exceeds input.max_document_bytes"
    return None


def doc_id_of(source: Source, rec: Record, cfg) -> int:
    if cfg.id_field and rec.doc_key is not None:
        key = rec.doc_key
        if isinstance(key, int) and not isinstance(key, bool) and 0 <= key <= _MASK63:
            return key
        return stable_id("id", key)
    # = stable_id(source.key, rec.index), from a copy of the source's hashed prefix (2x faster)
    h = _key_prefix(source.key).copy()
    h.update(str(rec.index).encode())
    return int.from_bytes(h.digest(), "little") & _MASK63


@lru_cache(maxsize=64)
def _key_prefix(key: str):
    return hashlib.blake2b(f"{key}\0".encode("utf-8", "surrogateescape"), digest_size=8)


class Reader:
    """``Reader(input_cfg, batch_bytes)(unit)`` yields ``TextBatch``es in input order."""

    def __init__(self, cfg, batch_bytes: int = 2_000_000):
        from pipelines.steps.read_piece import Resumable

        self.cfg = cfg
        self.batch_bytes = batch_bytes
        self.resumable = Resumable()  # where a piece of a cut file goes on from the one before

    def __call__(self, unit: Unit) -> Iterator[TextBatch]:
        # the guard's "first documents of a unit" are those of a file: not of a later piece
        batch, size = TextBatch(first=not unit.continues), 0
        for source in unit.sources:
            word = _index_word(source)
            batch.spans.append((len(batch.texts), source.path, word))
            mark, mark_size, passed_on, whole = len(batch.texts), size, False, False
            for rec, reject in self._checked(source):
                batch.records += 1  # a file-level reject counts as one record read
                if reject is not None:
                    batch.bytes += reject.pop("_bytes", 0)
                    batch.rejects.append(reject)
                    whole = whole or not ("line" in reject or "row" in reject)
                    continue
                batch.bytes += rec.nbytes
                batch.doc_ids.append(doc_id_of(source, rec, self.cfg))
                batch.texts.append(rec.text)
                batch.index.append(rec.index)
                size += len(rec.text)
                if size >= self.batch_bytes:
                    yield batch
                    batch, size = TextBatch(spans=[(0, source.path, word)]), 0
                    passed_on = True
            # a source rejected whole (unreadable, not a regular file) is not one reject more
            change = None if whole else changed_since_planned(source)
            if change is not None:
                if self.cfg.on_error == "fail" or passed_on:
                    raise InputError(source.path, change + ("" if not passed_on else
                                     "; its first records already went on, so the run stops"))
                taken = len(batch.texts) - mark  # withdraw its records: the source is a reject
                del batch.doc_ids[mark:], batch.texts[mark:], batch.index[mark:]
                size = mark_size
                batch.records += 1 - taken
                batch.rejects.append({"file": redact_text(source.path), "reason": change})
        if batch.records:
            yield batch

    def _checked(self, source: Source) -> Iterator[tuple[Record | None, dict | None]]:
        """(record, None) for a good record, (None, reject) for a bad one; raises under fail."""
        # a file that is one document: max_documents limited its tree's walk instead
        limit = self.cfg.max_documents if _index_word(source) else 0
        if source.error:  # found while planning (a directory that cannot be listed)
            yield None, self._reject(source.path, {"file": source.path}, source.error)
            return
        try:
            records = FORMATS[source.format].records
            for n, rec in enumerate(records(source, self.cfg, self.resumable)):
                if limit and n >= limit:
                    break
                reason = rec.reason or check_text(rec.text, self.cfg, rec.nbytes)
                if reason is None:
                    yield rec, None
                    continue
                where, info = _where(source, rec.index)
                yield None, self._reject(where, {**info, "_bytes": rec.nbytes}, reason)
        except InputError as exc:
            yield None, self._reject(exc.where, {"file": source.path, **_tail(exc)}, exc.reason)
        except NotRegularFile as exc:  # swapped for a FIFO or a device since it was planned
            yield None, self._reject(source.path, {"file": source.path}, str(exc))
        except OSError as exc:
            yield None, self._reject(source.path, {"file": source.path}, f"cannot read: {exc}")

    def _reject(self, where: str, info: dict, reason: str) -> dict:
        if self.cfg.on_error == "fail":
            raise InputError(where, reason)
        # a presigned URL's signature never reaches a marker or rejects.jsonl
        return {**info, "file": redact_text(info["file"]), "reason": redact_text(reason)}


def changed_since_planned(source: Source) -> str | None:
    """Why a source read to its end is not the file that was planned (and fingerprinted): its
    size or modification time moved while the run read it. None when unchanged or unknown."""
    if not source.mtime_ns:
        return None
    try:
        st = storage_stat(source.path)  # a local file, or an object's size and last write
    except OSError:
        return None  # unreachable now: reading it failed and was reported, or it is read
    if st is None:
        return None  # gone: reading it failed and was reported, or it went after being read
    if st.size == source.size and st.mtime_ns == source.mtime_ns:
        return None
    what = (f"{source.size:,} bytes when planned, {st.size:,} after reading"
            if st.size != source.size else "modified, same size")
    return f"changed while the run read it ({what}): run again once it is stable"


def _tail(exc: InputError) -> dict:
    """``path:line 12`` -> {"line": 12} for a file-level error raised mid-stream."""
    _, _, loc = exc.where.rpartition(":")
    unit, _, num = loc.partition(" ")
    return {unit: int(num)} if unit in ("line", "row") and num.isdigit() else {}
