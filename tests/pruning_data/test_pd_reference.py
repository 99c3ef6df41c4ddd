"""ENT and loss truncation against naive re-implementations of the papers' reference code.

The references loop in plain Python over tokens and sequences (fine for test sizes) and follow
the official code's arithmetic: per-token cross-entropy with ``reduction="none"``, multiplied by
the keep mask, averaged over *all* valid targets (ENT's ``run_clm_no_trainer.py``), or per-sequence
losses masked and averaged over *all* sequences (``loss_dropper``'s ``dropper.py``).
"""
import math

import hypothesis.strategies as st
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings

from pruning_data import LossTruncation, ent_loss, error_norm, tie_key
from pruning_data._checks import floor_count

FAST = settings(max_examples=40, deadline=None)
V = 7
M32 = 0xFFFFFFFF


# --- a pure-Python reference of the tie hash --------------------------------------------------
def py_mix32(x):
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & M32
    return x ^ (x >> 16)


def py_hash62(x):
    x &= (1 << 64) - 1  # two's complement view of an int64
    lo, hi = x & M32, (x >> 32) & M32
    a = py_mix32(lo ^ py_mix32(hi ^ 0x9E3779B9))
    b = py_mix32(lo ^ py_mix32(hi ^ 0x85EBCA6B) ^ 0xC2B2AE35)
    return ((a >> 1) << 31) | (b >> 1)


def py_tie_key(*parts):
    key = py_hash62(parts[0])
    for part in parts[1:]:
        key = py_hash62(py_hash62(key ^ 0x2545F491) ^ part)
    return key


@FAST
@given(a=st.lists(st.integers(-2**63, 2**63 - 1), min_size=1, max_size=20), data=st.data())
def test_tie_key_matches_python_integer_reference(a, data):
    b = data.draw(st.lists(st.integers(-2**63, 2**63 - 1), min_size=len(a), max_size=len(a)))
    ta, tb = torch.tensor(a, dtype=torch.int64), torch.tensor(b, dtype=torch.int64)
    assert tie_key(ta).tolist() == [py_tie_key(x) for x in a]
    assert tie_key(ta, tb).tolist() == [py_tie_key(x, y) for x, y in zip(a, b)]
    assert all(0 <= k < 2**62 for k in tie_key(ta, tb).tolist())


