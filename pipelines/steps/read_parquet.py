"""Parquet: the ``input.text_field`` column, streamed in row batches (never the whole file), one
row group at a time: a damaged row group is one reject naming it and its rows, and the groups
around it are read."""
from __future__ import annotations

from typing import Iterator

from pipelines.infra.errors import InputError
from pipelines.steps.sources import Record


def records(source, cfg, resumable=None) -> Iterator[Record]:
    from pipelines.infra.storage import local_copy
    from pipelines.infra.storage.listing import not_regular
    from pipelines.infra.storage.location import Location
    from pipelines.infra.storage.reading import NotRegularFile

    where = Location.of(source.path)
    kind = not_regular(where.local_path) if where.regular_file_check else ""
    if kind:  # a FIFO since it was planned: Arrow's open would block on it
        raise NotRegularFile(source.path, kind)
    if source.part is not None:  # a piece: only its row groups are read (ranged, on a store)
        yield from _records(lambda: open_parquet(where), source, cfg)
        return
    with local_copy(source.path) as path:  # an object (s3://, gs://) is copied to scratch first
        yield from _records(lambda: open_parquet(path), source, cfg)


def open_parquet(path):
    """A ``pyarrow.parquet.ParquetFile`` read by random access: a local file, or an S3 object
    through ranged requests (its footer, then only the row groups read: a piece of a big file
    reads its own, not the whole object; ``cut.ranged``). ``path``: a str or ``Location``."""
    import pyarrow.parquet as pq

    from pipelines.infra.storage.listing import guarded
    from pipelines.infra.storage.location import Location

    where = Location.of(path)
    if not where.remote:
        return pq.ParquetFile(where.local_path)
    resolved = where.resolve()
    with guarded(where.text, resolved):
        return pq.ParquetFile(resolved.fs.open_input_file(resolved.path))


def _records(open_file, source, cfg) -> Iterator[Record]:
    """The records of the file ``open_file()`` opens; of a piece (``source.part``), those of its
    row groups, numbered as in the whole file."""
    import pyarrow as pa

    try:
        pf = open_file()
    except (pa.ArrowException, OSError) as exc:
        raise InputError(source.path, f"not a readable Parquet file: {exc}") from exc
    names = pf.schema_arrow.names
    if cfg.text_field not in names:
        raise InputError(source.path, f"no column {cfg.text_field!r} (columns: {names})")
    columns = [cfg.text_field] + ([cfg.id_field] if cfg.id_field in names else [])
    meta = pf.metadata
    null = f"text field {cfg.text_field!r} is null"
    part = source.part
    groups = range(meta.num_row_groups) if part is None else \
        range(part.seek, meta.num_row_groups if part.last else part.seek + part.length)
    first = 0 if part is None else part.first  # the first row of the current row group
    for group in groups:
        n_rows = meta.row_group(group).num_rows
        row = first
        try:
            for batch in pf.iter_batches(batch_size=1024, row_groups=[group], columns=columns):
                texts = batch.column(0).to_pylist()
                keys = batch.column(1).to_pylist() if len(columns) > 1 else [None] * len(texts)
                for text, key in zip(texts, keys):
                    yield Record(row, text, key, len(text) if isinstance(text, str) else 0,
                                 None if text is not None else null)
                    row += 1
        except (pa.ArrowException, OSError) as exc:
            # the rest of the group is one reject; the next group is read
            yield Record(row, None, None, 0, f"corrupt Parquet data in row group {group} (rows "
                         f"{row}..{first + n_rows - 1} not read): {exc}")
        first += n_rows
