"""Small real corpora and helpers shared by the pipeline tests."""
from __future__ import annotations

import json
import sysconfig
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import zstandard

from pipelines.infra.shard_format import list_shards, open_shard
from pipelines.steps.plan import ASSETS

STDLIB = Path(sysconfig.get_paths()["stdlib"])
ENGLISH = ASSETS / "python-docs-en.jsonl.zst"


def english_records(n: int | None = None) -> list[dict]:
    data = zstandard.ZstdDecompressor().stream_reader(ENGLISH.read_bytes()).read()
    recs = [json.loads(line) for line in data.decode().splitlines()]
    return recs[:n] if n else recs


def write_jsonl(path: Path, records, compress: str = "") -> Path:
    raw = "".join(json.dumps(r) + "\n" for r in records).encode()
    if compress == "gz":
        import gzip

        raw = gzip.compress(raw, mtime=0)
    elif compress == "zst":
        raw = zstandard.ZstdCompressor().compress(raw)
    path.write_bytes(raw)
    return path


def base_overrides(out: Path, *paths: str, **extra) -> list[str]:
    items = {"input.paths": ",".join(paths), "output.dir": str(out), "pack.seq_len": 256,
             "output.rows_per_shard": 40, "output.report": "false", **extra}
    return [f"{k}={v}" for k, v in items.items()]


def segments_by_doc(out: Path) -> dict[int, np.ndarray]:
    """doc_id -> its tokens, re-assembled from every shard in chunk order."""
    pieces: dict[int, list] = defaultdict(list)
    for shard in list_shards(out):
        for row in open_shard(shard).to_pylist():
            pos = 0
            for n, did, c in zip(row["doc_lens"], row["doc_ids"], row["chunk_index"]):
                pieces[did].append((c, row["input_ids"][pos : pos + n]))
                pos += n
    out_map = {}
    for did, parts in pieces.items():
        parts.sort(key=lambda p: p[0])
        assert [c for c, _ in parts] == list(range(len(parts))), f"doc {did}: chunks missing"
        out_map[did] = np.concatenate([np.asarray(p, dtype=np.int64) for _, p in parts])
    return out_map


def file_bytes(out: Path, skip=("timings.json",)) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(out).iterdir())
            if p.is_file() and p.name not in skip}


@pytest.fixture(scope="session")
def tokenizer():
    from pipelines.infra.tokenizer import load_tokenizer

    return load_tokenizer()
