"""Manifest step: the record of a finished run, written last (it is the run's completion marker).

Everything in it is deterministic for the same input, config and installed packages; timings go to
``timings.json`` instead.

Each ``shards`` entry is a shard's marker: ``file``, ``rows``, ``tokens``, ``bytes``, ``sha256`` and
``batch_rows`` (the rows of each of its Arrow record batches, in file order). ``batch_rows`` lets
``training.streaming`` index a corpus of any size from this file alone, with no shard opened;
manifests of older runs lack it (the reader then reads the shards' footers).
"""
from __future__ import annotations

import importlib.metadata
import platform

from pipelines.infra.errors import FatalError
from pipelines.infra.shard_format import SCHEMA_VERSION

PACKAGES = ("fewtrunc", "numpy", "pyarrow", "tokenizers", "fastokens", "zstandard")


def package_versions() -> dict:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def build_manifest(*, config: dict, fingerprint: str, tokenizer: dict, inputs: dict,
                   shards: list, markers: list, stats: dict) -> dict:
    for s in shards:
        if "batch_rows" in s and sum(s["batch_rows"]) != s["rows"]:
            raise FatalError(f"{s['file']}: its record batches hold {sum(s['batch_rows'])} rows, "
                             f"its marker {s['rows']}")
    tokens_in = sum(m["tokens"] for m in markers)
    tokens_out = sum(s["tokens"] for s in shards)
    return {
        "schema_version": SCHEMA_VERSION,
        "run_fingerprint": fingerprint,
        "config": config,
        "tokenizer": tokenizer,
        "packages": package_versions(),
        "inputs": inputs,
        "shards": shards,
        "totals": {
            "documents_read": sum(m["records"] for m in markers),
            "documents_accepted": sum(m["accepted"] for m in markers),
            "documents_rejected": sum(m["rejected"] for m in markers),
            "documents_truncated": stats["documents_truncated"],
            "chunks": stats["segments"],
            "tokens_in": tokens_in,
            "tokens_out": tokens_out,
            "sequences": sum(s["rows"] for s in shards),
            "lower_bound": stats["lower_bound"],
            "overhead": stats["overhead"],
            "input_bytes": sum(m["bytes"] for m in markers),
            "documents_with_special_tokens": sum(m.get("special_token_docs", 0) for m in markers),
            "documents_guard_checked": sum(m.get("guard_docs", 0) for m in markers),
        },
        "checks": {
            "token_conservation": tokens_in == tokens_out,
            "documents_conserved": sum(m["records"] for m in markers)
            == sum(m["accepted"] + m["rejected"] for m in markers),
        },
    }
