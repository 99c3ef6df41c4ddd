"""Tokenizer backends: the fast backend gives the reference's ids on tokenizers trained here, or
``auto`` falls back with a reason; the guard stops a run on a backend that disagrees."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from pipelines.config import TokenizerConfig
from pipelines.encoders import (FastokensEncoder, ReferenceEncoder, choose_encoder, probes,
                                self_test)
from pipelines.steps.guard import Guard, TokenizerMismatch
from tests.pipelines.conftest import english_records

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _corpus() -> list[str]:
    return [r["text"] for r in english_records(60)]


def _bpe() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_corpus(), trainers.BpeTrainer(
        vocab_size=800, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return tok


def _unigram() -> Tokenizer:
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace("``", '"')])
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(_corpus(), trainers.UnigramTrainer(
        vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"], unk_token="<unk>",
        show_progress=False))
    return tok


def _wordpiece() -> Tokenizer:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(_corpus(), trainers.WordPieceTrainer(
        vocab_size=700, special_tokens=["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"],
        show_progress=False))
    return tok


def _bos_post_processor() -> Tokenizer:
    tok = _bpe()
    tok.add_special_tokens(["<s>"])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return tok


BUILDERS = {"byte-level BPE + specials": _bpe, "Unigram + Metaspace + NFKC": _unigram,
            "WordPiece + BERT normalizer": _wordpiece, "BPE + BOS post-processor": _bos_post_processor}
# what ``auto`` picks with the pinned fastokens (it has no NFKC, BertNormalizer or Metaspace)
EXPECTED = {"byte-level BPE + specials": "fastokens", "Unigram + Metaspace + NFKC": "tokenizers",
            "WordPiece + BERT normalizer": "tokenizers", "BPE + BOS post-processor": "fastokens"}


@pytest.fixture(scope="module", params=list(BUILDERS))
def trained(request, tmp_path_factory) -> tuple[str, Path]:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    BUILDERS[request.param]().save(str(path))
    return request.param, path


TEXT = st.text(st.characters(codec="utf-8"), max_size=80) | st.sampled_from(
    ["", " ", "\n\n", "  \t ", "<|endoftext|>", "x<|im_start|>y", "[CLS] a [SEP]", "<s> hi </s>"])


@pytest.mark.parametrize("split", [True, False], ids=["split", "keep"])
def test_auto_picks_fastokens_with_identical_ids_or_falls_back_with_a_reason(trained, split, caplog):
    name, path = trained
    tok = Tokenizer.from_file(str(path))
    with caplog.at_level(logging.WARNING, logger="pipelines.encoders"):
        encoder, reference, reason = choose_encoder(tok, "auto", split)
    assert encoder.name == EXPECTED[name], reason
    if encoder.name == "tokenizers":  # fell back: the reason is logged and recorded
        assert reference is None and "fastokens" in reason and reason in caplog.text
        return
    assert encoder.name == "fastokens" and "self-test" in reason, name

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(TEXT, min_size=1, max_size=6))
    def same_ids(texts):
        got, got_n = encoder.encode_flat(texts)
        want, want_n = reference.encode_flat(texts)
        assert got_n.tolist() == want_n.tolist() and got.tolist() == want.tolist()

    same_ids()


def test_post_processor_bos_is_not_added_to_document_text(tmp_path):
    """Documents are encoded without the tokenizer's template; fewtrunc adds BOS/EOS itself."""
    path = tmp_path / "tokenizer.json"
    _bos_post_processor().save(str(path))
    tok = Tokenizer.from_file(str(path))
    bos = tok.token_to_id("<s>")
    for backend in ("tokenizers", "auto"):
        ids, _ = choose_encoder(tok, backend, True)[0].encode_flat(["hello world"])
        assert bos not in ids.tolist()
    from pipelines.steps.read import TextBatch
    from pipelines.steps.tokenize import Tokenize

    step = Tokenize(TokenizerConfig(path=str(path), add_bos=True, bos_token="<s>", add_eos=False))
    out = step(TextBatch(doc_ids=[1], texts=["hello world"], first=True, index=[1]))
    assert out.tokens.tolist()[0] == bos and out.tokens.tolist().count(bos) == 1