# --- ENT ------------------------------------------------------------------------------------------
def discrete_batch(seed, rows, length, n_ignored):
    """Logits from a tiny set of values, so that many error norms tie exactly."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randint(0, 3, (rows, length, V), generator=gen).float() * 30.0
    targets = torch.randint(0, V, (rows, length), generator=gen)
    targets.view(-1)[torch.randperm(rows * length, generator=gen)[:n_ignored]] = -100
    return logits, targets


def reference_ent(logits, targets, *, fraction=None, threshold=None, level="token", segments=None,
                  tie_ids=None, normalize="all"):
    """Naive ENT: Python loops for the ranking, the official masked-mean for the loss."""
    rows, length = targets.shape
    scores = error_norm(logits.double(), targets).tolist()  # float64: the ranking's own values
    scores32 = error_norm(logits, targets).tolist()
    ids = tie_ids if tie_ids is not None else torch.arange(rows * length).reshape(rows, length)
    keys = tie_key(ids).tolist()
    valid = (targets != -100).tolist()
    dropped = [[False] * length for _ in range(rows)]
    if level == "token":
        cands = [(-scores32[r][t], keys[r][t], r, t) for r in range(rows) for t in range(length) if valid[r][t]]
        if threshold is not None:
            chosen = [(r, t) for s, _, r, t in cands if -s > threshold]
        else:
            chosen = [(r, t) for _, _, r, t in sorted(cands)[:floor_count(fraction, len(cands))]]
        for r, t in chosen:
            dropped[r][t] = True
    else:
        groups = {}
        for r in range(rows):
            for t in range(length):
                g = (r, 0) if segments is None else (r, int(segments[r][t]))
                if valid[r][t] and g[1] >= 0:
                    groups.setdefault(g, []).append((r, t))
        cands = []
        for g, members in groups.items():
            mean = sum(scores32[r][t] for r, t in members) / len(members)
            cands.append((-mean, min(keys[r][t] for r, t in members), g))
        if threshold is not None:
            chosen = [g for m, _, g in cands if -m > threshold]
        else:
            chosen = [g for _, _, g in sorted(cands)[:floor_count(fraction, len(cands))]]
        for g in chosen:
            for r, t in groups[g]:
                dropped[r][t] = True
    dropped = torch.tensor(dropped)
    ce = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=-100, reduction="none")
    keep = ((targets != -100) & ~dropped).reshape(-1).float()
    total = (ce * keep).sum()
    denominator = int((targets != -100).sum()) if normalize == "all" else int(keep.sum())
    return total / max(denominator, 1), dropped


@FAST
@given(seed=st.integers(0, 10**6), rows=st.integers(1, 5), length=st.integers(1, 8),
       n_ignored=st.integers(0, 5), percent=st.integers(0, 100), normalize=st.sampled_from(["all", "kept"]))
def test_token_fraction_matches_reference_including_ties(seed, rows, length, n_ignored, percent, normalize):
    logits, targets = discrete_batch(seed, rows, length, n_ignored)
    loss, info = ent_loss(logits, targets, fraction=percent / 100, normalize=normalize)
    ref_loss, ref_dropped = reference_ent(logits, targets, fraction=percent / 100, normalize=normalize)
    assert torch.equal(info.dropped, ref_dropped)
    assert torch.allclose(loss, ref_loss, rtol=1e-6, atol=1e-7)


@FAST
@given(seed=st.integers(0, 10**6), rows=st.integers(1, 5), length=st.integers(2, 8),
       n_ignored=st.integers(0, 5), percent=st.integers(0, 100), use_threshold=st.booleans(),
       normalize=st.sampled_from(["all", "kept"]), data=st.data())
def test_document_level_matches_reference(seed, rows, length, n_ignored, percent, use_threshold, normalize, data):
    logits, targets = discrete_batch(seed, rows, length, n_ignored)
    # each row: a few documents in order, then maybe padding (-1)
    segments = []
    for _ in range(rows):
        cuts = sorted(data.draw(st.lists(st.integers(1, length), max_size=3)))
        seg = [sum(c <= t for c in cuts) for t in range(length)]
        pad = data.draw(st.integers(0, 2))
        segments.append([s if t < length - pad else -1 for t, s in enumerate(seg)])
    segments = torch.tensor(segments)
    tie_ids = torch.randint(0, 2**40, targets.shape, generator=torch.Generator().manual_seed(seed))
    kwargs = dict(threshold=1.0) if use_threshold else dict(fraction=percent / 100)
    loss, info = ent_loss(logits, targets, level="sequence", segment_ids=segments, tie_ids=tie_ids,
                          normalize=normalize, **kwargs)
    ref_loss, ref_dropped = reference_ent(logits, targets, level="sequence", segments=segments.tolist(),
                                          tie_ids=tie_ids, normalize=normalize, **kwargs)
    assert torch.equal(info.dropped, ref_dropped)
    assert torch.allclose(loss, ref_loss, rtol=1e-6, atol=1e-7)


def test_default_normalization_is_the_reference_codes_mean_over_all_valid_targets():
    # The ENT authors' loss: per-token CE, times the keep mask, mean. Dropping half the
    # targets halves the loss and the gradient scale; normalize="kept" does not.
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 6, V, generator=gen, requires_grad=True)
    targets = torch.randint(0, V, (4, 6), generator=gen)
    loss, info = ent_loss(logits, targets, fraction=0.5)
    ce = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), reduction="none")
    expected = (ce * (~info.dropped).reshape(-1)).mean()
    assert info.n_dropped == 12
    assert torch.allclose(loss, expected, rtol=1e-6)
    kept_loss, _ = ent_loss(logits, targets, fraction=0.5, normalize="kept")
    assert torch.allclose(kept_loss, loss * 2, rtol=1e-6)


def test_ties_have_no_position_bias_and_follow_token_identity():
    logits = torch.zeros(64, 64, V)  # every token scores exactly the same
    targets = torch.zeros(64, 64, dtype=torch.long)
    _, info = ent_loss(logits, targets, fraction=0.5)
    d = info.dropped.float()
    # index order would drop exactly rows 0..31; a hash spreads the drops over rows and positions
    assert 0.4 < d[:32].mean().item() < 0.6 and 0.4 < d[:, :32].mean().item() < 0.6
    assert torch.equal(ent_loss(logits, targets, fraction=0.5)[1].dropped, info.dropped)  # deterministic
    _, rows = ent_loss(logits, targets, fraction=0.5, level="sequence")
    assert 12 < int(rows.dropped[:32].any(1).sum()) < 20
    # with tie ids, the choice follows the tokens, not the slots they occupy in the batch
    docs = torch.arange(64).unsqueeze(1).expand(64, 64)
    ids = tie_key(docs * 1000, torch.arange(64).expand(64, 64))
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(1))
    _, a = ent_loss(logits, targets, fraction=0.3, tie_ids=ids)
    _, b = ent_loss(logits, targets, fraction=0.3, tie_ids=ids[perm])
    assert torch.equal(a.dropped[perm], b.dropped)


# --- loss truncation ----------------------------------------------------------------------------
def reference_dropper_loss(losses, keep):
    """loss_dropper: ``loss *= mask; loss.mean()``."""
    return (losses * keep.to(losses.dtype)).mean()


@FAST
@given(seed=st.integers(0, 10**6), n=st.integers(1, 40), drop=st.floats(0.0, 0.9))
def test_truncated_mean_default_is_the_dropper_mean_over_all_sequences(seed, n, drop):
    losses = torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 5
    a, b = LossTruncation(drop, min_count=1), LossTruncation(drop, min_count=1)
    keep = b(losses)
    assert torch.allclose(a.truncated_mean(losses), reference_dropper_loss(losses, keep))
    c = LossTruncation(drop, min_count=1)
    kept_mean = c.truncated_mean(losses, normalize="kept")
    assert torch.allclose(kept_mean, losses[keep].mean())


def test_truncated_mean_rejects_unknown_normalization():
    with pytest.raises(ValueError):
        LossTruncation(0.1, min_count=1).truncated_mean(torch.ones(3), normalize="rows")


def test_a_loss_equal_to_the_cutoff_is_kept():
    trunc = LossTruncation(drop_fraction=0.25, min_count=5)
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)
    keep = trunc(losses)
    assert trunc.cutoff == 4.0  # np.percentile(.., 75) lands exactly on a loss
    assert keep.tolist() == [True, True, True, True, False]
    assert math.isfinite(trunc.cutoff)
