"""Small real shard directories for the training tests: CPython's own source text, tokenized
with the default GPT-2 tokenizer, split and Best-fit packed by ``packing``, written with
``write_shard`` (the same contract the pipeline writes)."""
from __future__ import annotations

import sysconfig
from pathlib import Path

import numpy as np
import pytest

from packing import pack_token_lists
from pipelines.infra.shard_format import shard_name, write_shard
from pipelines.steps.write import packed_rows_table
from pipelines.infra.tokenizer import load_tokenizer

SEQ_LEN = 64
TINY = ["data.batch_size=4", "data.vocab_limit=256", "model.n_layers=2", "model.d_model=32",
        "model.n_heads=2", f"model.seq_len={SEQ_LEN}", "train.warmup_steps=2", "train.threads=1",
        "train.lr=0.01", "output.plot=false"]


def real_documents(n: int = 80, max_chars: int = 400) -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py"))[:n]
    # varied lengths: some documents longer than SEQ_LEN tokens, many shorter
    return [p.read_text(encoding="utf-8", errors="replace")[: 20 + (i * 97) % max_chars]
            for i, p in enumerate(files)]


def build_shards(directory: Path, docs: list[str], seq_len: int = SEQ_LEN, n_shards: int = 2,
                 doc_id_base: int = 1000) -> Path:
    tok = load_tokenizer(None)
    eos = tok.token_to_id("<|endoftext|>")
    ids = [np.asarray(e.ids + [eos], dtype=np.int32) for e in tok.encode_batch(docs)]
    rows = pack_token_lists(ids, seq_len)
    directory.mkdir(parents=True, exist_ok=True)
    table = packed_rows_table(rows, np.arange(len(ids), dtype=np.int64) + doc_id_base)
    bounds = np.linspace(0, table.num_rows, n_shards + 1).astype(int)
    for s in range(n_shards):
        write_shard(table.slice(bounds[s], bounds[s + 1] - bounds[s]), directory / shard_name(s),
                    compression="none" if s % 2 == 0 else "zstd")
    return directory


@pytest.fixture(scope="session")
def shard_dir(tmp_path_factory) -> Path:
    return build_shards(tmp_path_factory.mktemp("shards"), real_documents())


@pytest.fixture(scope="session")
def demo_config() -> str:
    return str(Path(__file__).resolve().parents[2] / "configs" / "train_demo.yaml")


def _row(ids, lens, index=0):
    return {"input_ids": np.asarray(ids, dtype=np.int64), "doc_lens": np.asarray(lens, np.int32),
            "doc_ids": np.arange(len(lens)) + 10, "chunk_index": np.zeros(len(lens), np.int32),
            "index": index}


@pytest.fixture
def row():
    """``row(ids, doc_lens)``: one dataset item, as ``ShardDataset`` returns it."""
    return _row


@pytest.fixture(scope="session")
def tiny() -> list[str]:
    """Overrides that make ``configs/train_demo.yaml`` a test-sized run."""
    return list(TINY)
