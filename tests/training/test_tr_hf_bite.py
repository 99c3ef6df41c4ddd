"""Which bad row the HF inputs' errors name when several are bad: the first (``pack_dataset``'s
docstring promises it; the collator's line agrees), not the row of the most extreme value."""
from __future__ import annotations

import pyarrow as pa
import pytest

from training.hf import PackedCollator
from training.hf.collator import RowError
from training.hf.pack import pack_table

def test_pack_dataset_names_the_first_row_with_a_negative_id():
    with pytest.raises(RowError, match=r"row 1 of the dataset: token id -1 is negative"):
        pack_table(pa.table({"input_ids": [[1, 2], [3, -1], [4, -5]]}), 8)


def test_pack_dataset_names_the_first_row_with_an_id_above_int64():
    ids = pa.array([[1], [2**63], [2**64 - 1]], type=pa.list_(pa.uint64()))
    with pytest.raises(RowError, match=r"row 1 of the dataset: token id 9223372036854775808 is "
                                       r"above 2\*\*63 - 1"):
        pack_table(pa.table({"input_ids": ids}), 8)


def test_the_collator_names_the_first_bad_id_whatever_its_kind():
    # row 1 holds an id past the token_map, row 2 a negative one: the first bad row is named
    rows = [{"input_ids": [0, 1], "doc_lens": [2]}, {"input_ids": [5, 1], "doc_lens": [2]},
            {"input_ids": [-1], "doc_lens": [1]}]
    with pytest.raises(RowError, match=r"row 1 of the batch: token id 5 is not below the "
                                       r"token_map's 3 entries"):
        PackedCollator(token_map=[7, 8, 9])(rows)


def test_the_collator_names_the_first_row_with_a_negative_id():
    rows = [{"input_ids": [1, 2], "doc_lens": [2]}, {"input_ids": [3, -1], "doc_lens": [2]},
            {"input_ids": [4, -5], "doc_lens": [2]}]
    with pytest.raises(RowError, match=r"row 1 of the batch: token id -1 is negative"):
        PackedCollator()(rows)


def test_the_collator_names_the_first_row_with_a_bad_document_length():
    rows = [{"input_ids": [1, 2], "doc_lens": [2]}, {"input_ids": [3, 1], "doc_lens": [0, 2]},
            {"input_ids": [4, 5], "doc_lens": [-1, 3]}]
    with pytest.raises(RowError, match=r"row 1 of the batch: doc_lens must be positive, got 0"):
        PackedCollator()(rows)


def test_an_id_equal_to_the_token_maps_length_is_refused_in_its_row():
    rows = [{"input_ids": [0, 1], "doc_lens": [2]}, {"input_ids": [2, 3], "doc_lens": [1, 1]}]
    with pytest.raises(RowError, match=r"row 1 of the batch: token id 3 is not below the "
                                       r"token_map's 3 entries"):
        PackedCollator(token_map=[5, 6, 7])(rows)
    batch = PackedCollator(token_map=[5, 6, 7, 8])(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8]]


def test_a_bad_id_that_starts_a_row_is_named_in_that_row():
    rows = [{"input_ids": [4, 5], "doc_lens": [2]}, {"input_ids": [-3, 1], "doc_lens": [2]}]
    with pytest.raises(RowError, match=r"row 1 of the batch: token id -3 is negative"):
        PackedCollator()(rows)


@pytest.mark.parametrize("layout", ["flatten", "stack"])
def test_an_empty_row_is_refused(layout):
    rows = [{"input_ids": [4, 5], "doc_lens": [2]}, {"input_ids": [], "doc_lens": []}]
    with pytest.raises(RowError, match=r"row 1 of the batch: 0 tokens but doc_lens sum to 0 "
                                       r"\(an empty row"):
        PackedCollator(layout=layout)(rows)
