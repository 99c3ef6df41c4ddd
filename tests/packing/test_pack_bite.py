"""Edges that random tests reach only by chance: a push that fills the buffer exactly, carried bins
that add up to exactly half of it, and which of several bad items an error names (the first)."""
from __future__ import annotations

import numpy as np
import pytest

import packing.bfd
from packing import BufferedPacker, pack, split_documents
from packing.partition import plan_partitions
from packing.validate import as_lengths

KERNEL = packing.bfd.kernel
# (algorithm, kernel): the numpy rounds (no kernel), the compiled push (bfd) and the compiled
# split after a numpy pack (ffd with the kernel)
PATHS = [("bfd", None), ("ffd", None),
         pytest.param("bfd", KERNEL, marks=pytest.mark.skipif(KERNEL is None, reason="no kernel")),
         pytest.param("ffd", KERNEL, marks=pytest.mark.skipif(KERNEL is None, reason="no kernel"))]


@pytest.fixture
def packer(request, monkeypatch):
    def make(algorithm, kernel, *args, **kw):
        monkeypatch.setattr(packing.bfd, "kernel", kernel)
        return BufferedPacker(*args, algorithm=algorithm, **kw)
    return make


def bins_of(out) -> list[list[int]]:
    return [out.items[a:b].tolist() for a, b in zip(out.offsets[:-1], out.offsets[1:])]


@pytest.mark.parametrize("algorithm, kernel", PATHS)
def test_a_push_that_fills_the_buffer_exactly_runs_a_round(packer, algorithm, kernel):
    p = packer(algorithm, kernel, 10, 20)
    assert bins_of(p.push([10, 9])) == []  # 19 of 20 tokens: no round yet
    assert p.rounds == 0 and p.buffered_tokens == 19
    out = p.push([1])  # exactly 20: the round runs now, not at the next push
    assert p.rounds == 1
    assert bins_of(out) == [[0], [1, 2]] and p.buffered_tokens == 0


@pytest.mark.parametrize("algorithm, kernel", PATHS)
def test_one_push_of_exactly_the_buffer(packer, algorithm, kernel):
    p = packer(algorithm, kernel, 10, 30)
    out = p.push(np.array([10, 10, 10], dtype=np.int64))
    assert p.rounds == 1 and bins_of(out) == [[0], [1], [2]] and p.buffered_tokens == 0


@pytest.mark.parametrize("algorithm, kernel", PATHS)
def test_carried_bins_may_add_up_to_exactly_half_the_buffer(packer, algorithm, kernel):
    # 40 tokens fill the buffer: bins 10, 10 (full) and 7, 7, 6 (low). The low ones, fewest
    # tokens first, add up to 6, 13, 20 <= 40 // 2: all three are carried
    p = packer(algorithm, kernel, 10, 40, min_fill=0.99)
    out = p.push([10, 10, 7, 7, 6])
    assert bins_of(out) == [[0], [1]]
    assert p.buffered_tokens == 20
    rest = p.flush()
    assert sorted(bins_of(rest)) == [[2], [3], [4]]


@pytest.mark.parametrize("algorithm, kernel", PATHS)
def test_carried_bins_stop_before_passing_half_the_buffer(packer, algorithm, kernel):
    # low bins 7, 7, 7, 9 add up to 7, 14, 21 > 40 // 2: the third 7 (ties by bin) and the 9 are
    # emitted with the full bin
    p = packer(algorithm, kernel, 10, 40, min_fill=0.99)
    out = p.push([9, 10, 7, 7, 7])
    assert bins_of(out) == [[1], [0], [4]]  # bins in opening order: 10 (item 1), 9, then 7s
    assert p.buffered_tokens == 14


# --- which bad item an error names: the first, with its index --------------------------------

@pytest.mark.parametrize("lengths, match", [
    ([3, 0, 9, -1], r"lengths\[1\] = 0 must be at least 1 \(3 bad item\(s\)\)"),
    ([3, 9, 0, 12], r"lengths\[1\] = 9 exceeds the capacity 8 \(3 bad item\(s\)\)"),
    ([4, 5, -2, 0], r"lengths\[2\] = -2 must be at least 1 \(2 bad item\(s\)\)"),
    ([3.0, 2.5, 1.5], r"lengths\[1\] = 2.5: lengths must be integers"),
    ([3.0, 4.0, float("nan"), 0.5], r"lengths\[2\] = nan: lengths must be integers"),
])
def test_a_length_error_names_the_first_bad_item(lengths, match):
    with pytest.raises(ValueError, match=match):
        as_lengths(lengths, 8)
    with pytest.raises(ValueError, match=match):
        pack(lengths, 8)


@pytest.mark.parametrize("kernel", [None, pytest.param(KERNEL, marks=pytest.mark.skipif(
    KERNEL is None, reason="no kernel"))])
@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_a_push_names_the_first_bad_item(monkeypatch, kernel, dtype):
    monkeypatch.setattr(packing.bfd, "kernel", kernel)
    p = BufferedPacker(8, 16)
    with pytest.raises(ValueError, match=r"lengths\[2\] = 9 exceeds the capacity 8 \(2 bad"):
        p.push(np.array([3, 4, 9, 0], dtype=dtype))


def test_split_names_the_first_empty_document():
    with pytest.raises(ValueError, match=r"doc_lengths\[1\] = 0 must be at least 1"):
        split_documents([5, 0, -3, 0], 4)


def test_a_negative_chunk_count_error_names_the_first():
    with pytest.raises(ValueError, match=r"unit_chunks\[1\] is negative"):
        plan_partitions(np.array([2, -1, -5]), 4)
