"""PackedCollator: the padding-free batch format, from shard directories and `datasets` alike."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from training.data import ShardDataset  # noqa: E402
from training.hf import IGNORE_INDEX, PackedCollator, shard_rows  # noqa: E402

ROWS = [{"input_ids": np.array([1, 2, 3, 4, 5]), "doc_lens": np.array([2, 3])},
        {"input_ids": [6, 7, 8], "seq_lengths": [3]}]


def test_flattened_batch_restarts_positions_and_never_targets_across_documents():
    b = PackedCollator(flash_attn_kwargs=True, seq_idx=True)(ROWS)
    assert b["input_ids"].tolist() == [[1, 2, 3, 4, 5, 6, 7, 8]]
    assert b["labels"].tolist() == [[-100, 2, -100, 4, 5, -100, 7, 8]]
    assert b["position_ids"].tolist() == [[0, 1, 0, 1, 2, 0, 1, 2]]
    assert b["seq_idx"].tolist() == [[0, 0, 1, 1, 1, 2, 2, 2]]
    assert b["cu_seq_lens_q"].tolist() == b["cu_seq_lens_k"].tolist() == [0, 2, 5, 8]
    assert b["max_length_q"] == b["max_length_k"] == 3
    assert b["cu_seq_lens_q"].dtype == b["seq_idx"].dtype == torch.int32
    assert b["input_ids"].dtype == b["labels"].dtype == b["position_ids"].dtype == torch.int64


def test_same_names_and_values_as_transformers_flattening_collator():
    transformers = pytest.importorskip("transformers")
    docs = [[1, 2], [3, 4, 5], [6, 7, 8]]
    theirs = transformers.DataCollatorWithFlattening(return_flash_attn_kwargs=True, return_seq_idx=True)(
        [{"input_ids": d} for d in docs])
    ours = PackedCollator(flash_attn_kwargs=True, seq_idx=True)(
        [{"input_ids": sum(docs, []), "doc_lens": [2, 3, 3]}])
    assert set(theirs) == set(ours) - {"use_cache"} and ours["use_cache"] is False
    for key in theirs:
        t, o = theirs[key], ours[key]
        assert (t.tolist() if hasattr(t, "tolist") else t) == (o.tolist() if hasattr(o, "tolist") else o), key


def test_stacked_rows_pad_as_a_sequence_of_their_own():
    b = PackedCollator(layout="stack", flash_attn_kwargs=True, seq_idx=True, pad_id=9, pad_to_multiple=4)(ROWS)
    assert b["input_ids"].tolist() == [[1, 2, 3, 4, 5, 9, 9, 9], [6, 7, 8, 9, 9, 9, 9, 9]]
    assert b["labels"].tolist() == [[-100, 2, -100, 4, 5, -100, -100, -100], [-100, 7, 8] + [-100] * 5]
    assert b["position_ids"].tolist() == [[0, 1, 0, 1, 2, 0, 1, 2], [0, 1, 2, 0, 1, 2, 3, 4]]
    assert b["seq_idx"].tolist() == [[0, 0, 1, 1, 1, 2, 2, 2], [3, 3, 3, 4, 4, 4, 4, 4]]
    assert b["cu_seq_lens_q"].tolist() == [0, 2, 5, 8, 11, 16]


def test_4d_mask_is_block_diagonal_and_causal():
    b = PackedCollator(mask="4d", mask_dtype=torch.bool)(ROWS)
    m = b["attention_mask"][0, 0]
    seq = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2])
    q, k = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    assert torch.equal(m, (seq[q] == seq[k]) & (k <= q))
    additive = PackedCollator(layout="stack", mask="4d", mask_dtype=torch.float32)(ROWS)["attention_mask"]
    assert additive.shape == (2, 1, 5, 5) and additive.dtype == torch.float32
    assert set(additive.unique().tolist()) == {0.0, torch.finfo(torch.float32).min}
    assert (additive[1, 0].diagonal() == 0).all()  # padding attends to itself: no empty softmax row


def test_bad_rows_are_refused():
    with pytest.raises(ValueError, match="doc_lens"):
        PackedCollator()([{"input_ids": [1, 2, 3], "doc_lens": [2]}])
    with pytest.raises(ValueError, match="empty"):
        PackedCollator()([])
    with pytest.raises(KeyError, match="doc_lens"):
        PackedCollator()([{"input_ids": [1, 2]}])


def test_shard_directory_and_datasets_arrow_give_the_same_batches(shard_dir):
    datasets = pytest.importorskip("datasets")
    rows_dir = shard_rows(shard_dir)
    assert isinstance(rows_dir, ShardDataset)
    rows_hf = shard_rows(shard_dir, use_datasets=True)
    assert isinstance(rows_hf, datasets.Dataset) and len(rows_hf) == len(rows_dir)
    assert len(shard_rows(str(shard_dir / "shard-*.arrow"))) == len(rows_dir)
    collator = PackedCollator(flash_attn_kwargs=True, seq_idx=True)
    for idx in ([0, 1, 2, 3], [5, len(rows_dir) - 1]):
        a = collator([rows_dir[i] for i in idx])
        b = collator([rows_hf[i] for i in idx])
        for key in a:
            assert (a[key].tolist() if hasattr(a[key], "tolist") else a[key]) == \
                   (b[key].tolist() if hasattr(b[key], "tolist") else b[key]), key
    # every target of a flattened batch is the next token of the same document
    batch = collator([rows_dir[i] for i in range(len(rows_dir))])
    ids, labels, seq = batch["input_ids"][0], batch["labels"][0], batch["seq_idx"][0]
    targets = labels[1:] != IGNORE_INDEX
    assert torch.equal(seq[1:][targets], seq[:-1][targets])
    assert int(targets.sum()) == ids.numel() - int(batch["cu_seq_lens_q"].numel() - 1)


def test_token_map_remaps_ids_but_not_the_ignored_labels():
    mapping = np.arange(10)[::-1]  # id -> 9 - id
    b = PackedCollator(token_map=mapping)(ROWS)
    assert b["input_ids"].tolist() == [[8, 7, 6, 5, 4, 3, 2, 1]]
    assert b["labels"].tolist() == [[-100, 7, -100, 5, 4, -100, 2, 1]]
