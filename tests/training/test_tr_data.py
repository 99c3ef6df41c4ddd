import numpy as np
import pyarrow.ipc as ipc
import pytest

from pipelines.infra.errors import ConfigError
from pipelines.infra.shard_format import list_shards
from training.data import IGNORE_INDEX, DocumentCollator, ShardDataset, mask_documents



def test_dataset_reads_every_row_of_every_shard(shard_dir):
    ds = ShardDataset(shard_dir)
    rows = []
    for path in list_shards(shard_dir):
        rows += ipc.open_file(str(path)).read_all().to_pylist()
    assert len(ds) == len(rows) and len(list_shards(shard_dir)) == 2
    for i in (0, len(ds) // 2, len(ds) - 1):
        assert ds[i]["input_ids"].tolist() == rows[i]["input_ids"]
        assert ds[i]["doc_ids"].tolist() == rows[i]["doc_ids"]
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_empty_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no shards"):
        ShardDataset(tmp_path)


def test_labels_never_cross_a_document_boundary(row):
    batch = DocumentCollator()([row([1, 2, 3, 4, 5, 6], [2, 3, 1]), row([7, 8, 9], [3])])
    assert batch["labels"].tolist() == [
        [2, IGNORE_INDEX, 4, 5, IGNORE_INDEX, IGNORE_INDEX],
        [8, 9, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX],
    ]
    assert batch["input_ids"][1].tolist() == [7, 8, 9, 0, 0, 0]


def test_position_ids_restart_per_document_or_not(row):
    rows = [row([1, 2, 3, 4, 5, 6], [2, 3, 1]), row([7, 8, 9], [3])]
    reset = DocumentCollator(reset_position_ids=True)(rows)
    assert reset["position_ids"].tolist() == [[0, 1, 0, 1, 2, 0], [0, 1, 2, 3, 4, 5]]
    plain = DocumentCollator(reset_position_ids=False)(rows)
    assert plain["position_ids"].tolist() == [[0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5]]


def test_segments_and_cu_seqlens_follow_the_flattened_batch(row):
    batch = DocumentCollator(pad_to_multiple=4)([row([1, 2, 3, 4, 5, 6], [2, 3, 1]), row([7, 8, 9], [3])])
    assert batch["input_ids"].shape == (2, 8)
    assert batch["segment_ids"].tolist() == [[0, 0, 1, 1, 1, 2, -1, -1], [0, 0, 0, -1, -1, -1, -1, -1]]
    assert batch["cu_seqlens"].tolist() == [0, 2, 5, 6, 8, 11, 16]
    assert batch["max_seqlen"] == 5
    flat = batch["input_ids"].reshape(-1)
    assert flat[2:5].tolist() == [3, 4, 5]  # segment 1 of row 0 sits at cu_seqlens[1]:cu_seqlens[2]


def test_mask_documents_ignores_pruned_segments_only(row):
    batch = DocumentCollator()([row([1, 2, 3, 4, 5, 6], [2, 3, 1])])
    masked = mask_documents(batch, [np.array([True, False, True])])
    assert masked["labels"].tolist() == [[2, IGNORE_INDEX] + [IGNORE_INDEX] * 4]
    assert batch["labels"].tolist() == [[2, IGNORE_INDEX, 4, 5, IGNORE_INDEX, IGNORE_INDEX]]
