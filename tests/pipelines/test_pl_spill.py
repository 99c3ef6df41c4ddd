"""SpillStore.gather (pipelines.steps.gather) against plain slicing of the unit files (int32 and 16-bit units, alone and
mixed), and a truncated spill caught."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.steps.gather import SpillStore


def _write_units(tmp_path, sizes, seed, widths=None):
    """Unit files of random ids; ``widths[u]`` 16 writes unit u as the 16-bit spill does."""
    rng = np.random.default_rng(seed)
    arrays = []
    for u, n in enumerate(sizes):
        a = rng.integers(0, 50257, n, dtype=np.int32)
        if widths is not None and widths[u] == 16:
            a.astype(np.uint16).tofile(tmp_path / f"unit-{u:05d}.tokens16")
        else:
            a.tofile(tmp_path / f"unit-{u:05d}.tokens")
        arrays.append(a)
    return arrays


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_units=st.integers(1, 4), n_seg=st.integers(0, 60),
       block=st.sampled_from([1, 7, 64, 1 << 18]), adjacent=st.floats(0, 1),
       direct=st.sampled_from([0, 10**9, None]), widths=st.sampled_from(["32", "16", "mixed"]))
def test_gather_matches_slicing(tmp_path_factory, seed, n_units, n_seg, block, adjacent, direct,
                                widths):
    """Both read paths (in place: direct=0; staged: direct=huge; chosen by length: None), on
    int32 units, 16-bit units, and both kinds in one store (work files of an older version)."""
    tmp = tmp_path_factory.mktemp("spill")
    rng = np.random.default_rng(seed)
    width = {"32": [32] * n_units, "16": [16] * n_units,
             "mixed": rng.choice([16, 32], n_units).tolist()}[widths]
    arrays = _write_units(tmp, rng.integers(1, 400, n_units), seed, width)
    unit = rng.integers(0, n_units, n_seg)
    start = np.empty(n_seg, np.int64)
    length = np.empty(n_seg, np.int64)
    for i in range(n_seg):  # test set-up only: some segments continue the previous one
        size = arrays[unit[i]].size
        if i and unit[i] == unit[i - 1] and rng.random() < adjacent \
                and start[i - 1] + length[i - 1] < size:
            start[i] = start[i - 1] + length[i - 1]
        else:
            start[i] = rng.integers(0, size)
        length[i] = rng.integers(0, size - start[i] + 1)
    want = (np.concatenate([arrays[u][s : s + n] for u, s, n in zip(unit, start, length)])
            if n_seg else np.zeros(0, np.int32))
    got = SpillStore(tmp, n_units).gather(unit, start, length, block_tokens=block,
                                                direct_min_tokens=direct)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("width, suffix, size", [(32, "tokens", 4), (16, "tokens16", 2)])
def test_truncated_spill_is_an_error(tmp_path, width, suffix, size):
    _write_units(tmp_path, [100], 0, [width])
    store = SpillStore(tmp_path, 1)
    with open(tmp_path / f"unit-00000.{suffix}", "r+b") as f:
        f.truncate(40 * size)
    for direct in (0, 10**9):
        with pytest.raises(OSError, match="short read"):
            store.gather(np.array([0]), np.array([30]), np.array([20]), direct_min_tokens=direct)


def test_in_place_reads_split_long_runs_into_several_vector_reads(tmp_path):
    """A run of more adjacent segments than one preadv takes (IOV_MAX) is read in pieces."""
    (a,) = _write_units(tmp_path, [1000], 1)
    store = SpillStore(tmp_path, 1)
    store.IOV_MAX = 3
    length = np.array([5, 0, 7, 1, 30, 2, 9, 11], np.int64)
    start = np.cumsum(length) - length + 100  # one run of 8 file-adjacent segments
    order = np.array([3, 0, 7, 1, 5, 2, 6, 4])  # asked for in another order than the file's
    got = store.gather(np.zeros(8, np.int64), start[order], length[order], direct_min_tokens=0)
    want = np.concatenate([a[s : s + n] for s, n in zip(start[order], length[order])])
    np.testing.assert_array_equal(got, want)