def test_self_test_reports_the_failing_probe(tokenizer):
    class OffByOne(ReferenceEncoder):
        def encode_flat(self, texts):
            ids, counts = super().encode_flat(texts)
            return ids + (counts.size > 10), counts

    bad = OffByOne(tokenizer, True)
    reason = self_test(bad, ReferenceEncoder(tokenizer, True), probes(tokenizer))
    assert reason is not None and "probe" in reason


def test_explicit_backends(tokenizer):
    assert choose_encoder(tokenizer, "tokenizers", True)[0].name == "tokenizers"
    fast, ref, _ = choose_encoder(tokenizer, "fastokens", True)
    assert fast.name == "fastokens" and ref.name == "tokenizers"
    from pipelines.infra.errors import ConfigError

    with pytest.raises(ConfigError, match="tokenizer.backend"):
        choose_encoder(tokenizer, "sentencepiece", True)


# --- special-token strings inside documents -------------------------------------------------


@pytest.mark.parametrize("backend", ["tokenizers", "fastokens"])
def test_special_token_strings_in_text_split_or_keep(tokenizer, backend):
    text = "a<|endoftext|>b"
    split = choose_encoder(tokenizer, backend, True)[0].encode_flat([text])[0].tolist()
    keep = choose_encoder(tokenizer, backend, False)[0].encode_flat([text])[0].tolist()
    assert keep == [64, 50256, 65]
    assert 50256 not in split and split[0] == 64 and split[-1] == 65


def test_special_token_documents_are_counted_and_split_by_default():
    from pipelines.steps.read import TextBatch
    from pipelines.steps.tokenize import Tokenize

    texts = ["a<|endoftext|>b", "plain", "x <|endoftext|><|endoftext|>", "<|endoftext"]
    batch = lambda: TextBatch(doc_ids=[1, 2, 3, 4], texts=texts, first=True,  # noqa: E731
                              index=[1, 2, 3, 4], spans=[(0, "f.jsonl", "line")])
    split = Tokenize(TokenizerConfig())(batch())
    assert split.special_docs == 2
    # EOS only at each document's end: the text's own "<|endoftext|>" is ordinary text
    ends = np.cumsum(split.lengths) - 1
    assert np.flatnonzero(split.tokens == 50256).tolist() == ends.tolist()
    keep = Tokenize(TokenizerConfig(special_tokens_in_text="keep"))(batch())
    assert keep.special_docs == 2 and keep.tokens[:3].tolist() == [64, 50256, 65]


# --- the guard ------------------------------------------------------------------------------


class DisagreesOn(FastokensEncoder):
    """A backend that gives one wrong id inside any text holding ``marker`` (a plug-in backend
    with a bug, injected through the encoder interface)."""

    name = "faulty"

    def __init__(self, tokenizer, marker: str):
        super().__init__(tokenizer, True)
        self.marker = marker

    def encode_flat(self, texts):
        ids, counts = super().encode_flat(texts)
        ids = ids.copy()
        starts = np.cumsum(counts) - counts
        for i, t in enumerate(texts):
            if self.marker in t and counts[i] > 3:
                ids[starts[i] + 3] += 1
        return ids, counts


def _jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


def test_guard_stops_the_unit_and_names_the_document(tmp_path, tokenizer):
    from pipelines.config import load_run_config
    from pipelines.unit_stream import tokenize_units
    from pipelines.steps.plan import plan_units
    from pipelines.steps.read import Reader
    from pipelines.steps.tokenize import Tokenize

    texts = [f"document number {i} says hello to the world" for i in range(50)]
    texts[0] = "the first document, always checked: BUGGY here"
    src = _jsonl(tmp_path / "in.jsonl", texts)
    cfg = load_run_config(None, [f"input.paths={src}", f"output.dir={tmp_path / 'out'}"])
    work = tmp_path / "work"
    work.mkdir()
    tok = Tokenize(cfg.tokenizer, encoder=DisagreesOn(tokenizer, "BUGGY"))
    with pytest.raises(TokenizerMismatch) as err:
        tokenize_units(work, tok, plan_units(cfg.input), Reader(cfg.input, 10_000), workers=2)
    msg = str(err.value)
    assert "\n" not in msg and f"{src}:line 1:" in msg
    assert "from token 3" in msg and "tokenizer.backend=tokenizers" in msg
    assert not list(work.iterdir())  # no marker, no spill file: nothing counts as complete


