import io

import numpy as np
import pytest
import torch

from pruning_data import LossTruncation


def stream(n=400, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).gamma(2.0, 1.5, size=n))


def test_cutoff_is_np_percentile_of_the_recent_window_and_hot_start():
    losses, window, batch = stream(), 50, 7
    trunc = LossTruncation(drop_fraction=0.2, min_count=60, recompute_every=1, buffer_size=window)
    for start in range(0, len(losses), batch):
        chunk = losses[start:start + batch]
        keep = trunc(chunk)
        seen = start + len(chunk)
        if seen < 60:
            assert trunc.cutoff is None and bool(keep.all())
            continue
        recent = losses[max(0, seen - window):seen].numpy()
        assert trunc.cutoff == np.percentile(recent, 80.0)
        assert torch.equal(keep, chunk <= trunc.cutoff)
    assert trunc.cutoff is not None


def test_recompute_every_counts_losses_between_cutoff_updates():
    losses = stream(seed=1)
    trunc = LossTruncation(drop_fraction=0.3, min_count=20, recompute_every=25)
    seen, last = 0, None
    for start in range(0, 200, 10):
        trunc(losses[start:start + 10])
        seen += 10
        if seen < 20:
            continue
        if last is None or seen - last >= 25:
            last = seen
            assert trunc.cutoff == np.percentile(losses[seen - 20:seen].numpy(), 70.0)
        else:
            assert trunc.cutoff == np.percentile(losses[last - 20:last].numpy(), 70.0)


def test_batch_larger_than_buffer_keeps_only_the_newest():
    losses = stream(seed=2, n=35)
    trunc = LossTruncation(drop_fraction=0.5, min_count=10)
    trunc(losses[:3])
    trunc(losses[3:])
    assert trunc.cutoff == np.percentile(losses[-10:].numpy(), 50.0)


@pytest.mark.parametrize("normalize, mean, weight", [("all", 1.5, 1 / 4), ("kept", 2.0, 1 / 3)])
def test_truncated_mean_sums_kept_losses_over_all_or_kept_rows(normalize, mean, weight):
    trunc = LossTruncation(drop_fraction=0.25, min_count=4)
    losses = torch.tensor([1.0, 2.0, 3.0, 10.0], dtype=torch.float64, requires_grad=True)
    value = trunc.truncated_mean(losses, normalize=normalize)
    value.backward()
    assert trunc.cutoff == np.percentile([1.0, 2.0, 3.0, 10.0], 75.0)
    assert value.item() == mean
    assert losses.grad.tolist() == [weight, weight, weight, 0.0]


def test_zero_drop_fraction_keeps_everything():
    trunc = LossTruncation(drop_fraction=0.0, min_count=1)
    assert bool(trunc(stream(n=50)).all())


def test_state_round_trip_gives_the_same_future_masks():
    losses = stream(seed=3)
    a = LossTruncation(drop_fraction=0.1, min_count=30, recompute_every=17)
    for start in range(0, 150, 9):
        a(losses[start:start + 9])
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    b = LossTruncation(drop_fraction=0.1, min_count=30, recompute_every=17)
    b.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    for start in range(150, 400, 9):
        chunk = losses[start:start + 9]
        assert torch.equal(a(chunk), b(chunk)) and a.cutoff == b.cutoff
    with pytest.raises(ValueError):
        LossTruncation(drop_fraction=0.2, min_count=30, recompute_every=17).load_state_dict(a.state_dict())


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        LossTruncation(drop_fraction=1.2, min_count=3)
    with pytest.raises(ValueError):
        LossTruncation(drop_fraction=0.1, min_count=0)
    with pytest.raises(ValueError):
        LossTruncation(drop_fraction=0.1, min_count=2)(torch.tensor([1.0, float("nan")]))
