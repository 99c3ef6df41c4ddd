"""pack_dataset: TRL's interface, fewtrunc's exact global Best-fit packing, nothing truncated."""
import numpy as np
import pytest

datasets = pytest.importorskip("datasets")
import pyarrow as pa  # noqa: E402

from packing import pack_token_lists  # noqa: E402
from training.hf import PackedCollator, pack_dataset  # noqa: E402


def _docs(n=300, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 90, n)
    lengths[::37] = 200  # a few longer than the sequence length
    return [rng.integers(0, 1000, k).astype(np.int32) for k in lengths]


def test_same_rows_as_packing_pack_token_lists():
    docs = _docs()
    ds = datasets.Dataset.from_dict({"input_ids": [d.tolist() for d in docs]})
    packed = pack_dataset(ds, 64)
    rows = pack_token_lists(docs, 64)
    table = packed.with_format("arrow")[:]
    assert packed.column_names == ["input_ids", "seq_lengths", "doc_ids", "chunk_index"]
    assert packed.num_rows == rows.n_rows
    flat = table.column("input_ids").combine_chunks()
    assert np.array_equal(flat.flatten().to_numpy(), rows.tokens)
    assert np.array_equal(flat.offsets.to_numpy(), rows.token_offsets)
    assert np.array_equal(table.column("seq_lengths").combine_chunks().flatten().to_numpy(), rows.seg_len)
    assert np.array_equal(table.column("doc_ids").combine_chunks().flatten().to_numpy(), rows.seg_doc)
    assert np.array_equal(table.column("chunk_index").combine_chunks().flatten().to_numpy(), rows.seg_chunk)
    assert sum(len(d) for d in docs) == len(rows.tokens)  # nothing truncated


def test_trl_docstring_example_keeps_every_token_and_aligned_columns():
    ds = datasets.Dataset.from_dict({"input_ids": [[1, 2, 3, 4, 5], [6, 7], [8, 9, 10], [11], []],
                                     "attention_mask": [[1, 1, 1, 0, 0], [1, 0], [1, 1, 0], [1], []]})
    out = pack_dataset(ds, seq_length=4, strategy="bfd")  # never truncates, even as "bfd"
    got = out[:]
    assert sorted(sum(got["input_ids"], [])) == list(range(1, 12))
    assert out.num_rows == 3
    for ids, mask, lens, docs, chunks in zip(*(got[k] for k in ("input_ids", "attention_mask", "seq_lengths",
                                                                "doc_ids", "chunk_index"))):
        assert len(ids) <= 4 and sum(lens) == len(ids) == len(mask)
        start = 0
        for n, d, c in zip(lens, docs, chunks):
            source = ds[d]
            assert ids[start:start + n] == source["input_ids"][4 * c:4 * c + n]
            assert mask[start:start + n] == source["attention_mask"][4 * c:4 * c + n]
            start += n


def test_shuffled_selections_dicts_and_formats():
    docs = _docs(120, seed=1)
    ds = datasets.Dataset.from_dict({"input_ids": [d.tolist() for d in docs]}).shuffle(seed=0).select(range(100))
    packed = pack_dataset(datasets.DatasetDict({"train": ds.with_format("numpy")}), 64)["train"]
    assert packed.format["type"] == "numpy"
    kept = [ds[i]["input_ids"] for i in range(100)]
    assert sorted(np.concatenate(packed["input_ids"]).tolist()) == sorted(sum(kept, []))
    batch = PackedCollator()([packed[i] for i in range(3)])  # feeds the collator directly
    assert batch["input_ids"].shape[1] == sum(len(packed[i]["input_ids"]) for i in range(3))


def test_columns_that_cannot_be_packed_are_named():
    with pytest.raises(ValueError, match="'text'"):
        pack_dataset(datasets.Dataset.from_dict({"input_ids": [[1, 2]], "text": ["ab"]}), 4)
    with pytest.raises(ValueError, match="'labels'.*not token-aligned"):
        pack_dataset(datasets.Dataset.from_dict({"input_ids": [[1, 2]], "labels": [[1]]}), 4)
    with pytest.raises(ValueError, match="strategy"):
        pack_dataset(datasets.Dataset.from_dict({"input_ids": [[1, 2]]}), 4, strategy="wrapped")


def test_blockwise_gather_and_the_arrow_fallback_agree():
    from training.hf.pack import gather

    rng = np.random.default_rng(2)
    values = pa.array(rng.integers(0, 100, 1000).astype(np.int16))
    seg_len = rng.integers(1, 9, 120)
    seg_start = rng.integers(0, 1000 - 8, 120)
    ends = np.concatenate([[0], np.cumsum(seg_len)])
    expected = np.concatenate([values.to_numpy()[s:s + n] for s, n in zip(seg_start, seg_len)])
    for block in (1, 7, 64, 1 << 22):
        out = gather(values, seg_start, seg_len, ends, block_tokens=block)
        assert out.type == pa.int16() and np.array_equal(out.to_numpy(), expected)
    flags = pa.array(values.to_numpy() % 2 == 0)  # bool: not zero-copy, Arrow take
    assert np.array_equal(gather(flags, seg_start, seg_len, ends).to_numpy(zero_copy_only=False), expected % 2 == 0)


def test_large_list_input_stays_large():
    table = pa.table({"input_ids": pa.array([[1, 2, 3], [4]], type=pa.large_list(pa.int64()))})
    out = pack_dataset(datasets.Dataset(datasets.table.InMemoryTable(table)), 4)
    assert pa.types.is_large_list(out.with_format("arrow")[:].column("input_ids").type)
    assert out[:]["input_ids"] == [[1, 2, 3, 4]]
