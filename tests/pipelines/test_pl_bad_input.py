"""Every bad-input case of the issue, under input.on_error=skip (recorded, run goes on) and
fail (stops with an error naming file and line)."""
import gzip
import json
import os

import pytest
import zstandard

import pipelines
from pipelines.infra.errors import ConfigError, InputError
from tests.pipelines.conftest import base_overrides, english_records

GOOD = [r["text"] for r in english_records(5)]


def _lines(*middle: bytes) -> bytes:
    good = [json.dumps({"text": t}).encode() for t in GOOD]
    return b"\n".join(good[:2] + list(middle) + good[2:]) + b"\n"


JSONL_CASES = {
    "malformed JSON": b'{"text": "unterminated',
    "invalid UTF-8": b'{"text": "caf\xe9"}',
    "missing text field": b'{"body": "no text here"}',
    "not a string": b'{"text": 42}',
    "empty document": b'{"text": ""}',
    "not an object": b'["text"]',
}


def _run(tmp_path, path, policy="skip", **extra):
    out = tmp_path / f"out-{policy}-{abs(hash((str(path), str(extra))))}"
    return pipelines.run(None, base_overrides(out, str(path), **{"input.on_error": policy,
                                                                  **extra})), out


def _rejects(out):
    return [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("case", JSONL_CASES)
def test_bad_jsonl_record(tmp_path, case):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(_lines(JSONL_CASES[case]))
    result, out = _run(tmp_path, path)
    t = result["manifest"]["totals"]
    assert (t["documents_read"], t["documents_accepted"], t["documents_rejected"]) == (6, 5, 1)
    (rej,) = _rejects(out)
    assert rej["file"] == str(path) and rej["line"] == 3
    with pytest.raises(InputError, match=rf"bad\.jsonl:line 3"):
        _run(tmp_path, path, "fail")


def test_reasons_are_specific(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(_lines(*JSONL_CASES.values()))
    _, out = _run(tmp_path, path)
    reasons = [r["reason"] for r in _rejects(out)]
    assert [r.split()[0] for r in reasons] == ["malformed", "invalid", "missing", "text",
                                                 "empty", "JSON"]


def test_huge_document_is_rejected_with_bounded_reading(tmp_path):
    path = tmp_path / "huge.jsonl"
    with open(path, "wb") as f:
        f.write(json.dumps({"text": GOOD[0]}).encode() + b"\n")
        f.write(b'{"text": "' + b"a" * 50_000_000 + b'"}\n')  # a 50 MB document
        f.write(json.dumps({"text": GOOD[1]}).encode() + b"\n")
    result, out = _run(tmp_path, path)
    assert result["manifest"]["totals"]["documents_accepted"] == 2
    (rej,) = _rejects(out)
    assert rej["line"] == 2 and "exceeds" in rej["reason"]
    small = tmp_path / "small.jsonl"
    small.write_bytes(_lines(json.dumps({"text": "x" * 5000}).encode()))
    _, out2 = _run(tmp_path, small, **{"input.max_document_bytes": 4000})
    assert "input.max_document_bytes" in _rejects(out2)[0]["reason"]


def _decodable_records(data: bytes, codec: str) -> int:
    """The records a decoder fed ``data`` one byte at a time gives, whole and valid, before it
    fails or the data ends: what the reader must keep (gzip decodes to the byte, zstd block by
    block; bytes decoded wrong before the damage is noticed make lines that are rejected, or,
    when they happen to stay valid JSON, records)."""
    import zlib

    d = (zlib.decompressobj(wbits=31) if codec == "gz"
         else zstandard.ZstdDecompressor().decompressobj())
    out = bytearray()
    try:
        for i in range(len(data)):
            out += d.decompress(data[i : i + 1])
    except (zlib.error, zstandard.ZstdError):
        pass

    def valid(line: bytes) -> bool:
        try:
            text = json.loads(line).get("text")
        except (ValueError, AttributeError):
            return False
        return isinstance(text, str) and text != ""

    return sum(map(valid, bytes(out).split(b"\n")[:-1]))  # the last piece has no newline


@pytest.mark.parametrize("codec", ["gz", "zst"])
@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_damaged_compressed_stream(tmp_path, codec, damage):
    raw = b"".join(json.dumps({"text": f"record {i} " + GOOD[i % 5]}).encode() + b"\n"
                   for i in range(400))
    if codec == "gz":
        data = bytearray(gzip.compress(raw, mtime=0))
    else:
        data = bytearray(zstandard.ZstdCompressor(write_checksum=True).compress(raw))
    if damage == "truncated":
        data = data[: len(data) * 2 // 3]
    else:
        for i in range(len(data) // 2, len(data) // 2 + 8):
            data[i] ^= 0x5A
    path = tmp_path / f"bad.jsonl.{codec}"
    path.write_bytes(bytes(data))
    result, out = _run(tmp_path, path)
    t = result["manifest"]["totals"]
    *garbled, rej = _rejects(out)  # bytes inflated from the damage before zlib notices it
    assert all(r["reason"].startswith(("malformed", "invalid")) for r in garbled)
    assert rej["file"] == str(path) and rej["line"] >= 1
    assert "truncated" in rej["reason"] or "corrupt" in rej["reason"]
    assert t["documents_accepted"] == _decodable_records(bytes(data), codec) < 400
    assert t["tokens_in"] == t["tokens_out"]
    with pytest.raises(InputError, match=rf"bad\.jsonl\.{codec}:line \d+"):
        _run(tmp_path, path, "fail")


def test_missing_path_is_an_error_before_any_work(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="no such file"):
        pipelines.run(None, base_overrides(out, str(tmp_path / "nope.jsonl")))
    with pytest.raises(ConfigError, match="matches nothing"):
        pipelines.run(None, base_overrides(out, str(tmp_path / "*.parquet")))
    assert not out.exists()


def test_unreadable_file(tmp_path):
    good = tmp_path / "data" / "a.jsonl"
    good.parent.mkdir()
    good.write_bytes(_lines())
    os.symlink(tmp_path / "gone", tmp_path / "data" / "b.jsonl")  # listed, cannot be opened
    result, out = _run(tmp_path, tmp_path / "data" / "*.jsonl")
    assert result["manifest"]["totals"]["documents_accepted"] == 5
    (rej,) = _rejects(out)
    assert rej["file"].endswith("b.jsonl") and rej["reason"].startswith("cannot read")
    with pytest.raises(InputError, match=r"b\.jsonl"):
        _run(tmp_path, tmp_path / "data" / "*.jsonl", "fail")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_file_without_read_permission(tmp_path):
    path = tmp_path / "locked.jsonl"
    path.write_bytes(_lines())
    path.chmod(0)
    _, out = _run(tmp_path, path)
    assert "cannot read" in _rejects(out)[0]["reason"]


def test_file_tree_bad_files(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "good.py").write_text("print('hello')\n")
    (tree / "empty.py").write_text("")
    (tree / "latin1.py").write_bytes(b"# caf\xe9\n")
    (tree / "big.py").write_text("x = 1\n" * 2000)
    result, out = _run(tmp_path, tree, **{"input.max_document_bytes": 10_000})
    assert result["manifest"]["totals"]["documents_accepted"] == 1
    reasons = {os.path.basename(r["file"]): r["reason"] for r in _rejects(out)}
    assert reasons["empty.py"] == "empty document"
    assert reasons["latin1.py"].startswith("invalid UTF-8 at byte 5")
    assert "exceeds" in reasons["big.py"]


def test_parquet_bad_values_and_missing_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": [GOOD[0], None, "", GOOD[1]]}), path)
    result, out = _run(tmp_path, path)
    assert result["manifest"]["totals"]["documents_accepted"] == 2
    assert [r["row"] for r in _rejects(out)] == [1, 2]
    other = tmp_path / "b.parquet"
    pq.write_table(pa.table({"body": [GOOD[0]]}), other)
    with pytest.raises(InputError, match="no column 'text'"):
        _run(tmp_path, other, "fail")
