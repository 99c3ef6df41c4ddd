"""The exact BFD passes (sorted list for small inputs — its loop in Python and, when built, in C —
and the histogram for large ones) give the same assignment as the naive item-by-item BFD, on
either side of the dispatch rule; the buffered packer keeps its round and carry rules whatever the
push sizes, with the compiled loop or without it."""
import importlib.util
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import packing.bfd
from packing import BufferedPacker, pack
from packing.bfd import (SMALL_PER_SIZE, bfd_assign_compiled, bfd_assign_histogram,
                         bfd_assign_small, bfd_assign_small_python)

_spec = importlib.util.spec_from_file_location("naive", Path(__file__).with_name("naive.py"))
naive = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(naive)

KERNEL = packing.bfd.kernel
needs_kernel = pytest.mark.skipif(
    KERNEL is None, reason="packing._bfd_kernel is not built (no C compiler at install, or "
    "FEWTRUNC_PURE_PYTHON=1): only the Python loop is tested")
LOOPS = ["python", pytest.param("compiled", marks=needs_kernel)]


@contextmanager
def loop(which):
    """Run ``pack`` and ``BufferedPacker`` with the Python loop or the compiled one."""
    saved = packing.bfd.kernel
    packing.bfd.kernel = KERNEL if which == "compiled" else None
    try:
        yield
    finally:
        packing.bfd.kernel = saved


cases = st.integers(1, 70).flatmap(
    lambda cap: st.tuples(st.just(cap), st.lists(st.integers(1, cap), max_size=150)))


@settings(max_examples=300, deadline=None)
@given(case=cases)
def test_every_pass_equals_naive_assignment(case):
    cap, lengths = case
    want = naive.naive_bfd_assignment(lengths, cap)
    arr = np.asarray(lengths, dtype=np.int64)
    if not arr.size:
        return
    tiny = packing.bfd.TINY
    try:
        for packing.bfd.TINY in (0, tiny):  # the small pass with numpy's preparation, and Python's
            got, n_bins = bfd_assign_small_python(arr, cap)
            assert got.tolist() == want and n_bins == max(want) + 1
    finally:
        packing.bfd.TINY = tiny
    got, n_bins = bfd_assign_histogram(arr, cap)
    assert got.tolist() == want and n_bins == max(want) + 1
    if KERNEL is None:
        return
    sort_in_c = packing.bfd.SORT_IN_C
    try:
        for packing.bfd.SORT_IN_C in (0, 10**9):  # numpy's radix sort, and the kernel's own
            got, n_bins = bfd_assign_compiled(arr, cap)
            assert got.tolist() == want and n_bins == max(want) + 1
            got, n_bins = bfd_assign_compiled(np.repeat(arr, 2)[::2], cap)  # a strided view
            assert got.tolist() == want and n_bins == max(want) + 1
    finally:
        packing.bfd.SORT_IN_C = sort_in_c


@needs_kernel
@settings(max_examples=300, deadline=None)
@given(case=st.integers(1, 300).flatmap(
    lambda cap: st.tuples(st.just(cap), st.lists(st.integers(1, cap), min_size=1, max_size=400))))
def test_kernel_structures_agree(case):
    # open bins in one sorted array (mode 1) or by remaining room (mode 2), items sorted by
    # numpy or by the kernel: the same assignment as the histogram pass
    cap, lengths = case
    x = np.asarray(lengths, dtype=np.int64)
    want, n_bins = bfd_assign_histogram(x, cap)
    for mode in (0, 1, 2):
        for order in (None, packing.bfd.descending_order(x, cap)):
            out = np.empty(x.size, dtype=np.int64)
            assert KERNEL.assign(x, order, cap, out, mode) == n_bins
            assert np.array_equal(out, want)


@pytest.mark.parametrize("which", LOOPS)
@settings(max_examples=60, deadline=None)
@given(cap=st.integers(2, 12), seed=st.integers(0, 2**32 - 1),
       n=st.integers(1, 4 * SMALL_PER_SIZE * 12))
def test_dispatch_boundary_many_repeats(which, cap, seed, n):
    # few distinct sizes and long runs: both sides of the rule, same assignment
    x = np.random.default_rng(seed).integers(1, cap + 1, n)
    with loop(which):
        a, _ = bfd_assign_small(x, cap)
        b, _ = bfd_assign_histogram(x, cap)
        assert np.array_equal(a, b) and np.array_equal(pack(x, cap).assignment, a)


@pytest.mark.parametrize("which", LOOPS)
@pytest.mark.parametrize("capacity,n", [(2048, 60_000), (8192, 30_000), (100, 20_000)])
def test_large_inputs_same_assignment(which, capacity, n):
    x = np.clip(np.random.default_rng(capacity).lognormal(5.5, 1.3, n).astype(np.int64),
                1, capacity)
    with loop(which):
        a, na = bfd_assign_small(x, capacity)
    b, nb = bfd_assign_histogram(x, capacity)
    assert na == nb and np.array_equal(a, b)


