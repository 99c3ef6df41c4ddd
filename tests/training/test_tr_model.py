import warnings

import pytest
import torch

from training.config import ModelConfig
from training.data import DocumentCollator
from training.model import GPT


def _model(positions="rope", attention="sdpa"):
    torch.manual_seed(0)
    return GPT(ModelConfig(n_layers=2, d_model=32, n_heads=2, seq_len=32, vocab_size=50,
                           positions=positions, attention=attention)).eval()


def _logits(model, rows, reset=True):
    b = DocumentCollator(reset_position_ids=reset)(rows)
    with torch.no_grad():
        return model(b["input_ids"], b["position_ids"], b["segment_ids"])


@pytest.mark.parametrize("positions", ["rope", "learned"])
def test_perturbing_document_a_changes_no_logit_of_document_b(positions, row):
    model = _model(positions)
    a, b, c = [3, 4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14]
    base = _logits(model, [row(a + b + c, [5, 4, 3])])
    perturbed = _logits(model, [row([40, 41, 42, 43, 44] + b + c, [5, 4, 3])])
    assert not torch.allclose(base[0, :5], perturbed[0, :5])  # A itself did change
    assert torch.equal(base[0, 5:], perturbed[0, 5:])  # B and C: bit-for-bit the same


def test_a_packed_document_scores_as_if_alone_with_reset_positions(row):
    model = _model("rope")
    packed = _logits(model, [row([3, 4, 5, 6, 7, 8, 9, 10, 11], [5, 4])])
    alone = _logits(model, [row([8, 9, 10, 11], [4])])
    torch.testing.assert_close(packed[0, 5:], alone[0], rtol=1e-5, atol=1e-5)


def test_without_the_mask_documents_would_leak(row):
    model = _model("rope")
    ids = [3, 4, 5, 6, 7, 8, 9, 10, 11]
    base = _logits(model, [row(ids, [9])])
    perturbed = _logits(model, [row([40] + ids[1:], [9])])
    assert not torch.allclose(base[0, 5:], perturbed[0, 5:])


def test_flex_attention_matches_sdpa_mask(row):
    rows = [row([3, 4, 5, 6, 7, 8, 9, 10, 11], [5, 4]), row([1, 2, 3], [1, 2])]
    sdpa = _logits(_model(attention="sdpa"), rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flex = _logits(_model(attention="flex"), rows)
    valid = DocumentCollator()(rows)["segment_ids"] >= 0
    torch.testing.assert_close(flex[valid], sdpa[valid], rtol=1e-4, atol=1e-5)