def test_guard_checks_a_deterministic_sample_of_at_least_the_fraction(tokenizer):
    ref = ReferenceEncoder(tokenizer, True)
    guard = Guard(ref, ref, fraction=0.01, first=4)
    ids = np.arange(200_000, dtype=np.int64)  # user ids 0, 1, 2, ...: mixed before sampling
    picked = guard.sample(ids, first_batch=False)
    assert 0.009 < picked.size / ids.size < 0.011
    assert np.array_equal(picked, guard.sample(ids, first_batch=False))
    first = guard.sample(ids[:10], first_batch=True)
    assert set(range(4)) <= set(first.tolist())
    rng = np.random.default_rng(0)
    hashed = rng.integers(0, 2**63 - 1, 200_000)
    assert 0.009 < guard.sample(hashed, False).size / hashed.size < 0.011


def test_guard_passes_and_counts_when_backends_agree(tokenizer):
    from pipelines.steps.read import TextBatch

    fast = FastokensEncoder(tokenizer, True)
    guard = Guard(fast, ReferenceEncoder(tokenizer, True), fraction=1.0, first=0)
    texts = [r["text"] for r in english_records(20)] + ["", " "]
    ids, counts = fast.encode_flat(texts)
    batch = TextBatch(doc_ids=list(range(len(texts))), texts=texts, index=list(range(len(texts))))
    assert guard.check(batch, ids, counts) == len(texts)


# --- end to end: the backend changes no byte ------------------------------------------------


def test_backends_write_identical_shards_and_share_the_fingerprint(tmp_path):
    import pipelines
    from tests.pipelines.conftest import base_overrides, file_bytes

    texts = [r["text"] for r in english_records(40)] + ["a<|endoftext|>b", "<|endoftext|>"]
    src = _jsonl(tmp_path / "in.jsonl", texts)
    runs = {}
    for backend in ("tokenizers", "fastokens"):
        out = tmp_path / backend
        r = pipelines.run(None, base_overrides(out, str(src), **{"tokenizer.backend": backend}))
        runs[backend] = (out, r["manifest"])
    (a, ma), (b, mb) = runs["tokenizers"], runs["fastokens"]
    shards = lambda d: {k: v for k, v in file_bytes(d).items() if k.endswith(".arrow")}  # noqa
    assert shards(a) == shards(b) and shards(a)
    assert ma["run_fingerprint"] == mb["run_fingerprint"]
    assert mb["tokenizer"]["backend"]["name"] == "fastokens"
    assert mb["tokenizer"]["backend"]["version"] == mb["packages"]["fastokens"]
    assert ma["tokenizer"]["backend"]["name"] == "tokenizers"
    assert mb["totals"]["documents_with_special_tokens"] == 2
    assert mb["totals"]["documents_guard_checked"] >= 4 and ma["totals"][
        "documents_guard_checked"] == 0
    # a finished run is the same run under the other backend
    again = pipelines.run(None, base_overrides(a, str(src), **{"tokenizer.backend": "auto"}))
    assert again["status"] == "already complete"


def test_guard_fraction_below_one_percent_is_refused():
    from pipelines.config import load_run_config
    from pipelines.infra.errors import ConfigError

    with pytest.raises(ConfigError, match="guard_fraction"):
        load_run_config(None, ["input.paths=x", "tokenizer.guard_fraction=0.001"])
    with pytest.raises(ConfigError, match="backend"):
        load_run_config(None, ["input.paths=x", "tokenizer.backend=sentencepiece"])


_SPECIAL_SETS = [["<|endoftext|>"], SPECIALS,
                 ["<|begin_of_text|>"] + [f"<|reserved_special_token_{i}|>" for i in range(40)],
                 ["[CLS]", "[SEP]", "[PAD]", "<s>", "</s>"]]


@settings(max_examples=60, deadline=None)
@given(which=st.integers(0, len(_SPECIAL_SETS) - 1), data=st.data())
def test_special_finder_counts_the_texts_holding_a_special_string(which, data):
    """Whatever needles it searches for (the common prefix, or 8-character prefixes), the count
    is that of a plain search for every string."""
    from pipelines.steps.tokenize import SpecialFinder

    strings = _SPECIAL_SETS[which]
    piece = st.one_of(st.text(max_size=12), st.sampled_from(strings + ["<|", "[C", "<|reserved"]))
    texts = data.draw(st.lists(st.lists(piece, max_size=6).map("".join), max_size=12))
    want = sum(any(s in t for s in strings) for t in texts)
    assert SpecialFinder(strings).count(texts) == want
