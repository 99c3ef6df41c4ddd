"""training.shard_checks: each kind of damage a record batch can carry is one ShardError that says
what and where; an intact batch decodes to offsets starting at 0 and its values."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from pipelines.infra.shard_format import SCHEMA
from training.shard_checks import ShardError, decode_batch, open_shard_file, read_batch

GOOD = {"input_ids": ([0, 3, 5], [7, 8, 9, 10, 11]), "doc_lens": ([0, 2, 3], [1, 2, 2]),
        "doc_ids": ([0, 2, 3], [4, 5, 6]), "chunk_index": ([0, 2, 3], [0, 0, 1])}


def _batch(cols: dict) -> pa.RecordBatch:
    """A record batch from raw (offsets, values), built from buffers so nothing is validated."""
    arrays = []
    for field in SCHEMA:
        offsets, values = cols[field.name]
        child = pa.array(values, type=field.type.value_type)
        arrays.append(pa.Array.from_buffers(field.type, len(offsets) - 1,
                                            [None, pa.py_buffer(np.asarray(offsets, np.int32).tobytes())],
                                            children=[child]))
    return pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)


def test_an_intact_batch_decodes_to_offsets_from_zero():
    cols = decode_batch(_batch(GOOD), "f")
    assert cols["input_ids"][0].tolist() == [0, 3, 5] and cols["input_ids"][1].tolist() == [7, 8, 9, 10, 11]
    # a batch whose offsets start past 0 (a slice): offsets rebased, values cut to the rows
    shifted = dict(GOOD, input_ids=([2, 5, 7], [99, 99, 7, 8, 9, 10, 11]))
    offsets, values = decode_batch(_batch(shifted), "f")["input_ids"]
    assert offsets.tolist() == [0, 3, 5] and values.tolist() == [7, 8, 9, 10, 11]


@pytest.mark.parametrize("damage, message", [
    ({"input_ids": ([0, 4, 3], [7, 8, 9, 10, 11])}, "column 'input_ids': offsets decrease at row 1 (4 -> 3)"),
    ({"doc_lens": ([0, 2, 3], [1, 1, 2])}, "row 0: doc_lens sum to 2 but the row has 3 tokens"),
    ({"doc_lens": ([0, 2, 3], [3, 0, 2])}, "row 0: a document length of 0"),
    ({"doc_lens": ([0, 2, 3], [1, 2, -2])}, "row 1: a document length of -2"),
    ({"doc_ids": ([0, 1, 3], [4, 5, 6])}, "row 0: 1 doc_ids for 2 documents"),
    ({"chunk_index": ([0, 2, 2], [0, 0, 1])}, "row 1: 0 chunk_index for 1 documents"),
    ({"input_ids": ([0, 3, 5], [7, 8, 9, -1, 11])}, "row 1: negative input_ids value -1"),
    ({"chunk_index": ([0, 2, 3], [0, 0, -5])}, "row 1: negative chunk_index value -5"),
    ({"input_ids": ([0, 0, 5], [7, 8, 9, 10, 11]), "doc_lens": ([0, 0, 3], [1, 2, 2]),
      "doc_ids": ([0, 0, 3], [4, 5, 6]), "chunk_index": ([0, 0, 3], [0, 0, 1])}, "row 0 has no tokens"),
])
def test_each_damage_is_named_with_its_row(damage, message):
    with pytest.raises(ShardError) as err:
        decode_batch(_batch({**GOOD, **damage}), "dir/shard-00003.arrow (record batch 2)")
    assert str(err.value).startswith(f"dir/shard-00003.arrow (record batch 2): {message}"), str(err.value)


def test_offsets_past_the_values_in_a_file(tmp_path):
    """Arrow checks the span of the offsets when it is asked to (``validate``), never when it reads
    a file: the reader asks."""
    sink = pa.BufferOutputStream()
    with ipc.new_file(sink, SCHEMA) as w:
        w.write_batch(_batch(GOOD))
    data = sink.getvalue().to_pybytes()
    good, bad = np.array([0, 3, 5], "<i4").tobytes(), np.array([0, 3, 9], "<i4").tobytes()
    assert data.count(good) == 1
    reader = open_shard_file(pa.BufferReader(data.replace(good, bad)), "f")
    expected = r"^f \(record batch 0\): cannot be decoded \(.*offsets \(9\) larger than values"
    with pytest.raises(ShardError, match=expected):
        read_batch(reader, 0, "f")


def test_files_that_are_not_shards(tmp_path):
    where = str(tmp_path / "shard-00000.arrow")
    with pytest.raises(ShardError, match=r"shard-00000.arrow: no such file"):
        open_shard_file(where, where)
    (tmp_path / "shard-00000.arrow").write_bytes(b"")
    with pytest.raises(ShardError, match="not a readable Arrow IPC file"):
        open_shard_file(where, where)
    (tmp_path / "shard-00000.arrow").write_bytes(b"ARROW1" + b"\0" * 100)
    with pytest.raises(ShardError, match="not a readable Arrow IPC file"):
        open_shard_file(where, where)
    other = pa.schema([("input_ids", pa.list_(pa.float32())), ("doc_lens", pa.list_(pa.int32()))])
    with ipc.new_file(where, other) as w:
        w.write_table(pa.table({"input_ids": [[1.0]], "doc_lens": [[1]]}, schema=other))
    with pytest.raises(ShardError, match="column 'input_ids' is list<item: float>, not a list of integers"):
        open_shard_file(where, where)
    no_ids = pa.schema([("doc_lens", pa.list_(pa.int32()))])
    with ipc.new_file(where, no_ids) as w:
        w.write_table(pa.table({"doc_lens": [[1]]}, schema=no_ids))
    with pytest.raises(ShardError, match="no column 'input_ids'"):
        open_shard_file(where, where)


def test_a_shard_from_memory_or_a_file_reads_the_same(tmp_path):
    path = tmp_path / "shard-00000.arrow"
    with ipc.new_file(str(path), SCHEMA, options=ipc.IpcWriteOptions(compression="zstd")) as w:
        w.write_batch(_batch(GOOD))
    from_file = read_batch(open_shard_file(path, str(path)), 0, str(path))
    from_memory = read_batch(open_shard_file(pa.BufferReader(path.read_bytes()), "mem"), 0, "mem")
    for name in GOOD:
        assert [a.tolist() for a in from_file[name]] == [a.tolist() for a in from_memory[name]] \
            == [list(x) for x in GOOD[name]]
