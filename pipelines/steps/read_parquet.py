"""Parquet: the ``input.text_field`` column, streamed in row batches (never the whole file)."""
from __future__ import annotations

from typing import Iterator

from pipelines.errors import InputError
from pipelines.steps.read import Record


def records(source, cfg) -> Iterator[Record]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(source.path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(source.path, f"not a readable Parquet file: {exc}") from exc
    names = pf.schema_arrow.names
    if cfg.text_field not in names:
        raise InputError(source.path, f"no column {cfg.text_field!r} (columns: {names})")
    columns = [cfg.text_field] + ([cfg.id_field] if cfg.id_field in names else [])
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=1024, columns=columns):
            texts = batch.column(0).to_pylist()
            keys = batch.column(1).to_pylist() if len(columns) > 1 else [None] * len(texts)
            for text, key in zip(texts, keys):
                yield Record(row, text, key, len(text) if isinstance(text, str) else 0)
                row += 1
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{source.path}:row {row}", f"corrupt Parquet data: {exc}") from exc
