import math

import pytest
import torch
import torch.nn.functional as F

from pruning_data import el2n, error_norm


def test_token_and_sequence_reductions():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 5, 7, generator=gen)
    targets = torch.randint(0, 7, (3, 5), generator=gen)
    targets[1, [0, 4]] = -100
    targets[2] = -100
    norms = error_norm(logits, targets)
    assert torch.equal(el2n(logits, targets, reduce="token"), norms)
    seq = el2n(logits, targets)
    assert torch.allclose(seq[0], norms[0].mean())
    assert torch.allclose(seq[1], norms[1, 1:4].mean())
    assert math.isnan(seq[2].item())  # no evidence is not "easy"


def test_document_reduce_excludes_each_documents_last_position():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 6, 5, generator=gen)
    targets = torch.randint(0, 5, (2, 6), generator=gen)
    targets[1, 1] = -100
    norms = error_norm(logits, targets)
    doc_lens = [[2, 3, 1], torch.tensor([4, 2])]
    got = el2n(logits, targets, doc_lens=doc_lens, reduce="document")
    expected = [norms[0, 0], norms[0, 2:4].mean(), math.nan,  # 1-token document: nothing to score
                norms[1, [0, 2]].mean(), norms[1, 4]]
    assert got.shape == (5,)
    assert torch.allclose(got, torch.stack([torch.as_tensor(x, dtype=torch.float32) for x in expected]),
                          equal_nan=True)


@pytest.mark.parametrize("doc_lens", [[[2, 3]], [[3, 3, 0]], [[6]] * 2, [[]]])
def test_document_reduce_rejects_bad_lengths(doc_lens):
    with pytest.raises(ValueError):
        el2n(torch.zeros(1, 6, 4), torch.zeros(1, 6, dtype=torch.long), doc_lens=doc_lens, reduce="document")


def test_doc_lens_only_with_document_reduce():
    with pytest.raises(ValueError):
        el2n(torch.zeros(1, 2, 4), torch.zeros(1, 2, dtype=torch.long), doc_lens=[[2]])
    with pytest.raises(ValueError):
        el2n(torch.zeros(1, 2, 4), torch.zeros(1, 2, dtype=torch.long), reduce="document")


class TinyCausalLM(torch.nn.Module):
    """One attention layer; positions restart per document, as in the packed-training setup."""

    def __init__(self, vocab=11, dim=16, max_len=16):
        super().__init__()
        gen = torch.Generator().manual_seed(3)
        self.tok = torch.nn.Parameter(torch.randn(vocab, dim, generator=gen))
        self.pos = torch.nn.Parameter(torch.randn(max_len, dim, generator=gen))
        self.qkv = torch.nn.Parameter(torch.randn(dim, 3 * dim, generator=gen) / dim**0.5)
        self.head = torch.nn.Parameter(torch.randn(dim, vocab, generator=gen))

    def forward(self, tokens, positions, attend):
        x = self.tok[tokens] + self.pos[positions]
        q, k, v = (x @ self.qkv).chunk(3, dim=-1)
        out = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1),
                                             attn_mask=attend.unsqueeze(1)).squeeze(1)
        return (x + out) @ self.head


def _layout(doc_lens, length):
    """Per-row positions restarting at each document and a block-diagonal causal mask."""
    positions, masks = [], []
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    for lens in doc_lens:
        doc = torch.repeat_interleave(torch.arange(len(lens)), torch.tensor(lens))
        starts = torch.cumsum(torch.tensor([0] + lens[:-1]), 0)
        positions.append(torch.arange(length) - starts[doc])
        masks.append(causal & (doc[:, None] == doc[None, :]))
    return torch.stack(positions), torch.stack(masks)


def _packed_vs_alone(document_mask):
    model = TinyCausalLM()
    length, doc_lens = 12, [[5, 4, 3], [7, 5]]
    tokens = torch.randint(0, 11, (2, length), generator=torch.Generator().manual_seed(4))
    targets = torch.cat([tokens[:, 1:], torch.full((2, 1), -100)], dim=1)
    positions, attend = _layout(doc_lens, length)
    if not document_mask:
        attend = torch.ones(length, length, dtype=torch.bool).tril().expand(2, -1, -1)
    with torch.no_grad():
        packed = el2n(model(tokens, positions, attend), targets, doc_lens=doc_lens, reduce="document")
        alone = []
        for row, lens in enumerate(doc_lens):
            start = 0
            for n in lens:
                doc = tokens[row, start:start + n].unsqueeze(0)
                doc_targets = torch.cat([doc[:, 1:], torch.full((1, 1), -100)], dim=1)
                causal = torch.ones(1, n, n, dtype=torch.bool).tril()
                logits = model(doc, torch.arange(n).unsqueeze(0), causal)
                alone.append(el2n(logits, doc_targets, reduce="sequence"))
                start += n
    return packed, torch.cat(alone)


def test_per_document_el2n_on_packed_row_equals_each_document_alone():
    packed, alone = _packed_vs_alone(document_mask=True)
    assert packed.shape == alone.shape == (5,)
    assert torch.allclose(packed, alone, rtol=0, atol=1e-6)


def test_packed_equivalence_needs_the_document_mask():
    packed, alone = _packed_vs_alone(document_mask=False)
    assert torch.allclose(packed[0], alone[0], atol=1e-6)  # first document sees nothing foreign
    assert not torch.allclose(packed[1:], alone[1:], atol=1e-3)
