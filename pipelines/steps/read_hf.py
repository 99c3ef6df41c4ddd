"""Hugging Face ``datasets``: a directory written by ``save_to_disk``, or a ``load_dataset`` spec
(a local builder such as ``json``/``parquet`` with ``input.hf_data_files``, or a local dataset
directory). Rows are iterated in batches from the memory-mapped Arrow cache."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from pipelines.infra.errors import InputError
from pipelines.steps.sources import Record


def is_saved(directory: Path) -> bool:
    """Whether ``directory`` was written by ``save_to_disk`` (what input.format=auto reads as one
    dataset, not as a tree of files)."""
    return (directory / "state.json").is_file() and (directory / "dataset_info.json").is_file()


def _open(source, cfg):
    import datasets

    path = Path(source.path)
    if path.is_dir() and (path / "state.json").is_file():
        ds = datasets.load_from_disk(str(path))
    else:
        kwargs = {"split": cfg.hf_split}
        if cfg.hf_name:
            kwargs["name"] = cfg.hf_name
        if cfg.hf_data_files:
            kwargs["data_files"] = list(cfg.hf_data_files)
        ds = datasets.load_dataset(source.path, **kwargs)
    if isinstance(ds, datasets.DatasetDict):
        if cfg.hf_split not in ds:
            raise InputError(source.path, f"no split {cfg.hf_split!r} (splits: {list(ds)})")
        ds = ds[cfg.hf_split]
    return ds


def records(source, cfg, resumable=None) -> Iterator[Record]:
    try:
        ds = _open(source, cfg)
    except InputError:
        raise
    except Exception as exc:  # datasets raises many types for an unloadable spec
        raise InputError(source.path, f"cannot load dataset: {exc}") from exc
    if cfg.text_field not in ds.column_names:
        raise InputError(source.path, f"no column {cfg.text_field!r} (columns: {ds.column_names})")
    columns = [cfg.text_field] + ([cfg.id_field] if cfg.id_field in ds.column_names else [])
    ds = ds.select_columns(columns)
    row = 0
    for batch in ds.iter(batch_size=1024):
        texts = batch[cfg.text_field]
        keys = batch[cfg.id_field] if len(columns) > 1 else [None] * len(texts)
        for text, key in zip(texts, keys):
            yield Record(row, text, key, len(text) if isinstance(text, str) else 0,
                         None if text is not None else f"text field {cfg.text_field!r} is null")
            row += 1
