import math
from fractions import Fraction

import hypothesis.strategies as st
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings

from pruning_data import MAX_ERROR_NORM, ent_loss, error_norm

FAST = settings(max_examples=40, deadline=None)
VOCAB = 9


def batch(seed=0, rows=3, length=6, ignored=((0, 5), (2, 0))):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, length, VOCAB, generator=gen) * 3
    targets = torch.randint(0, VOCAB, (rows, length), generator=gen)
    for r, t in ignored:
        targets[r, t] = -100
    # A confidently wrong token: its error norm rounds to exactly sqrt(2) in float32.
    logits[1, 2] = 0.0
    logits[1, 2, 0] = 60.0
    targets[1, 2] = 1
    return logits, targets


def mle(logits, targets):
    logits = logits.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1), ignore_index=-100)
    loss.backward()
    return loss.detach(), logits.grad


def ent(logits, targets, **kwargs):
    logits = logits.detach().clone().requires_grad_(True)
    loss, info = ent_loss(logits, targets, **kwargs)
    loss.backward()
    return loss.detach(), logits.grad, info


@pytest.mark.parametrize("kwargs", [
    dict(threshold=MAX_ERROR_NORM), dict(threshold=10.0), dict(fraction=0.0),
    dict(fraction=0.0, level="sequence"), dict(threshold=MAX_ERROR_NORM, level="sequence"),
    dict(threshold=0.0, warmup_steps=5, step=4), dict(fraction=1.0, warmup_steps=1, step=0),
])
def test_nothing_dropped_is_exactly_mle_loss_and_gradient(kwargs):
    logits, targets = batch()
    assert error_norm(logits, targets)[1, 2].item() == torch.tensor(MAX_ERROR_NORM).item()
    ref_loss, ref_grad = mle(logits, targets)
    loss, grad, info = ent(logits, targets, **kwargs)
    assert torch.equal(loss, ref_loss) and torch.equal(grad, ref_grad)
    assert info.n_dropped == 0 and not bool(info.dropped.any()) and info.n_valid == 16
    assert info.active == ("warmup_steps" not in kwargs)


def test_threshold_drops_above_it_with_zero_gradient_and_kept_mean():
    logits, targets = batch(seed=3)
    scores = error_norm(logits, targets)
    threshold = scores[targets != -100].median().item()
    loss, grad, info = ent(logits, targets, threshold=threshold, normalize="kept")
    valid = targets != -100
    assert torch.equal(info.dropped, valid & (scores > threshold))
    assert 0 < info.n_dropped < info.n_valid
    assert torch.equal(grad[info.dropped], torch.zeros(info.n_dropped, VOCAB))
    assert bool((grad[valid & ~info.dropped].abs().sum(-1) > 0).all())
    kept = targets.masked_fill(info.dropped, -100)
    ref_loss, ref_grad = mle(logits, kept)  # mean over kept tokens only
    assert torch.equal(loss, ref_loss) and torch.equal(grad, ref_grad)


@FAST
@given(seed=st.integers(0, 10**6), rows=st.integers(1, 5), length=st.integers(1, 9),
       percent=st.integers(0, 100), n_ignored=st.integers(0, 4))
def test_token_fraction_drops_exactly_floor_cn_highest(seed, rows, length, percent, n_ignored):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, length, VOCAB, generator=gen)
    targets = torch.randint(0, VOCAB, (rows, length), generator=gen)
    targets.view(-1)[torch.randperm(rows * length, generator=gen)[:n_ignored]] = -100
    fraction = percent / 100
    loss, info = ent_loss(logits, targets, fraction=fraction)
    n = int((targets != -100).sum())
    assert info.n_dropped == int(info.dropped.sum()) == math.floor(Fraction(percent, 100) * n)
    assert not bool((info.dropped & (targets == -100)).any())
    scores, kept = error_norm(logits, targets), (targets != -100) & ~info.dropped
    if info.n_dropped and bool(kept.any()):
        assert scores[info.dropped].min() >= scores[kept].max()
    assert math.isfinite(loss.item())


@FAST
@given(seed=st.integers(0, 10**6), rows=st.integers(1, 8), percent=st.integers(0, 100))
def test_sequence_fraction_drops_exactly_floor_cn_hardest_rows(seed, rows, percent):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, 5, VOCAB, generator=gen) * 2
    targets = torch.randint(0, VOCAB, (rows, 5), generator=gen)
    targets[0, :2] = -100
    loss, info = ent_loss(logits, targets, fraction=percent / 100, level="sequence")
    assert info.n_dropped_sequences == math.floor(Fraction(percent, 100) * rows)
    dropped_rows = info.dropped.any(dim=1)
    assert int(dropped_rows.sum()) == info.n_dropped_sequences
    assert torch.equal(info.dropped, dropped_rows[:, None] & (targets != -100))  # whole rows
    valid = targets != -100
    means = (error_norm(logits, targets) * valid).sum(1) / valid.sum(1)
    if 0 < info.n_dropped_sequences < rows:
        assert means[dropped_rows].min() >= means[~dropped_rows].max()


@pytest.mark.parametrize("kwargs", [dict(threshold=0.0), dict(fraction=1.0),
                                    dict(fraction=1.0, level="sequence"),
                                    dict(threshold=0.0, level="sequence")])
def test_dropping_everything_stays_finite_with_zero_gradient(kwargs):
    logits, targets = batch(seed=5)
    loss, grad, info = ent(logits, targets, **kwargs)
    assert info.n_dropped == info.n_valid == 16
    assert loss.item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))


def test_all_targets_ignored_is_finite():
    loss, grad, info = ent(torch.randn(2, 3, VOCAB), torch.full((2, 3), -100), fraction=0.5)
    assert loss.item() == 0.0 and torch.isfinite(grad).all() and info.n_valid == 0


def test_warmup_switches_truncation_on_at_warmup_steps():
    logits, targets = batch()
    _, before = ent_loss(logits, targets, threshold=0.5, warmup_steps=3, step=2)
    _, after = ent_loss(logits, targets, threshold=0.5, warmup_steps=3, step=3)
    assert not before.active and before.n_dropped == 0 and before.error_norm is None
    assert after.active and after.n_dropped > 0


@pytest.mark.parametrize("kwargs", [dict(), dict(threshold=1.0, fraction=0.1), dict(fraction=1.5),
                                    dict(threshold=-0.1), dict(threshold=1.0, level="row"),
                                    dict(threshold=1.0, warmup_steps=2),
                                    dict(threshold=1.0, normalize="none"),
                                    dict(threshold=1.0, segment_ids=torch.zeros(2, 6, dtype=torch.long)),
                                    dict(fraction=0.5, tie_ids=torch.zeros(3, 5, dtype=torch.long))])
def test_rejects_bad_arguments(kwargs):
    logits, targets = batch()
    with pytest.raises(ValueError):
        ent_loss(logits, targets, **kwargs)
