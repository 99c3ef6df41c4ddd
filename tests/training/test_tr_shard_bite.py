"""training.shard_checks names the first damaged row of a record batch, whatever comes after it."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipelines.infra.shard_format import SCHEMA
from training.shard_checks import ShardError, decode_batch


def _batch(cols: dict) -> pa.RecordBatch:
    """A record batch from raw (offsets, values), built from buffers so nothing is validated."""
    arrays = []
    for field in SCHEMA:
        offsets, values = cols[field.name]
        arrays.append(pa.Array.from_buffers(
            field.type, len(offsets) - 1,
            [None, pa.py_buffer(np.asarray(offsets, np.int32).tobytes())],
            children=[pa.array(values, type=field.type.value_type)]))
    return pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)


# three rows of 2, 1 and 2 tokens; one document each
GOOD = {"input_ids": ([0, 2, 3, 5], [7, 8, 9, 10, 11]), "doc_lens": ([0, 1, 2, 3], [2, 1, 2]),
        "doc_ids": ([0, 1, 2, 3], [4, 5, 6]), "chunk_index": ([0, 1, 2, 3], [0, 0, 0])}


@pytest.mark.parametrize("damage, message", [
    ({"doc_lens": ([0, 1, 2, 3], [2, 2, 1])}, "row 1: doc_lens sum to 2 but the row has 1 tokens"),
    ({"doc_ids": ([0, 1, 1, 3], [4, 5, 6])}, "row 1: 0 doc_ids for 1 documents"),
])
def test_the_first_damaged_row_is_named(damage, message):
    with pytest.raises(ShardError) as err:
        decode_batch(_batch({**GOOD, **damage}), "shard-00000.arrow (record batch 0)")
    assert str(err.value).startswith(f"shard-00000.arrow (record batch 0): {message}"), str(err.value)