@pytest.mark.parametrize("which", LOOPS)
@settings(max_examples=150, deadline=None)
@given(case=st.integers(2, 30).flatmap(
    lambda cap: st.tuples(st.just(cap), st.lists(st.integers(1, cap), max_size=120))),
    mult=st.integers(2, 6), cuts=st.lists(st.integers(0, 120), max_size=6),
    min_fill=st.sampled_from([0.0, 0.8, 0.99, 1.0]))
def test_buffered_packer_equals_naive_rules_for_any_push_sizes(which, case, mult, cuts, min_fill):
    cap, lengths = case
    want = naive.naive_buffered(lengths, cap, mult * cap, min_fill)
    got = []
    with loop(which):
        p = BufferedPacker(cap, mult * cap, min_fill=min_fill)
        for part in np.split(np.asarray(lengths, dtype=np.int64), sorted(set(cuts))):
            out = p.push(part)
            got += [out.items[a:b].tolist() for a, b in zip(out.offsets[:-1], out.offsets[1:])]
        out = p.flush()
    got += [out.items[a:b].tolist() for a, b in zip(out.offsets[:-1], out.offsets[1:])]
    assert got == want


@needs_kernel
@settings(max_examples=40, deadline=None)
@given(cap=st.sampled_from([64, 2048]), seed=st.integers(0, 2**32 - 1),
       pushes=st.lists(st.integers(1, 700), min_size=1, max_size=12),
       min_fill=st.sampled_from([0.0, 0.5, 0.99, 1.0]))
def test_buffered_packer_compiled_equals_python_on_long_streams(cap, seed, pushes, min_fill):
    # the compiled loop and the compiled round split (carried bins, grouping by bin) against
    # numpy's
    x = np.random.default_rng(seed).integers(1, cap + 1, sum(pushes))
    runs = []
    for which in ("python", "compiled"):
        with loop(which):
            p, pos, got = BufferedPacker(cap, 8 * cap, min_fill=min_fill), 0, []
            for k in pushes:
                got.append(p.push(x[pos : pos + k]))
                pos += k
            got.append(p.flush())
        runs.append([(b.items.tolist(), b.offsets.tolist()) for b in got])
    assert runs[0] == runs[1]


@needs_kernel
def test_kernel_refuses_bad_buffers_instead_of_reading_past_them():
    x, out = np.array([3, 1, 2], dtype=np.int64), np.empty(3, dtype=np.int64)
    assert KERNEL.assign(x, np.array([0, 2, 1]), 3, out) == 2 and out.tolist() == [0, 1, 1]
    assert KERNEL.assign(x, None, 3, out) == 2 and out.tolist() == [0, 1, 1]  # sorted in C
    with pytest.raises(ValueError, match="out of range"):
        KERNEL.assign(x, np.array([0, 2, 3]), 3, out)
    with pytest.raises(ValueError, match="out of range"):
        KERNEL.assign(x, np.array([0, 2, 1]), 2, out)  # a length over the capacity
    with pytest.raises(ValueError, match="out of range"):
        KERNEL.assign(np.array([3, 0, 2]), None, 3, out)  # a length under 1
    with pytest.raises(ValueError, match="out of range"):
        KERNEL.assign(x, None, 2**62, out)  # keys would overflow
    with pytest.raises(ValueError, match="same size"):
        KERNEL.assign(x, np.array([0, 2]), 3, out)
    with pytest.raises(ValueError, match="same size"):
        KERNEL.assign(x, None, 3, out[:2])
    with pytest.raises(TypeError, match="int64"):
        KERNEL.assign(x.astype(np.int32), np.array([0, 2, 1]), 3, out)
    with pytest.raises((TypeError, ValueError, BufferError)):
        KERNEL.assign(x, np.array([0, 2, 1]), 3, out[::-1])  # not contiguous
    assert KERNEL.assign(x[:0], np.array([], dtype=np.int64), 3, out[:0]) == 0
    a, order, offsets = np.array([0, 1, 1]), np.empty(3, np.int64), np.empty(3, np.int64)
    # both bins hold 3 tokens, under 3.5: the budget of 3 carries one, the lower bin on the tie
    assert KERNEL.split_round(a, x, 2, 3.5, 3, False, order, offsets) == (1, 2)
    assert order.tolist() == [1, 2, 0] and offsets[:2].tolist() == [0, 2]
    with pytest.raises(ValueError, match="bin out of range"):
        KERNEL.split_round(np.array([0, 2, 1]), x, 2, 3.0, 3, False, order, offsets)
    with pytest.raises(ValueError, match="sizes do not match"):
        KERNEL.split_round(a, x, 3, 3.0, 3, False, order, offsets)  # offsets too short


def test_pure_python_switch():
    code = "import packing.bfd as b; print(b.kernel is None)"
    env = {**os.environ, "FEWTRUNC_PURE_PYTHON": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "True"


def test_stale_kernel_falls_back_to_python_with_a_warning():
    code = ("import sys, types, warnings; warnings.simplefilter('error'); "
            "sys.modules['packing._bfd_kernel'] = types.ModuleType('packing._bfd_kernel')\n"
            "try:\n    import packing.bfd\n"
            "except RuntimeWarning as w:\n    print('rebuilt' in str(w))")
    env = {k: v for k, v in os.environ.items() if k != "FEWTRUNC_PURE_PYTHON"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "True"
