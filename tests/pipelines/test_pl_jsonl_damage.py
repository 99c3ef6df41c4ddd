"""JSON lines that do not parse and compressed streams that are damaged: a bad line is one reject
on its own line number and reading goes on; a damaged zstd stream keeps every record that decodes
before the damage, exactly as many as gzip keeps for the same damage."""
import json
import sys
import zlib

import pytest
import zstandard

import pipelines
from pipelines.config import load_run_config
from pipelines.infra.errors import InputError
from pipelines.steps.plan import plan_units
from pipelines.steps.read import Reader
from tests.pipelines.conftest import ENGLISH, base_overrides

GOOD = [json.dumps({"text": f"document {i} is fine"}) for i in range(4)]
DIGITS = sys.get_int_max_str_digits()  # 4300 unless the environment changes it


def _run(out, path, policy="skip"):
    return pipelines.run(None, base_overrides(out, str(path), **{"input.on_error": policy}))


def _rejects(out):
    return [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]


def _nested(depth: int) -> str:
    """A record whose "n" field makes the line ``depth`` arrays and objects deep in all."""
    return '{"text": "deep", "n": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


BAD_LINES = {  # line (after two good ones) -> its reject's reason
    '{"text": "x", "n": ' + "7" * (DIGITS + 1) + "}": f"integer with more than {DIGITS} digits",
    _nested(1025): "JSON nested deeper than 1024 levels",
    '{"text": "x", "n": [' + "9" * 5000 + ", NaN]}": f"integer with more than {DIGITS} digits",
    _nested(100_000): "JSON nested deeper than 1024 levels",
}


def test_lines_that_do_not_parse_are_rejects_on_their_own_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    body = GOOD[:2] + list(BAD_LINES) + [_nested(1024)] + GOOD[2:]  # 1024 deep is still fine
    path.write_text("\n".join(body) + "\n")
    result = _run(tmp_path / "o", path)
    t = result["manifest"]["totals"]
    assert (t["documents_read"], t["documents_accepted"], t["documents_rejected"]) == (9, 5, 4)
    assert _rejects(tmp_path / "o") == [{"file": str(path), "line": 3 + i, "reason": reason}
                                         for i, reason in enumerate(BAD_LINES.values())]
    cfg = load_run_config(None, base_overrides(tmp_path / "f", str(path),
                                               **{"input.on_error": "fail"})).input
    with pytest.raises(InputError) as err:
        [b for unit in plan_units(cfg) for b in Reader(cfg)(unit)]
    assert str(err.value) == f"{path}:line 3: integer with more than {DIGITS} digits"


def test_deep_nesting_that_only_json_sees_is_a_reject_not_a_crash(tmp_path):
    """orjson refuses the NaN first (under its depth limit); json then runs out of recursion."""
    path = tmp_path / "deep.jsonl"
    deep = '{"text": "x", "n": ' + "[" * 1020 + "NaN" + "]" * 1020 + "}"
    path.write_text("\n".join(GOOD[:2] + [deep] + GOOD[2:]) + "\n")
    result = _run(tmp_path / "o", path)
    assert result["manifest"]["totals"]["documents_accepted"] == 4
    (rej,) = _rejects(tmp_path / "o")
    assert rej == {"file": str(path), "line": 3,
                   "reason": "JSON nested too deeply for Python's json parser"}


# --- zstd damage against gzip's -----------------------------------------------------------------

def _blocks(frame: bytes) -> list[tuple[int, int]]:
    """(offset, end) of every block of a zstd frame (RFC 8878, 3.1.1), read from the headers."""
    fhd = frame[4]
    single, fcs, did = fhd >> 5 & 1, fhd >> 6, fhd & 3
    pos = 5 + (not single) + (0, 1, 2, 4)[did] + ((1 if single else 0), 2, 4, 8)[fcs]
    out = []
    while True:
        header = int.from_bytes(frame[pos : pos + 3], "little")
        kind, size = header >> 1 & 3, header >> 3
        end = pos + 3 + (1 if kind == 1 else size)  # an RLE block stores one byte
        out.append((pos, end))
        if header & 1:
            return out
        pos = end


def _flip(data: bytes, at: int, n: int = 8) -> bytes:
    damaged = bytearray(data)
    for i in range(at, at + n):
        damaged[i] ^= 0xFF
    return bytes(damaged)


def _read(tmp_path, path):
    cfg = load_run_config(None, base_overrides(tmp_path / "o", str(path)))
    batches = [b for unit in plan_units(cfg.input) for b in Reader(cfg.input)(unit)]
    return [t for b in batches for t in b.texts], [r for b in batches for r in b.rejects]


def _gz_damaged_at(raw: bytes, at: int) -> bytes:
    """gzip of ``raw``, damaged from its decompressed byte ``at`` on: a full flush there starts
    a fresh, byte-aligned deflate block that refers to nothing before it, and its first bytes
    are flipped. Every byte before ``at`` decodes; nothing from ``at`` on does."""
    c = zlib.compressobj(6, zlib.DEFLATED, 31)
    head = c.compress(raw[:at]) + c.flush(zlib.Z_FULL_FLUSH)
    return _flip(head + c.compress(raw[at:]) + c.flush(), len(head))


