"""FewtruncLoss (MLE / ENT / loss truncation for the HF Trainer) and the pruning sampler's schedule."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from pruning_data import DynamicPruner, LossTruncation, ent_loss, error_norm  # noqa: E402
from training.hf import FewtruncLoss, PackedCollator, PruningSampler  # noqa: E402
from training.hf.losses import sequence_ids  # noqa: E402


def _model():
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=1, use_cache=False,
                                   attn_implementation="sdpa")
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg)


@pytest.fixture(scope="module")
def batch_and_outputs():
    rng = np.random.default_rng(1)
    rows = [{"input_ids": rng.integers(0, 64, 20), "doc_lens": [7, 1, 12]},
            {"input_ids": rng.integers(0, 64, 16), "doc_lens": [16]},
            {"input_ids": rng.integers(0, 64, 11), "doc_lens": [4, 7]}]
    batch = PackedCollator(layout="stack")(rows)
    labels = batch.pop("labels")
    with torch.no_grad():
        outputs = _model()(**batch)
    return batch, labels, outputs


def test_mle_equals_the_models_own_loss(batch_and_outputs):
    batch, labels, outputs = batch_and_outputs
    with torch.no_grad():
        own = _model()(**batch, labels=labels).loss
    ours = FewtruncLoss("mle")(outputs, labels)
    assert torch.allclose(ours, own, atol=1e-6)
    # with gradient accumulation the Trainer passes the targets of all micro-batches
    n = int((labels[:, 1:] != -100).sum())
    assert torch.allclose(FewtruncLoss("mle")(outputs, labels, num_items_in_batch=torch.tensor(2 * n)), own / 2)


@pytest.mark.parametrize("ent", [{"fraction": 0.2, "level": "token"}, {"threshold": "median", "level": "token"},
                                 {"fraction": 0.34, "level": "sequence"}])
def test_ent_is_pruning_data_ent_loss_on_the_shifted_targets(batch_and_outputs, ent):
    _, labels, outputs = batch_and_outputs
    if ent.get("threshold") == "median":  # a random model's error norms sit close together
        norms = error_norm(outputs.logits[:, :-1], labels[:, 1:])
        ent = {**ent, "threshold": float(norms[labels[:, 1:] != -100].median())}
    loss = FewtruncLoss("ent", **ent)
    ours = loss(outputs, labels, num_items_in_batch=(labels[:, 1:] != -100).sum())
    expected, info = ent_loss(outputs.logits[:, :-1].float(), labels[:, 1:], **ent)
    assert torch.equal(ours, expected)
    assert loss.last["dropped_targets"] == info.n_dropped > 0
    assert loss.dropped_share == info.n_dropped / info.n_valid


def test_ent_warmup_drops_nothing_until_the_step(batch_and_outputs):
    _, labels, outputs = batch_and_outputs
    loss = FewtruncLoss("ent", fraction=0.5, warmup_steps=3)
    loss(outputs, labels, step=2)
    assert loss.last["dropped_targets"] == 0
    loss(outputs, labels, step=3)
    assert loss.last["dropped_targets"] > 0


def test_documents_are_found_from_the_labels_alone(batch_and_outputs):
    _, labels, _ = batch_and_outputs
    seq = sequence_ids(labels[:, 1:], "document")
    valid = labels[:, 1:] != -100
    # documents with targets: 7, 12 | 16 | 4, 7 tokens -> 6, 11, 15, 3, 6 targets, in order
    _, counts = torch.unique_consecutive(seq[valid], return_counts=True)
    assert counts.tolist() == [6, 11, 15, 3, 6]


@pytest.mark.parametrize("unit", ["row", "document"])
def test_loss_truncation_drops_the_worst_sequences_after_the_hot_start(batch_and_outputs, unit):
    _, labels, outputs = batch_and_outputs
    loss = FewtruncLoss("loss_truncation", drop_fraction=0.34, min_count=3, unit=unit)
    reference = LossTruncation(drop_fraction=0.34, min_count=3)
    targets, logits = labels[:, 1:], outputs.logits[:, :-1].float()
    per_token = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    seq = sequence_ids(targets, unit)
    valid = targets != -100
    losses = torch.stack([per_token[(seq == s) & valid].mean() for s in seq[valid].unique()])
    keep = reference(losses)
    assert (~keep).sum() >= 1
    ours = loss(outputs, labels)
    assert torch.allclose(ours, losses[keep].mean())
    assert loss.last["dropped_sequences"] == int((~keep).sum())
    state = loss.state_dict()
    again = FewtruncLoss("loss_truncation", drop_fraction=0.34, min_count=3, unit=unit)
    again.load_state_dict(state)
    assert torch.equal(again(outputs, labels), loss(outputs, labels))


def _stream(sampler, trainer_epochs):
    out = []
    for t in range(trainer_epochs):
        sampler.set_epoch(t)
        out.extend(iter(sampler))
    return out


def _scores(n):
    return lambda epoch: np.cos(np.arange(n) * (epoch + 1.0))  # changes every rescoring


def test_pruning_sampler_follows_the_pruners_schedule():
    n = 10
    pruner = DynamicPruner(n, keep_fraction=0.5, offset_fraction=0.1, full_epochs=1, rescore_every=2)
    sampler = PruningSampler(pruner, seed=3, scorer=_scores(n))
    stream = _stream(sampler, 3)  # 30 samples: pruning epochs 0 (10), 1..4 (5 each)
    assert sorted(stream[:10]) == list(range(n))
    assert sampler.rescored == [1, 3]
    for e in range(1, 5):
        part = stream[10 + 5 * (e - 1): 10 + 5 * e]
        rescore = e - (e - 1) % 2
        hardest = np.argsort(-_scores(n)(rescore), kind="stable")
        assert sorted(part) == sorted(hardest[1:6].tolist()), e


@pytest.mark.parametrize("stop", [3, 12, 17, 25])
def test_a_restored_sampler_draws_what_the_original_draws(stop):
    n = 10

    def make():
        pruner = DynamicPruner(n, keep_fraction=0.5, offset_fraction=0.1, full_epochs=1, rescore_every=1)
        return PruningSampler(pruner, seed=3, scorer=_scores(n))

    whole = _stream(make(), 4)
    first = make()
    drawn = []
    for t in range(4):
        first.set_epoch(t)
        for i in first:
            drawn.append(i)
            if len(drawn) == stop:
                break
        if len(drawn) == stop:
            break
    restored = make()
    restored.load_state_dict(first.state_dict())
    restored.skip_until = stop
    rest = _stream(restored, 4)
    assert drawn == whole[:stop]
    assert rest[stop:] == whole[stop:]
