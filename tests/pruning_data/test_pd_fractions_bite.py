"""How many examples a pruning fraction keeps or drops, where binary floats put c * n a hair off a
whole number: 0.29 * 100 is 28.999999999999996 (floor gives 28, not 29), 0.07 * 100 is
7.000000000000001 (ceil gives 8), and 0.5 * 3 is 1.5 (round gives 2, floor 1). The counts are
exact integers by definition (floor(c * n) for the fractions of ENT and dynamic pruning), so they
are compared exactly."""
from __future__ import annotations

from fractions import Fraction
import math

import numpy as np
import pytest
import torch

from pruning_data import DynamicPruner, LossTruncation, ent_loss

# (fraction, n): floor(c * n) computed exactly, and why the pair is here
CASES = [
    (0.29, 100),  # 28.999999999999996: a floor of the float product says 28
    (0.57, 100),  # 56.99999999999999
    (0.58, 100),  # 57.99999999999999
    (0.07, 100),  # 7.000000000000001: a ceil says 8
    (0.5, 3),  # 1.5: round() says 2
    (0.3, 7),  # 2.1
]


def exact_floor(fraction: float, n: int) -> int:
    return math.floor(Fraction(str(fraction)) * n)


@pytest.mark.parametrize("fraction, n", CASES)
def test_dynamic_pruner_window_sizes_are_floor_of_c_n(fraction, n):
    keep = DynamicPruner(n, keep_fraction=fraction, full_epochs=0)
    assert keep.n_keep == exact_floor(fraction, n)
    skip = DynamicPruner(n, keep_fraction=0.0, offset_fraction=fraction, full_epochs=0)
    assert skip.n_skip == exact_floor(fraction, n)


def test_dynamic_pruner_keeps_the_window_after_the_offset():
    # 0.29 + 0.57 of 100: skip the 57 hardest, keep the next 29 (ranks 57..85)
    pruner = DynamicPruner(100, keep_fraction=0.29, offset_fraction=0.57, full_epochs=0)
    scores = np.arange(100, dtype=np.float64)[::-1].copy()  # example i has rank i
    pruner.update(scores)
    assert pruner.indices(0).tolist() == list(range(57, 86))


@pytest.mark.parametrize("fraction, n", CASES)
def test_ent_token_fraction_drops_floor_of_c_n(fraction, n):
    gen = torch.Generator().manual_seed(n)
    logits = torch.randn(1, n, 5, generator=gen)
    targets = torch.randint(0, 5, (1, n), generator=gen)
    _, info = ent_loss(logits, targets, fraction=fraction)
    assert info.n_dropped == int(info.dropped.sum()) == exact_floor(fraction, n)


@pytest.mark.parametrize("fraction, n", [(0.29, 100), (0.07, 100), (0.5, 3)])
def test_ent_sequence_fraction_drops_floor_of_c_n_rows(fraction, n):
    gen = torch.Generator().manual_seed(n)
    logits = torch.randn(n, 2, 5, generator=gen)
    targets = torch.randint(0, 5, (n, 2), generator=gen)
    _, info = ent_loss(logits, targets, fraction=fraction, level="sequence")
    assert info.n_dropped_sequences == exact_floor(fraction, n)
    assert int(info.dropped.all(dim=1).sum()) == exact_floor(fraction, n)


@pytest.mark.parametrize("fraction", [0.29, 0.07, 0.5])
def test_loss_truncation_drops_that_fraction_of_distinct_losses(fraction):
    # 100 distinct losses: np.percentile's cut-off falls between two of them, and exactly
    # round(c * 100) are above it (the cut-off's own rounding cannot tip a loss either way)
    trunc = LossTruncation(drop_fraction=fraction, min_count=100)
    keep = trunc(torch.arange(100, dtype=torch.float64))
    assert int((~keep).sum()) == round(fraction * 100)
    assert bool(keep[0]) and not bool(keep[-1])


@pytest.mark.parametrize("fraction", [0.34, 0.55, 0.67, 0.8])
def test_loss_truncation_cut_off_on_a_whole_index_keeps_that_loss(fraction):
    # 101 losses 0..100: the (1-c) percentile is exactly the loss 100*(1-c), which "kept iff
    # loss <= cut-off" keeps: exactly 100*c are dropped
    trunc = LossTruncation(drop_fraction=fraction, min_count=101)
    keep = trunc(torch.arange(101, dtype=torch.float64))
    assert int((~keep).sum()) == round(fraction * 100)
    # the cut-off is that loss itself (one of the buffer's values: exact by construction)
    assert trunc.cutoff == round(100 * (1 - fraction))


def test_after_a_batch_larger_than_the_window_the_window_still_drops_the_oldest_first():
    trunc = LossTruncation(drop_fraction=0.5, min_count=4, buffer_size=4)
    trunc(torch.arange(6, dtype=torch.float64))  # the window holds losses 2, 3, 4, 5
    keep = trunc(torch.tensor([10.0], dtype=torch.float64))  # 2 leaves: 3, 4, 5, 10
    assert sorted(trunc.state_dict()["buffer"].tolist()) == [3.0, 4.0, 5.0, 10.0]
    assert trunc.cutoff == np.percentile([3.0, 4.0, 5.0, 10.0], 50.0) and not bool(keep[0])
