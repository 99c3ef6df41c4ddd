import numpy as np
import pytest

from pruning_data import DynamicPruner
from training.sampler import PrunerSubset, ResumableSampler


def _take(sampler, n):
    return [sampler.next_batch().tolist() for _ in range(n)]


def test_each_epoch_is_a_permutation_and_batches_stay_inside_it():
    s = ResumableSampler(10, 4, seed=3)
    batches = _take(s, 6)  # two epochs of 4 + 4 + 2
    assert [len(b) for b in batches] == [4, 4, 2, 4, 4, 2]
    assert sorted(sum(batches[:3], [])) == list(range(10))
    assert sorted(sum(batches[3:], [])) == list(range(10))
    assert sum(batches[:3], []) != sum(batches[3:], [])  # reshuffled


@pytest.mark.parametrize("consumed", [0, 1, 2, 3, 5, 7])
def test_save_mid_epoch_restore_gives_the_same_batches(consumed):
    original = ResumableSampler(10, 4, seed=7)
    _take(original, consumed)
    state = original.state_dict()
    expected = _take(original, 8)
    restored = ResumableSampler(10, 4, seed=7)
    restored.load_state_dict(state)
    assert _take(restored, 8) == expected


def test_state_of_another_sampler_is_refused():
    with pytest.raises(ValueError, match="seed"):
        ResumableSampler(10, 4, seed=1).load_state_dict(ResumableSampler(10, 4, seed=2).state_dict())


def test_sampler_honours_a_row_pruner_subset_and_calls_the_hook():
    pruner = DynamicPruner(12, keep_fraction=0.5, offset_fraction=0.25, full_epochs=1)
    scores = np.arange(12, dtype=float)  # example 11 hardest
    seen = []

    def hook(epoch):
        seen.append(epoch)
        if pruner.needs_scores(epoch):
            pruner.update(scores)

    s = ResumableSampler(12, 5, seed=0, subset=PrunerSubset(pruner, "row", np.ones(12)), on_epoch_start=hook)
    epoch0 = sum(_take(s, 3), [])
    epoch1 = sum(_take(s, 2), [])
    assert sorted(epoch0) == list(range(12))
    # skip the 3 hardest (11, 10, 9), keep the next 6
    assert sorted(epoch1) == [3, 4, 5, 6, 7, 8]
    assert seen == [0, 1]
    state, pstate = s.state_dict(), pruner.state_dict()
    expected = _take(s, 4)
    pruner2 = DynamicPruner(12, keep_fraction=0.5, offset_fraction=0.25, full_epochs=1)
    pruner2.load_state_dict(pstate)
    s2 = ResumableSampler(12, 5, seed=0, subset=PrunerSubset(pruner2, "row", np.ones(12)),
                          on_epoch_start=lambda e: pruner2.needs_scores(e) and pruner2.update(scores))
    s2.load_state_dict(state)
    assert _take(s2, 4) == expected


def test_document_unit_draws_rows_with_a_kept_segment_and_masks_the_rest():
    per_row = np.array([2, 1, 3])  # segments 0,1 | 2 | 3,4,5
    pruner = DynamicPruner(6, keep_fraction=0.5, full_epochs=0)
    pruner.update(np.array([0.9, 0.1, 0.2, 0.8, 0.7, 0.0]))  # hardest: 0, 3, 4
    subset = PrunerSubset(pruner, "document", per_row)
    assert subset(0).tolist() == [0, 2]
    masks = subset.keep_masks(0, np.array([2, 0]))
    assert [m.tolist() for m in masks] == [[True, True, False], [True, False]]
    with pytest.raises(ValueError):
        PrunerSubset(pruner, "row", per_row)  # 6 examples but 3 rows
