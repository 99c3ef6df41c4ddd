"""Shard directories for the streaming reader's tests (imported by test_tr_streaming_*.py).

- ``block_shards``: CPython source text tokenized with GPT-2's BPE and Best-fit packed (as
  ``conftest.build_shards``), written by the pipeline's ``write_shard_batches`` in record batches
  of a few rows, so a small directory has many blocks; zstd and uncompressed shards alternate.
  No manifest: the reader counts rows from the Arrow footers. 111 blocks of 24 rows (the last
  of each shard shorter), 2,626 rows of at most 64 tokens.
- ``pipeline_run``: a real ``fewtrunc run`` of the demo job with a sealed manifest that records
  ``batch_rows`` (seq_len 8192: 128-row record batches, 256 rows per shard).
"""
from __future__ import annotations

import json
import shutil
import sysconfig
from pathlib import Path

import numpy as np

from packing import pack_token_lists
from pipelines.infra.shard_format import shard_name, write_shard_batches
from pipelines.infra.manifest import manifest_seal
from pipelines.steps.write import packed_rows_table
from pipelines.infra.tokenizer import load_tokenizer

FIELDS = ("input_ids", "doc_lens", "doc_ids", "chunk_index")


def documents(n: int, max_chars: int) -> list[str]:
    """The first ``n`` Python files of this Python's standard library (sorted paths), cut to
    varied lengths up to ``max_chars``."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("**/*.py") if "site-packages" not in p.parts)[:n]
    return [p.read_text(encoding="utf-8", errors="replace")[: 20 + (i * 397) % max_chars]
            for i, p in enumerate(files)]


def block_shards(directory: Path, n_docs: int = 600, seq_len: int = 64, n_shards: int = 3,
                 batch: int = 24, max_chars: int = 1500) -> Path:
    tok = load_tokenizer(None)
    eos = tok.token_to_id("<|endoftext|>")
    docs = documents(n_docs, max_chars)
    ids = [np.asarray(e.ids + [eos], dtype=np.int32) for e in tok.encode_batch(docs)]
    table = packed_rows_table(pack_token_lists(ids, seq_len), np.arange(len(ids), dtype=np.int64) + 5000)
    bounds = np.linspace(0, table.num_rows, n_shards + 1).astype(int)
    directory.mkdir(parents=True, exist_ok=True)
    for s in range(n_shards):
        part = table.slice(bounds[s], bounds[s + 1] - bounds[s])
        pieces = [part.slice(a, batch).combine_chunks() for a in range(0, part.num_rows, batch)]
        write_shard_batches(pieces, directory / shard_name(s), "zstd" if s % 2 == 0 else "none")
    return directory


def shared_blocks(tmp_path_factory) -> Path:
    """``block_shards`` built once per test session (the test modules share it, read-only)."""
    directory = tmp_path_factory.getbasetemp() / "streaming-blocks"
    if not (directory / "done").is_file():
        block_shards(directory)
        (directory / "done").write_text("")
    return directory


def shared_run(tmp_path_factory) -> Path:
    """``pipeline_run`` made once per test session (the test modules share it, read-only)."""
    directory = tmp_path_factory.getbasetemp() / "streaming-run"
    if not (directory / "manifest.json").is_file():
        pipeline_run(directory)
    return directory


def pipeline_run(directory: Path) -> Path:
    import pipelines

    pipelines.run(str(Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"),
                  [f"output.dir={directory}", "pack.seq_len=8192", "output.rows_per_shard=256",
                   "output.report=false"])
    return directory


def edit_manifest(directory: Path, change) -> dict:
    """Apply ``change(manifest)`` and seal it again (as a run of that content would have)."""
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    manifest["seal"] = manifest_seal(manifest)
    path.write_text(json.dumps(manifest))
    return manifest


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def upload(directory: Path, url: str) -> str:
    """Every file of ``directory`` to the prefix ``url`` on the store the environment names."""
    from pipelines.infra.storage.filesystems import resolve

    for path in sorted(directory.iterdir()):
        loc = resolve(f"{url}/{path.name}")
        with loc.fs.open_output_stream(loc.path) as f:
            f.write(path.read_bytes())
    return url


def same_row(a: dict, b: dict) -> bool:
    return a["index"] == b["index"] and all(np.array_equal(a[k], b[k]) for k in FIELDS)
