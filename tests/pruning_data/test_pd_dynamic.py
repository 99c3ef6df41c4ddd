import io

import hypothesis.strategies as st
import numpy as np
import pytest
import torch
from hypothesis import given, settings

from pruning_data import DynamicPruner


def reference_window(scores, skip, keep):
    ranked = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return sorted(ranked[skip:skip + keep])


def test_keeps_the_rank_window_after_the_offset():
    scores = np.array([0.5, 0.9, 0.1, 0.7, 0.3, 0.8, 0.2, 0.6, 0.4, 1.0])
    pruner = DynamicPruner(10, keep_fraction=0.3, offset_fraction=0.2, full_epochs=0)
    pruner.update(scores)
    # ranks: 9 (1.0), 1 (0.9) skipped; then 5 (0.8), 3 (0.7), 7 (0.6) kept
    assert pruner.indices(0).tolist() == [3, 5, 7]


@settings(max_examples=60, deadline=None)
@given(scores=st.lists(st.integers(0, 4), min_size=1, max_size=40),
       keep=st.integers(0, 100), skip=st.integers(0, 100))
def test_window_with_ties_matches_stable_sort_on_minus_score_then_index(scores, keep, skip):
    if keep + skip > 100:
        keep, skip = 100 - skip, skip
    n = len(scores)
    pruner = DynamicPruner(n, keep_fraction=keep / 100, offset_fraction=skip / 100, full_epochs=0)
    pruner.update(torch.tensor(scores, dtype=torch.float32))
    got = pruner.indices(0)
    assert got.dtype == np.int64
    assert got.tolist() == reference_window(scores, skip * n // 100, keep * n // 100)


def test_schedule_full_epochs_then_rescore_every():
    n = 8
    pruner = DynamicPruner(n, keep_fraction=0.5, full_epochs=2, rescore_every=3)
    assert [pruner.needs_scores(e) for e in range(9)] == [False, False, True, False, False, True,
                                                         False, False, True]
    assert pruner.indices(0).tolist() == pruner.indices(1).tolist() == list(range(n))
    with pytest.raises(RuntimeError):
        pruner.indices(2)  # a rescore epoch without scores
    pruner.update(np.arange(n))
    first = pruner.indices(2).tolist()
    assert first == [4, 5, 6, 7]
    pruner.update(np.arange(n)[::-1].copy())  # new scores mid-window do not change epochs 3-4
    assert pruner.indices(3).tolist() == pruner.indices(4).tolist() == first
    assert pruner.indices(5).tolist() == [0, 1, 2, 3]
    with pytest.raises(RuntimeError):
        pruner.indices(8)  # stale scores: no update since epoch 5's selection
    with pytest.raises(ValueError):
        pruner.indices(3)  # that subset was replaced at epoch 5


def test_ema_smoothing_ranks_by_the_running_average():
    pruner = DynamicPruner(4, keep_fraction=0.5, full_epochs=0, smoothing=0.75)
    pruner.update([4.0, 3.0, 0.0, 0.0])
    assert pruner.indices(0).tolist() == [0, 1]
    pruner.update([0.0, 0.0, 8.0, 10.0])  # EMA: [3, 2.25, 2, 2.5]
    assert pruner.indices(1).tolist() == [0, 3]
    plain = DynamicPruner(4, keep_fraction=0.5, full_epochs=0)
    plain.update([4.0, 3.0, 0.0, 0.0])
    plain.update([0.0, 0.0, 8.0, 10.0])
    assert plain.indices(1).tolist() == [2, 3]


def test_random_baseline_same_size_deterministic_and_redrawn():
    pruner = DynamicPruner(100, keep_fraction=0.3, offset_fraction=0.1, full_epochs=1, seed=7,
                           strategy="random")
    assert not any(pruner.needs_scores(e) for e in range(5))
    a, b = pruner.indices(1), pruner.indices(2)
    assert len(a) == len(b) == 30 and len(set(a.tolist())) == 30
    assert a.tolist() != b.tolist()
    again = DynamicPruner(100, keep_fraction=0.3, offset_fraction=0.1, full_epochs=1, seed=7,
                          strategy="random")
    assert again.indices(1).tolist() == a.tolist()


def run(pruner, epochs, rng_seed):
    rng = np.random.default_rng(rng_seed)
    out = []
    for epoch in epochs:
        if pruner.needs_scores(epoch):
            pruner.update(rng.random(pruner.n_examples))
        out.append(pruner.indices(epoch).tolist())
    return out


def test_state_round_trips_through_torch_save_weights_only():
    kwargs = dict(n_examples=50, keep_fraction=0.4, offset_fraction=0.1, full_epochs=1,
                  rescore_every=2, smoothing=0.5, seed=3)
    straight = run(DynamicPruner(**kwargs), range(9), rng_seed=0)
    first = DynamicPruner(**kwargs)
    rng = np.random.default_rng(0)
    for epoch in range(4):
        if first.needs_scores(epoch):
            first.update(rng.random(50))
        first.indices(epoch)
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    resumed = DynamicPruner(**kwargs)
    resumed.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    rest = []
    for epoch in range(4, 9):
        if resumed.needs_scores(epoch):
            resumed.update(rng.random(50))
        rest.append(resumed.indices(epoch).tolist())
    assert rest == straight[4:]
    with pytest.raises(ValueError):
        DynamicPruner(**{**kwargs, "keep_fraction": 0.5}).load_state_dict(first.state_dict())


@pytest.mark.parametrize("kwargs", [dict(keep_fraction=0.7, offset_fraction=0.4),
                                    dict(keep_fraction=1.1), dict(keep_fraction=0.5, smoothing=1.0),
                                    dict(keep_fraction=0.5, rescore_every=0),
                                    dict(keep_fraction=0.5, strategy="loss")])
def test_rejects_bad_configuration(kwargs):
    with pytest.raises(ValueError):
        DynamicPruner(10, **kwargs)


def test_rejects_bad_scores():
    pruner = DynamicPruner(3, keep_fraction=0.5)
    with pytest.raises(ValueError):
        pruner.update([1.0, 2.0])
    with pytest.raises(ValueError):
        pruner.update([1.0, float("nan"), 2.0])


def test_ema_weight_is_named_for_the_previous_scores_and_ports_from_prune_ema_alpha():
    # data-diets' prune_ema_alpha=a weights the new scores: a * new + (1 - a) * previous.
    a = 0.8
    pruner = DynamicPruner(3, keep_fraction=1 / 3, full_epochs=0, ema_previous_weight=1 - a)
    first, second = np.array([3.0, 0.0, 1.0]), np.array([0.0, 2.0, 1.0])
    pruner.update(first)
    pruner.update(second)
    expected = a * second + (1 - a) * first  # [0.6, 1.6, 1.0]: example 1 is hardest
    assert pruner.indices(1).tolist() == [int(np.argmax(expected))] == [1]
    assert pruner.state_dict()["config"]["ema_previous_weight"] == pytest.approx(1 - a)
    assert DynamicPruner(3, 0.5, smoothing=0.3).ema_previous_weight == 0.3  # former name, same meaning
    with pytest.raises(ValueError):
        DynamicPruner(3, 0.5, smoothing=0.3, ema_previous_weight=0.3)


def test_state_saved_under_the_former_smoothing_key_still_loads():
    pruner = DynamicPruner(4, keep_fraction=0.5, full_epochs=0, ema_previous_weight=0.5)
    pruner.update([1.0, 2.0, 3.0, 4.0])
    state = pruner.state_dict()
    state["config"]["smoothing"] = state["config"].pop("ema_previous_weight")
    other = DynamicPruner(4, keep_fraction=0.5, full_epochs=0, ema_previous_weight=0.5)
    other.load_state_dict(state)
    assert other.indices(0).tolist() == pruner.indices(0).tolist()


def test_large_tie_groups_keep_the_lower_indices_stable_sort():
    # An unstable sort (numpy's default quicksort) reorders equal scores at this size.
    scores = np.random.default_rng(0).integers(0, 3, 1000).astype(float)
    pruner = DynamicPruner(1000, keep_fraction=0.3, offset_fraction=0.1, full_epochs=0)
    pruner.update(scores)
    assert pruner.indices(0).tolist() == reference_window(scores.tolist(), 100, 300)
