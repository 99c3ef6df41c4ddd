"""Golden GPT-2 ids: the default tokenizer is the real pretrained one, offline."""
import pytest

from pipelines.config import TokenizerConfig
from pipelines.steps.read import TextBatch
from pipelines.steps.tokenize import Tokenize

GOLDEN = {
    "Hello world": [15496, 995],
    "Hello, world!": [15496, 11, 995, 0],
    " world": [995],
    "hello": [31373],
    "<|endoftext|>": [50256],
}


@pytest.mark.parametrize("text,ids", GOLDEN.items())
def test_golden_ids(tokenizer, text, ids):
    assert tokenizer.encode(text, add_special_tokens=False).ids == ids


def test_tokenize_step_appends_eos_and_flattens():
    step = Tokenize(TokenizerConfig())
    out = step(TextBatch(doc_ids=[7, 9], texts=["Hello world", "hello"]))
    assert out.lengths.tolist() == [3, 2]
    assert out.tokens.tolist() == [15496, 995, 50256, 31373, 50256]
    assert out.doc_ids.tolist() == [7, 9]
    assert out.tokens.dtype.name == "uint16"  # the spill's width: GPT-2's ids fit in 16 bits


def test_bos_and_no_eos():
    step = Tokenize(TokenizerConfig(add_bos=True, add_eos=False))
    out = step(TextBatch(doc_ids=[1, 2], texts=["hello", "Hello world"]))
    assert out.tokens.tolist() == [50256, 31373, 50256, 15496, 995]
    assert out.lengths.tolist() == [2, 3]


def test_unknown_special_token_is_a_config_error():
    from pipelines.infra.errors import ConfigError

    with pytest.raises(ConfigError, match="eos_token"):
        Tokenize(TokenizerConfig(eos_token="<nope>"))
