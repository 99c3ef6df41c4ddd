"""The training objectives' examples, normalization and tie keys, scoring once per batch, and
dynamic pruning of whole documents - each checked against a naive reference on real batches."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import training.evaluate as evaluate
from pipelines.infra.configio import load_config
from pruning_data import DynamicPruner, el2n, error_norm
from training.config import LossConfig, TrainRunConfig
from training.data import IGNORE_INDEX, DocumentCollator, ShardDataset
from training.losses import Objective, example_losses, token_tie_ids
from training.config import ModelConfig
from training.model import GPT
from training.sampler import PrunerSubset
from training.trainer import Trainer

from tests.training.conftest import TINY

V = 11


def packed_batch(row):
    """Two packed rows: [doc A (5) | doc B (4) | doc C (3)] and [doc D (6) | padding]."""
    collate = DocumentCollator()
    gen = np.random.default_rng(0)
    rows = [row(gen.integers(0, V, 12), [5, 4, 3], index=0), row(gen.integers(0, V, 6), [6], index=1)]
    rows[1]["doc_ids"] = np.array([20])
    return collate(rows)


def naive_document_losses(logits, labels, segments):
    out = []
    for r in range(labels.shape[0]):
        for s in sorted(set(segments[r].tolist()) - {-1}):
            at = (segments[r] == s) & (labels[r] != IGNORE_INDEX)
            if at.any():
                out.append(F.cross_entropy(logits[r][at], labels[r][at]))
    return torch.stack(out)


def test_example_losses_are_per_document_segment_or_per_row(row):
    batch = packed_batch(row)
    logits = torch.randn(*batch["labels"].shape, V, generator=torch.Generator().manual_seed(1))
    losses, example = example_losses(logits, batch["labels"], batch["segment_ids"])
    assert torch.allclose(losses, naive_document_losses(logits, batch["labels"], batch["segment_ids"]))
    assert losses.numel() == 4 and example.max() == 3
    rows, _ = example_losses(logits, batch["labels"])
    assert rows.numel() == 2


def _objective(kind, **overrides):
    keys = [f"loss.kind={kind}", *[f"loss.{k}={v}" for k, v in overrides.items()]]
    return Objective(load_config(TrainRunConfig, None, keys).loss)


@pytest.mark.parametrize("unit, normalize", [("document", "all"), ("document", "kept"), ("row", "all")])
def test_loss_truncation_drops_documents_of_packed_rows_and_normalizes_like_the_dropper(row, unit, normalize):
    batch = packed_batch(row)
    labels, segments = batch["labels"], batch["segment_ids"]
    logits = torch.zeros(*labels.shape, V)
    logits[0, 5:9] = torch.nn.functional.one_hot((labels[0, 5:9].clamp_min(0) + 1) % V, V) * 20.0  # doc B: confidently wrong
    objective = _objective("loss_truncation", **{"truncation.drop_fraction": 0.25, "truncation.min_count": 1,
                                                 "truncation.unit": unit, "normalize": normalize})
    loss, stats = objective(logits.requires_grad_(), labels, 0, segment_ids=segments)
    valid = labels != IGNORE_INDEX
    if unit == "document":
        per_doc = naive_document_losses(logits.detach(), labels, segments)  # A, B, C, D
        keep = torch.tensor([True, False, True, True])
        expected_dropped = valid & (segments == 1) & (torch.arange(2) == 0)[:, None]
        assert torch.equal(stats["dropped_mask"], expected_dropped)  # only doc B, not its row
        assert stats["dropped_examples"] == 1 and stats["dropped_rows"] == 0
        reference = (per_doc * keep).mean() if normalize == "all" else per_doc[keep].mean()
    else:
        assert torch.equal(stats["dropped_mask"], valid & (torch.arange(2) == 0)[:, None])  # the whole row
        per_row = [F.cross_entropy(logits.detach()[r][valid[r]], labels[r][valid[r]]) for r in range(2)]
        reference = per_row[1] / 2
    assert torch.allclose(loss, reference, rtol=1e-6)


@pytest.mark.parametrize("normalize", ["all", "kept"])
def test_sequence_level_ent_ranks_documents_by_default(row, normalize):
    batch = packed_batch(row)
    labels = batch["labels"]
    logits = torch.zeros(*labels.shape, V)
    logits[0, 5:9] = torch.nn.functional.one_hot((labels[0, 5:9].clamp_min(0) + 1) % V, V) * 20.0
    objective = _objective("ent", **{"ent.fraction": 0.25, "ent.level": "sequence", "normalize": normalize})
    loss, stats = objective(logits, labels, 0, segment_ids=batch["segment_ids"])
    valid = labels != IGNORE_INDEX
    assert torch.equal(stats["dropped_mask"], valid & (batch["segment_ids"] == 1) & (torch.arange(2) == 0)[:, None])
    kept = labels.masked_fill(stats["dropped_mask"], IGNORE_INDEX)
    total = F.cross_entropy(logits.reshape(-1, V), kept.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")
    denominator = int(valid.sum()) if normalize == "all" else int((kept != IGNORE_INDEX).sum())
    assert torch.allclose(loss, total / denominator, rtol=1e-6)


def test_ent_warmup_steps_k_gives_exactly_k_plain_updates():
    objective = _objective("ent", **{"ent.threshold": 0.0, "ent.warmup_steps": 3})
    logits, labels = torch.randn(2, 5, V), torch.randint(0, V, (2, 5))
    dropped = [objective(logits, labels, step)[1]["dropped_tokens"] for step in range(6)]  # updates done
    assert dropped == [0, 0, 0, 10, 10, 10]


def test_tie_ids_follow_the_tokens_not_their_slots(row):
    collate = DocumentCollator()
    a = row(np.arange(10), [4, 6])
    a["doc_ids"] = np.array([7, 8])
    b = {**row(np.arange(6) + 4, [6]), "doc_ids": np.array([8])}
    ids_a, ids_b = token_tie_ids(collate([a])), token_tie_ids(collate([b]))
    assert torch.equal(ids_a[0, 4:], ids_b[0])  # document 8 at offset 4 in one row, at 0 in the other
    assert ids_a[0].unique().numel() == 10


def test_score_dataset_computes_error_norms_once_per_batch_and_matches_el2n(shard_dir, monkeypatch):
    dataset = ShardDataset(shard_dir, token_map=np.arange(50257) % 256)
    collator = DocumentCollator()
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layers=1, d_model=16, n_heads=2, seq_len=64, vocab_size=256))
    calls = []
    real = evaluate.error_norm
    monkeypatch.setattr(evaluate, "error_norm", lambda *a, **k: calls.append(1) or real(*a, **k))
    s = evaluate.score_dataset(model, dataset, collator, batch_size=16, chunk_tokens=100)
    n_batches = -(-len(dataset) // 16)
    assert len(calls) == n_batches
    # the three reductions equal separate el2n / error_norm calls (the former implementation)
    row_el2n, seg, seg_max = [], [], []
    with torch.no_grad():
        for batch in evaluate.ordered_batches(dataset, collator, 16):
            logits = evaluate.forward(model, batch, torch.device("cpu"))
            labels = batch["labels"]
            T = labels.shape[1]
            row_el2n.append(el2n(logits, labels, reduce="sequence"))
            lens = [torch.cat([d, torch.tensor([T - int(d.sum())])]) if int(d.sum()) < T else d
                    for d in batch["doc_lens"]]
            docs = el2n(logits, labels, doc_lens=lens, reduce="document")
            norms = error_norm(logits, labels)
            k = 0
            for r, d in enumerate(batch["doc_lens"]):
                starts = np.concatenate([[0], np.cumsum(d.numpy())])
                for j in range(d.numel()):
                    scored = labels[r, starts[j]:starts[j + 1]] != IGNORE_INDEX
                    seg.append(float(docs[k + j]))
                    seg_max.append(float(norms[r, starts[j]:starts[j + 1]][scored].max()) if scored.any() else 0.0)
                k += len(lens[r])
    assert np.allclose(s["row_el2n"], torch.cat(row_el2n).numpy(), rtol=1e-6, equal_nan=True)
    assert np.allclose(s["el2n"], seg, rtol=1e-6, equal_nan=True)
    assert np.allclose(s["error_norm_max"], seg_max, rtol=1e-6)
    assert s["doc_id"].size == sum(dataset[i]["doc_ids"].size for i in range(len(dataset)))


def test_document_unit_keeps_or_prunes_all_chunks_of_a_document_together(shard_dir, tmp_path):
    cfg = load_config(TrainRunConfig, None, [f"data.dir={shard_dir}", f"output.dir={tmp_path}", *TINY,
                                             "pruning.enabled=true", "pruning.unit=document",
                                             "pruning.keep_fraction=0.5", "train.max_steps=0"])
    trainer = Trainer(cfg)
    doc_of_segment = np.concatenate([trainer.dataset[i]["doc_ids"] for i in range(len(trainer.dataset))])
    split = np.unique(doc_of_segment, return_counts=True)
    assert (split[1] > 1).any()  # the shards hold documents split across rows
    assert trainer.pruner.n_examples == split[0].size  # one example per document, not per chunk
    trainer._on_epoch_start(1)
    masks = trainer.subset.keep_masks(1, np.arange(len(trainer.dataset)))
    kept_segments = np.concatenate(masks)
    for doc in split[0][split[1] > 1]:
        chunks = kept_segments[doc_of_segment == doc]
        assert chunks.all() or not chunks.any()
    assert 0.3 < kept_segments.mean() < 0.8


def test_pruner_subset_maps_documents_to_their_segments():
    per_row = np.array([2, 1, 2])  # segments: 0,1 | 2 | 3,4 ; document 1 is split over rows 0 and 1
    pruner = DynamicPruner(4, keep_fraction=0.5, full_epochs=0)
    pruner.update(np.array([0.1, 0.9, 0.8, 0.0]))  # documents 1 and 2 kept
    subset = PrunerSubset(pruner, "document", per_row, segment_example=np.array([0, 1, 1, 2, 3]))
    assert subset(0).tolist() == [0, 1, 2]
    masks = subset.keep_masks(0, np.array([0, 1, 2]))
    assert [m.tolist() for m in masks] == [[False, True], [True], [True, False]]
    with pytest.raises(ValueError):
        PrunerSubset(pruner, "document", per_row, segment_example=np.array([0, 1, 1, 2]))


def test_ema_config_key_names_the_previous_weight():
    cfg = load_config(TrainRunConfig, None, ["pruning.ema_previous_weight=0.2"])
    assert cfg.pruning.ema_previous_weight == 0.2
    with pytest.raises(Exception, match="ema_previous_weight"):
        load_config(TrainRunConfig, None, ["pruning.smoothing=0.2"])  # the old name is refused
    assert LossConfig().normalize == "all"


@pytest.mark.parametrize("kind, extra", [("loss_truncation", {"truncation.min_count": 1}),
                                         ("ent", {"ent.fraction": 0.5, "ent.level": "sequence"})])
def test_a_batch_with_nothing_to_score_gives_a_connected_zero(kind, extra):
    logits = torch.randn(2, 4, V, requires_grad=True)
    loss, stats = _objective(kind, **extra)(logits, torch.full((2, 4), IGNORE_INDEX), 0,
                                            segment_ids=torch.full((2, 4), -1))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))
    assert stats["dropped_tokens"] == 0