def test_zstd_keeps_every_record_before_the_damaged_block_as_gzip_does(tmp_path):
    """Bytes flipped at a third of the shipped asset (one zstd frame of 8 blocks). zstd checks
    and decodes a block whole, so damage anywhere in block k loses all of block k: in the
    decompressed stream the damage starts at block k's first byte, X. The same damage for
    gzip is damage at decompressed byte X (``_gz_damaged_at``). Both keep exactly the records
    whose line ends before X; before the fix zstd lost everything in the same 64 KiB read
    (here: all of them)."""
    data = ENGLISH.read_bytes()
    raw = zstandard.ZstdDecompressor().decompress(data)
    at = len(data) // 3
    start = next(b for b, e in _blocks(data) if b <= at < e)  # the damaged block
    x = len(zstandard.ZstdDecompressor().decompressobj().decompress(data[:start]))
    before = raw[:x].count(b"\n")  # the records whose line ends before X
    assert 0 < x < len(raw) and before > 50
    zst, gz = tmp_path / "d.jsonl.zst", tmp_path / "d.jsonl.gz"
    zst.write_bytes(_flip(data, at))
    gz.write_bytes(_gz_damaged_at(raw, x))
    zst_texts, zst_rejects = _read(tmp_path, zst)
    gz_texts, gz_rejects = _read(tmp_path, gz)
    expected = [json.loads(line)["text"] for line in raw[:x].splitlines()[:before]]
    assert zst_texts == gz_texts == expected
    (broken,) = zst_rejects
    assert (broken["file"], broken["line"]) == (str(zst), before + 1)  # where it broke
    assert broken["reason"].startswith("corrupt zstd stream: ")
    *garbled, gz_broken = gz_rejects  # gzip may inflate a few wrong bytes before it notices
    assert [r["line"] for r in garbled] == list(range(before + 1, gz_broken["line"]))
    assert all(r["reason"].startswith(("malformed", "invalid")) for r in garbled)
    assert gz_broken["reason"].startswith("corrupt or truncated")


@pytest.mark.parametrize("where", ["local", "memory"])
def test_zstd_damage_in_a_later_frame_keeps_the_frames_and_blocks_before(tmp_path, where):
    """Two frames; the second has a block per line, and one is damaged whose previous block
    ends in the same decompress call: that call raises, and the previous block's line comes
    only from the salvage, which decodes the second frame again from its own start (on a store:
    a stream that cannot seek, read forward) and skips what was given."""
    from pipelines.infra import atomic
    from pipelines.steps.read_zstd import FEED

    raw = zstandard.ZstdDecompressor().decompress(ENGLISH.read_bytes())
    lines = raw.splitlines(keepends=True)
    c = zstandard.ZstdCompressor(write_checksum=True).compressobj()
    frame2 = b"".join(c.compress(line) + c.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
                      for line in lines[60:]) + c.flush()
    blocks = _blocks(frame2)  # pieces are FEED bytes from the frame's start
    k = next(k for k in range(10, len(blocks)) if blocks[k][1] - blocks[k][0] > 64
             and (blocks[k - 1][1] - 1) // FEED == (blocks[k][1] - 1) // FEED)
    first = b"".join(lines[:60])
    data = zstandard.ZstdCompressor().compress(first) + _flip(frame2, sum(blocks[k]) // 2)
    x = len(first) + len(
        zstandard.ZstdDecompressor().decompressobj().decompress(frame2[: blocks[k][0]]))
    kept = raw[:x].count(b"\n")
    assert kept == 60 + k  # a line per block
    path = tmp_path / "two.jsonl.zst"
    path.write_bytes(data)
    if where == "memory":
        path = f"memory://fewtrunc-test/{tmp_path.name}/two.jsonl.zst"
        atomic.write_bytes(path, data)
    texts, rejects = _read(tmp_path, path)
    assert texts == [json.loads(line)["text"] for line in lines[:kept]]
    assert [(r["line"], r["reason"].split(":")[0]) for r in rejects] == [
        (kept + 1, "corrupt zstd stream")]


def test_a_zstd_bomb_is_decoded_in_bounded_chunks(tmp_path):
    """192 MiB of zeros in ~6 KB (RLE blocks: 4 bytes for 128 KiB). One decompress call of the
    whole file would hold all of it at once; pieces of FEED bytes hold at most FEED / 4 blocks
    of 128 KiB, joined into chunks of about CHUNK."""
    from pipelines.steps.read_jsonl import _chunks
    from pipelines.steps.read_zstd import CHUNK, FEED

    c = zstandard.ZstdCompressor(level=19).compressobj()
    zeros = bytes(1 << 24)
    data = b"".join(c.compress(zeros) for _ in range(12)) + c.flush()
    path = tmp_path / "bomb.jsonl.zst"
    path.write_bytes(data)
    assert len(data) < 10_000
    total, largest = 0, 0
    with open(path, "rb") as f:
        for chunk in _chunks(f):
            total, largest = total + len(chunk), max(largest, len(chunk))
    assert total == 12 << 24
    assert largest <= CHUNK + FEED // 4 * (128 << 10)  # 65 MiB, not 192
