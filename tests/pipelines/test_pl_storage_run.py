"""Inputs on S3 or GCS (real protocol servers on 127.0.0.1): ``input.paths`` URLs plan the same
sources as their local copy, and a local-engine run whose inputs (and tokenizer.json) are on a
store writes the same shards, byte for byte, as the run of the same files on a local disk."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pipelines
from pipelines.infra import atomic, storage
from pipelines.infra.errors import ConfigError
from pipelines.infra.shard_format import list_shards, open_shard
from tests.pipelines.conftest import base_overrides, english_records, write_jsonl
from tests.pipelines.object_stores import gcs_server, object_store, s3_server  # noqa: F401


def test_input_paths_on_a_store_plan_like_their_local_copy(object_store, tmp_path):
    from pipelines.config import InputConfig
    from pipelines.steps.plan import resolve_sources

    for name in ("d/a.jsonl", "d/b.jsonl.gz", "d/sub/c.jsonl", "d/sub/deep/e.txt", "d/.hidden",
                 "d/sub/a/z.txt", "d/sub.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(name.encode())
        atomic.write_bytes(object_store.url(name), name.encode())
    trees = {"include": ("*.txt", "*.jsonl"), "exclude": ("sub/deep/*",), "max_documents": 3}
    for entries, extra in ((["d/*.jsonl*", "d/sub"], {}), (["d/**/*.jsonl"], {}), (["d"], {}),
                           (["d/s*"], {}), (["d"], trees)):
        local = resolve_sources(InputConfig(paths=tuple(f"{tmp_path}/{e}" for e in entries),
                                            **extra))
        remote = resolve_sources(InputConfig(paths=tuple(object_store.url(e) for e in entries),
                                             **extra))
        assert [(s.key[len(str(tmp_path)):], s.format, s.size) for s in local] == \
            [(s.key[len(object_store.root):], s.format, s.size) for s in remote]
    with pytest.raises(ConfigError, match=r"input.paths\[0\] '.*://no-such-bucket-fewtrunc/d/"
                                          r"\*.jsonl': bucket 'no-such-bucket-fewtrunc' does "
                                          "not exist"):
        resolve_sources(InputConfig(paths=(
            f"{object_store.server.scheme}://no-such-bucket-fewtrunc/d/*.jsonl",)))
    with pytest.raises(ConfigError, match="matches nothing"):
        resolve_sources(InputConfig(paths=(object_store.url("d/*.parquet"),)))
    with pytest.raises(ConfigError, match="no such file or object"):
        resolve_sources(InputConfig(paths=(object_store.url("d/none.jsonl"),)))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Local files: jsonl.gz, jsonl.zst and Parquet with an id field, a file tree, a tokenizer."""
    from pipelines.infra.tokenizer import load_tokenizer

    root = tmp_path_factory.mktemp("corpus")
    recs = [{"text": r["text"], "id": i} for i, r in enumerate(english_records(60))]
    (root / "data").mkdir()
    write_jsonl(root / "data" / "a.jsonl.gz", recs[:20], "gz")
    write_jsonl(root / "data" / "b.jsonl.zst", recs[20:40], "zst")
    pq.write_table(pa.table({"text": [r["text"] for r in recs[40:]], "id": list(range(40, 60))}),
                   root / "data" / "c.parquet", row_group_size=7)
    for i, r in enumerate(recs[:12]):
        (root / "tree" / ("sub" if i % 3 else ".")).mkdir(parents=True, exist_ok=True)
        (root / "tree" / ("sub" if i % 3 else ".") / f"doc{i:02d}.txt").write_text(r["text"])
    (root / "tok").mkdir()
    (root / "tok" / "tokenizer.json").write_text(load_tokenizer().to_str())
    return root


def _upload(corpus, store):
    for path in sorted(p for p in corpus.rglob("*") if p.is_file()):
        atomic.write_bytes(store.url(str(path.relative_to(corpus))), path.read_bytes())


def _shards(out) -> dict:
    return {p.name: p.read_bytes() for p in list_shards(out)}


def test_inputs_and_tokenizer_on_a_store_give_the_local_shards(object_store, corpus, tmp_path):
    _upload(corpus, object_store)
    extra = {"input.id_field": "id"}
    pipelines.run(None, base_overrides(tmp_path / "local", f"{corpus}/data/*", **extra,
                                       **{"tokenizer.path": f"{corpus}/tok/tokenizer.json"}))
    remote_tok = {"tokenizer.path": object_store.url("tok/tokenizer.json")}
    pipelines.run(None, base_overrides(tmp_path / "remote", object_store.url("data/*"), **extra,
                                       **remote_tok))
    local = _shards(tmp_path / "local")
    assert local and _shards(tmp_path / "remote") == local


def test_a_file_tree_on_a_store_packs_as_its_local_copy(object_store, corpus, tmp_path):
    """Ids of a tree's files hash their names as written (a URL here), so the id column differs;
    every other column is the same."""
    _upload(corpus, object_store)
    pipelines.run(None, base_overrides(tmp_path / "local", f"{corpus}/tree"))
    pipelines.run(None, base_overrides(tmp_path / "remote", object_store.url("tree")))
    cols = ("input_ids", "doc_lens", "chunk_index")
    local = [open_shard(p).select(cols) for p in list_shards(tmp_path / "local")]
    remote = [open_shard(p).select(cols) for p in list_shards(tmp_path / "remote")]
    assert local and [t.to_pylist() for t in remote] == [t.to_pylist() for t in local]


def test_a_missing_tokenizer_object_is_a_config_error_naming_it(object_store):
    from pipelines.infra.tokenizer import load_tokenizer

    url = object_store.url("tok/missing.json")
    with pytest.raises(ConfigError, match=rf"tokenizer.path '{url}': no such object"):
        load_tokenizer(url)


def test_an_object_gone_after_planning_is_a_reject_naming_it(object_store):
    from pipelines.config import InputConfig
    from pipelines.steps.plan import plan_units
    from pipelines.steps.read import Reader

    for name in ("g/a.jsonl", "g/b.jsonl"):
        atomic.write_text(object_store.url(name), '{"text": "hello"}\n')
    cfg = InputConfig(paths=(object_store.url("g/*.jsonl"),))
    (unit,) = plan_units(cfg)
    storage.remove(object_store.url("g/a.jsonl"))
    (batch,) = Reader(cfg)(unit)
    assert batch.texts == ["hello"]
    assert batch.rejects == [{"file": object_store.url("g/a.jsonl"), "reason":
                              f"cannot read: {object_store.url('g/a.jsonl')}: no such object"}]
