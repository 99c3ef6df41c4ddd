"""Every input format reads the same documents: jsonl (.gz), Parquet, file trees, HF datasets."""
import numpy as np
import pytest

import pipelines
from tests.pipelines.conftest import base_overrides, english_records, segments_by_doc, write_jsonl

TEXTS = [r["text"] for r in english_records(30)]


def _token_multiset(out):
    return sorted(tuple(v.tolist()) for v in segments_by_doc(out).values())


@pytest.fixture()
def reference(tmp_path):
    path = write_jsonl(tmp_path / "ref.jsonl.gz", [{"text": t} for t in TEXTS], "gz")
    pipelines.run(None, base_overrides(tmp_path / "ref", str(path)))
    return _token_multiset(tmp_path / "ref")


def test_parquet(tmp_path, reference):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": TEXTS}), tmp_path / "d.parquet", row_group_size=7)
    pipelines.run(None, base_overrides(tmp_path / "o", str(tmp_path / "d.parquet")))
    assert _token_multiset(tmp_path / "o") == reference


def test_file_tree_with_globs(tmp_path, reference):
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    for i, t in enumerate(TEXTS):
        (tree / ("sub" if i % 2 else ".") / f"doc{i:02d}.txt").write_text(t)
    (tree / "skip.md").write_text("not included")
    (tree / "sub" / "doc99.txt.bak").write_text("excluded")
    pipelines.run(None, base_overrides(tmp_path / "o", str(tree), **{
        "input.include": "'*.txt'", "input.exclude": "'*.bak'"}))
    assert _token_multiset(tmp_path / "o") == reference


def test_hf_save_to_disk_and_load_dataset(tmp_path, reference):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"text": TEXTS, "n": list(range(len(TEXTS)))})
    ds.save_to_disk(str(tmp_path / "saved"))
    pipelines.run(None, base_overrides(tmp_path / "o1", str(tmp_path / "saved"),
                                       **{"input.id_field": "n"}))
    assert _token_multiset(tmp_path / "o1") == reference
    assert sorted(segments_by_doc(tmp_path / "o1")) == list(range(len(TEXTS)))
    src = write_jsonl(tmp_path / "plain.jsonl", [{"text": t} for t in TEXTS])
    pipelines.run(None, base_overrides(tmp_path / "o2", "json", **{
        "input.format": "hf", "input.hf_data_files": str(src)}))
    assert _token_multiset(tmp_path / "o2") == reference


def test_doc_ids_are_stable_and_distinct(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in TEXTS])
    a = pipelines.run(None, base_overrides(tmp_path / "a", str(path)))
    b = pipelines.run(None, base_overrides(tmp_path / "b", str(path), **{"pack.seq_len": 512}))
    ids_a, ids_b = sorted(segments_by_doc(tmp_path / "a")), sorted(segments_by_doc(tmp_path / "b"))
    assert ids_a == ids_b and len(ids_a) == len(TEXTS)
    assert a["manifest"]["totals"]["tokens_in"] == b["manifest"]["totals"]["tokens_in"]
    assert np.all(np.asarray(ids_a) >= 0)
