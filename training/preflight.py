"""A model's configuration checked against the shards before any step, one ``ConfigError`` each.

A model whose ``seq_len`` is shorter than the rows, or whose vocabulary is smaller than the ids,
used to fail at the first forward pass (or at the first batch that held a large id) with a
traceback. ``ShardDataset`` records the longest row and the largest id while it checks the shards
on opening, so these checks read nothing more.
"""
from __future__ import annotations

import json

import numpy as np

from pipelines.infra.errors import ConfigError


def packed_seq_len(dataset) -> tuple[int, str]:
    """The row length the shards were packed to: ``pack.seq_len`` of the run's ``manifest.json``
    (never less than the longest row), or the longest row when there is no manifest."""
    path = dataset.directory / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        seq_len = int(manifest["config"]["pack"]["seq_len"]) if manifest else 0
    except (OSError, ValueError, TypeError, KeyError):  # no usable manifest: the rows decide
        seq_len = 0
    if seq_len >= dataset.longest_row:
        return seq_len, f"pack.seq_len={seq_len} in {path.name}"
    return dataset.longest_row, "their longest row"


def check_seq_len(dataset, seq_len: int, what: str = "model.seq_len", advice: str = "") -> None:
    """Rows no longer than the model takes (``what`` names where ``seq_len`` comes from)."""
    need, source = packed_seq_len(dataset)
    if seq_len < need:
        raise ConfigError(f"{what}={seq_len} but the shards in {str(dataset.directory)!r} hold rows of {need} "
                          f"tokens ({source}): " + (advice or f"set {what}={need} or more"))


def check_ids_fit(dataset, n_ids: int, what: str) -> None:
    """Every raw id of the shards is below ``n_ids`` (the size of ``what``: a tokenizer, a map)."""
    if dataset.max_token_id >= n_ids:
        raise ConfigError(f"the shards in {str(dataset.directory)!r} hold token id {dataset.max_token_id}, "
                          f"but {what} has {n_ids} ids: use the tokenizer the shards were built with")


def check_vocab(dataset, vocab_size: int, token_map, what: str) -> None:
    """The model's ``vocab_size`` (``what`` says where it comes from) covers every id it will see:
    the shards' ids, or their images under ``token_map``."""
    if token_map is None:
        if dataset.max_token_id >= vocab_size:
            raise ConfigError(f"the shards in {str(dataset.directory)!r} hold token id {dataset.max_token_id}, "
                              f"outside the model's vocabulary ({what}): set model.vocab_size above "
                              f"{dataset.max_token_id}, use data.vocab_limit, or point data.tokenizer at the "
                              "tokenizer the shards were built with")
        return
    token_map = np.asarray(token_map)
    check_ids_fit(dataset, token_map.size, "the token map")
    top = int(token_map.max()) if token_map.size else -1
    if top >= vocab_size:
        raise ConfigError(f"the token map (data.vocab_limit) gives ids up to {top}, outside the model's "
                          f"vocabulary ({what}): set model.vocab_size above {top}, or 0")
