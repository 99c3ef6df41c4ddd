"""PackedCollator and pack_dataset refuse rows that are not token ids (floats, strings, nested lists,
None, negative ids, uint64 above 2**63, ids past token_map), naming the row; good rows of every
integer type still collate to the same batch."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pipelines.infra.errors import InputError  # noqa: E402
from training.hf import PackedCollator  # noqa: E402

GOOD = {"input_ids": [1, 2, 3], "doc_lens": [1, 2]}


@pytest.mark.parametrize("ids, message", [
    ([1, -1, 3], "token id -1 is negative"),
    ([1.0, 2.0, 3.0], "input_ids holds floats (float64); token ids must be integers"),
    (torch.tensor([1.0, 2.0, 3.0]), "input_ids holds floats (float32)"),
    (["1", "2", "3"], "input_ids holds strings"),
    ([[1, 2], [3]], "input_ids must be a flat list of integers, got nested lists"),
    ([[1], [2], [3]], "input_ids must be a flat list of integers, got nested lists"),
    ([1, None, 3], "input_ids holds None or values that are not 64-bit integers"),
    ([True, False, True], "input_ids holds booleans"),
    (np.array([1, 2**63 + 5, 3], dtype=np.uint64), "input_ids holds 9223372036854775813, above 2**63 - 1"),
    ([1, 2**64 + 1, 3], "input_ids holds None or values that are not 64-bit integers"),
    (7, "input_ids must be a flat list of integers, got a single value"),
])
def test_bad_ids_are_refused_with_the_row(ids, message):
    with pytest.raises(InputError) as err:
        PackedCollator()([GOOD, GOOD, {"input_ids": ids, "doc_lens": [1, 2], "index": 41}])
    assert str(err.value).startswith(f"row 2 of the batch (dataset row 41): {message}"), str(err.value)
    assert isinstance(err.value, ValueError)  # what the collator raised for bad rows before


@pytest.mark.parametrize("layout", ["flatten", "stack"])
def test_ids_must_fit_the_token_map(layout):
    mapping = np.arange(10)[::-1]
    collator = PackedCollator(layout=layout, token_map=mapping)
    with pytest.raises(InputError, match=r"^row 1 of the batch: token id 10 is not below the token_map's 10 entries"):
        collator([GOOD, {"input_ids": [4, 10, 2], "doc_lens": [3]}])
    with pytest.raises(InputError, match=r"^row 0 of the batch: token id -1 is negative"):  # not token_map[-1]
        collator([{"input_ids": [-1, 2], "doc_lens": [2]}, GOOD])
    assert collator([GOOD, {"input_ids": [9, 0], "doc_lens": [2]}])["input_ids"].reshape(-1).tolist()[:3] == [8, 7, 6]


@pytest.mark.parametrize("lens, message", [
    ([0, 3], "row 1 of the batch: doc_lens must be positive, got 0"),
    ([1.0, 2.0], "row 1 of the batch: doc_lens holds floats"),
    ([[1], [2]], "row 1 of the batch: doc_lens must be a flat list of integers"),
    ([1, 1], "row 1 of the batch: 3 tokens but doc_lens sum to 2"),
])
def test_bad_doc_lens_are_refused_with_the_row(lens, message):
    with pytest.raises(InputError, match="^" + message.replace("(", r"\(")):
        PackedCollator()([GOOD, {"input_ids": [1, 2, 3], "doc_lens": lens}])


def test_every_integer_type_collates_to_the_same_batch():
    expected = PackedCollator(layout="stack")([GOOD, {"input_ids": [5, 6], "doc_lens": [2]}])
    for kind in (np.int32, np.int64, np.uint16, np.uint32, np.uint64):
        rows = [{"input_ids": np.array(GOOD["input_ids"], kind), "doc_lens": np.array(GOOD["doc_lens"], kind)},
                {"input_ids": torch.tensor([5, 6], dtype=torch.int32), "seq_lengths": [2]}]
        batch = PackedCollator(layout="stack")(rows)
        assert batch.keys() == expected.keys()
        for key, value in expected.items():
            assert torch.equal(batch[key], value) if isinstance(value, torch.Tensor) else batch[key] == value


@pytest.mark.parametrize("ids, message", [
    ([[1, 2], [3, -1]], "row 1 of the dataset: token id -1 is negative"),
    ([[1, 2], [3, 4], [5.5]], "row 2 of the dataset: input_ids holds double values"),
    ([["a"], ["b", "c"]], "row 0 of the dataset: input_ids holds string values"),
    ([[[1], [2]], [[3]]], "row 0 of the dataset: input_ids holds nested lists"),
    ([[1, 2], [3, None]], "row 1 of the dataset: input_ids holds a null (None) token"),
    ([[1, 2], [3], None], "row 2 of the dataset: input_ids is null"),
])
def test_pack_dataset_refuses_rows_that_are_not_token_ids(ids, message):
    datasets = pytest.importorskip("datasets")
    from training.hf import pack_dataset

    with pytest.raises(InputError) as err:
        pack_dataset(datasets.Dataset.from_dict({"input_ids": ids}), 4)
    assert str(err.value).startswith(message), str(err.value)


def test_pack_dataset_refuses_uint64_ids_above_int64():
    datasets = pytest.importorskip("datasets")
    import pyarrow as pa

    from training.hf import pack_dataset

    table = pa.table({"input_ids": pa.array([[1], [2, 3], [2**63 + 1]], type=pa.list_(pa.uint64()))})
    with pytest.raises(InputError, match=r"^row 2 of the dataset: token id 9223372036854775809 is above 2\*\*63 - 1"):
        pack_dataset(datasets.Dataset(table), 4)
    ok = pa.table({"input_ids": pa.array([[1], [2, 3]], type=pa.list_(pa.uint64()))})
    assert sorted(sum(pack_dataset(datasets.Dataset(ok), 4)[:]["input_ids"], [])) == [1, 2, 3]
