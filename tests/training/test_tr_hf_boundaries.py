"""Document boundaries hold in padding-free batches for a real Hugging Face model.

A tiny ``LlamaForCausalLM`` (random init, from a config, CPU) scores packed rows of real shards;
the loss of every document segment in the batch must equal the loss of that segment run alone.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
import torch.nn.functional as F  # noqa: E402

from training.data import ShardDataset  # noqa: E402
from training.hf import PackedCollator  # noqa: E402

TOL = 1e-5


def tiny_llama(attn: str, vocab: int = 50257):
    cfg = transformers.LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                   use_cache=False, attn_implementation=attn)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).eval()


def segment_losses(logits, labels, seq_idx, is_doc):
    """Mean next-token loss of each document segment (rows of ``seq_idx`` numbered in order)."""
    ce = F.cross_entropy(logits[:, :-1].double().transpose(1, 2), labels[:, 1:], ignore_index=-100, reduction="none")
    seq = seq_idx[:, 1:].long()
    valid = labels[:, 1:] != -100
    n_seq = int(seq_idx.max()) + 1
    sums = torch.zeros(n_seq, dtype=torch.float64).index_add_(0, seq[valid], ce[valid].double())
    counts = torch.zeros(n_seq, dtype=torch.float64).index_add_(0, seq[valid], torch.ones_like(ce[valid]).double())
    return (sums / counts)[is_doc], counts[is_doc]


@pytest.fixture(scope="module")
def rows(shard_dir):
    """The four rows with the most documents, and one more holding a later chunk of a split document
    (13 segments, 7 of them chunks k > 0)."""
    ds = ShardDataset(shard_dir)
    all_rows = [ds[i] for i in range(len(ds))]
    busiest = sorted(range(len(ds)), key=lambda i: -len(all_rows[i]["doc_lens"]))[:4]
    later_chunk = next(i for i, r in enumerate(all_rows) if (r["chunk_index"] > 0).any() and i not in busiest)
    return [all_rows[i] for i in busiest + [later_chunk]]


@pytest.fixture(scope="module")
def alone(rows):
    """Every document segment of the rows, run alone through each attention implementation."""
    out = {}
    for attn in ("eager", "sdpa"):
        model = tiny_llama(attn)
        losses = []
        for r in rows:
            starts = np.cumsum(r["doc_lens"]) - r["doc_lens"]
            for s, n in zip(starts, r["doc_lens"]):
                x = torch.from_numpy(r["input_ids"][s:s + n])[None]
                with torch.no_grad():
                    logits = model(input_ids=x).logits
                losses.append(F.cross_entropy(logits[0, :-1].double(), x[0, 1:]).item() if n > 1 else float("nan"))
        out[attn] = np.array(losses)
    return out


def packed_losses(model, rows, collator, drop=()):
    batch = collator(rows)
    seq_idx = batch.pop("seq_idx")
    labels = batch.pop("labels")
    n_docs = sum(len(r["doc_lens"]) for r in rows)
    # sequences are each row's documents, then its padding: mark the documents
    is_doc = torch.ones(int(seq_idx.max()) + 1, dtype=torch.bool)
    if collator.layout == "stack":
        lens = [int(np.sum(r["doc_lens"])) for r in rows]
        width = seq_idx.shape[1]
        for b, n in enumerate(lens):
            if n < width:
                is_doc[int(seq_idx[b, n])] = False
    assert int(is_doc.sum()) == n_docs
    kwargs = {k: v for k, v in batch.items() if k not in drop}
    with torch.no_grad():
        logits = model(**kwargs).logits
    return segment_losses(logits, labels, seq_idx, is_doc)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("layout", ["flatten", "stack"])
@pytest.mark.parametrize("path", ["mask", "position_ids"])
def test_every_document_scores_as_if_it_were_alone(rows, alone, attn, layout, path):
    model = tiny_llama(attn)
    collator = PackedCollator(layout=layout, seq_idx=True, mask="4d" if path == "mask" else None,
                              pad_to_multiple=8)
    losses, counts = packed_losses(model, rows, collator)
    expected = alone[attn]
    scored = counts.numpy() > 0
    assert np.array_equal(scored, ~np.isnan(expected))
    assert scored.sum() >= 10
    diff = np.abs(losses.numpy()[scored] - expected[scored])
    assert diff.max() <= TOL, diff.max()
    print(f"{attn} {layout} {path}: max |loss - loss alone| = {diff.max():.2e} over {int(scored.sum())} documents")


@pytest.mark.parametrize("layout", ["flatten", "stack"])
def test_naive_packing_lets_documents_see_each_other(rows, alone, layout):
    """Packed rows without the mask and with positions running over the row: losses move."""
    model = tiny_llama("sdpa")
    collator = PackedCollator(layout=layout, seq_idx=True, position_ids=False)
    losses, counts = packed_losses(model, rows, collator)
    scored = counts.numpy() > 0
    diff = np.abs(losses.numpy()[scored] - alone["sdpa"][scored])
    # the first document of each row sees nothing before it: unchanged; later ones differ
    assert diff.max() > 1e-2, diff.max()
    print(f"naive {layout}: max |loss - loss alone| = {diff.max():.4f}, mean {diff.mean():.4f}")
