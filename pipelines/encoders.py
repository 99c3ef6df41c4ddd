"""Tokenizer backends: one interface, HF ``tokenizers`` as the reference, ``fastokens`` as the fast one.

An ``Encoder`` turns a list of texts into one flat int32 id array plus per-text counts, with no
per-token Python object. Both backends load the same ``tokenizer.json``; ``auto`` uses
``fastokens`` only when it loads the tokenizer and encodes a fixed probe set (multilingual text,
special-token strings, empty and whitespace-only strings) to exactly the reference ids, and falls
back to ``tokenizers`` with the reason otherwise. The backend never changes the output: every run
also re-encodes a sample with the reference (``pipelines.steps.guard``).

``split_special`` (``tokenizer.special_tokens_in_text: split``) encodes special-token strings that
occur in a document as ordinary text, so that fewtrunc's BOS/EOS are the only control ids.
"""
from __future__ import annotations

import importlib.metadata
import itertools
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np

from pipelines.infra.errors import ConfigError, show

log = logging.getLogger(__name__)

BACKENDS = ("auto", "tokenizers", "fastokens")

# Fixed probe set of the self-test. Special-token strings of the tokenizer itself are added to it.
PROBES = (
    "",
    " ",
    "   ",
    "\n",
    "\t\n \r\n",
    "Hello world",
    "Hello, world! It's 3.14 o'clock — isn't it?",
    "  leading and trailing spaces  ",
    "def f(x):\n    return x ** 2  # square\n\n\n",
    "int main(void) {\n\treturn 0;\n}\n",
    "Zürich, Ærøskøbing, naïve café, Ångström",
    "Москва — столица России.",
    "東京は日本の首都です。中文分词测试。",
    "한국어 문장입니다.",
    "العربية لغة جميلة",
    "עברית",
    "हिन्दी भाषा",
    "ภาษาไทย",
    "Emoji: 👩‍👩‍👧‍👦 🇫🇷 👍🏽 ❤️",
    "e\u0301 a\u0308 combining marks \u0301\u0301",
    "zero\u200bwidth\u200djoiner\ufeffbom",
    "control \x00 \x07 \x1b[31m chars",
    "mixed\u3000ideographic\u00a0nbsp",
    "1234567890 12,345.678 0x1F 1e-9",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "    " * 40 + "x",
    "<s> </s> [CLS] [SEP] [PAD] [MASK] <pad> <unk>",
    "<|endoftext|>",
    "a<|endoftext|>b",
    "<|im_start|>user\nhi<|im_end|>",
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>",
)


class Encoder(Protocol):
    name: str
    version: str

    def encode_flat(self, texts: list) -> tuple[np.ndarray, np.ndarray]:
        """(int32 ids of every text back to back, int64 token count of each text)."""


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        return "unknown"


class ReferenceEncoder:
    """HF ``tokenizers``: the reference, the fallback, and what loads and trains tokenizers."""

    name = "tokenizers"

    def __init__(self, tokenizer, split_special: bool):
        from tokenizers import Tokenizer

        # a private copy: ``encode_special_tokens`` is state on the object, and the loaded
        # tokenizer is shared (cached) by every caller in the process
        self.tokenizer = Tokenizer.from_str(tokenizer.to_str())
        self.tokenizer.encode_special_tokens = split_special
        self.version = _version("tokenizers")
        self._encode = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)

    def encode_flat(self, texts: list) -> tuple[np.ndarray, np.ndarray]:
        if not texts:
            return np.zeros(0, np.int32), np.zeros(0, np.int64)
        encodings = self._encode(texts, add_special_tokens=False)
        counts = np.fromiter(map(len, encodings), dtype=np.int64, count=len(encodings))
        # one document's id list at a time: a batch's ids as Python ints would be ~36 bytes each
        ids = itertools.chain.from_iterable(e.ids for e in encodings)
        return np.fromiter(ids, dtype=np.int32, count=int(counts.sum())), counts


class FastokensEncoder:
    """``fastokens`` (Rust): ``encode_batch_flat`` returns one uint32 buffer plus offsets."""

    name = "fastokens"

    def __init__(self, tokenizer, split_special: bool):
        import fastokens

        self.tokenizer = fastokens.Tokenizer.from_json_str(tokenizer.to_str())
        self.split_special = split_special
        self.version = _version("fastokens")

    def encode_flat(self, texts: list) -> tuple[np.ndarray, np.ndarray]:
        if not texts:
            return np.zeros(0, np.int32), np.zeros(0, np.int64)
        ids, offsets = self.tokenizer.encode_batch_flat(
            texts, add_special_tokens=False, split_special_tokens=self.split_special)
        offsets = np.frombuffer(offsets, dtype=np.uint64).astype(np.int64)
        # vocabularies are far below 2**31, so the uint32 buffer reads as int32 without a copy
        return np.frombuffer(ids, dtype=np.int32), np.diff(offsets)


def special_strings(tokenizer) -> list[str]:
    """The contents of the tokenizer's special added tokens (what ``split`` encodes as text)."""
    decoder = tokenizer.get_added_tokens_decoder()
    return sorted({t.content for t in decoder.values() if t.special and t.content})


def probes(tokenizer) -> list[str]:
    """The fixed probe set plus every special token alone and inside text."""
    specials = special_strings(tokenizer)[:64]
    return list(PROBES) + specials + [f"x {s}y{s}\n{s} z" for s in specials]


def first_difference(a: np.ndarray, b: np.ndarray) -> int:
    """The first token position where ``a`` and ``b`` differ (the shorter length if a prefix)."""
    n = min(a.size, b.size)
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if diff.size else n


def self_test(candidate, reference, texts: list[str]) -> str | None:
    """None when ``candidate`` encodes every text exactly as ``reference`` does, else why not."""
    got, got_n = candidate.encode_flat(texts)
    want, want_n = reference.encode_flat(texts)
    bad = np.flatnonzero(got_n != want_n)
    if not bad.size and np.array_equal(got, want):
        return None
    if not bad.size:  # same counts, other ids: find the text
        ends = np.cumsum(want_n)
        bad = np.unique(np.searchsorted(ends, np.flatnonzero(got != want), side="right"))
    i = int(bad[0])
    return (f"probe {i} ({texts[i][:40]!r}) encodes to other ids than tokenizers "
            f"({int(got_n[i])} vs {int(want_n[i])} tokens)")


def choose_encoder(tokenizer, backend: str, split_special: bool):
    """(encoder, reference, reason): the encoder to run, the reference (None when the encoder is
    the reference itself) and why this backend was chosen."""
    if backend not in BACKENDS:
        raise ConfigError(f"tokenizer.backend {show(backend)}: choose one of {BACKENDS}")
    if backend == "tokenizers":
        return ReferenceEncoder(tokenizer, split_special), None, "tokenizer.backend=tokenizers"
    with ThreadPoolExecutor(1) as pool:  # both parse the tokenizer's JSON; fastokens frees the GIL
        loading = pool.submit(FastokensEncoder, tokenizer, split_special)
        reference = ReferenceEncoder(tokenizer, split_special)
    try:
        fast = loading.result()
    except Exception as exc:  # noqa: BLE001 - ImportError, or a tokenizer.json it cannot load
        reason = f"fastokens cannot load this tokenizer: {type(exc).__name__}: {exc}"
        if backend == "fastokens":
            raise ConfigError(f"tokenizer.backend=fastokens: {reason}") from exc
        log.warning("tokenizer.backend=auto uses tokenizers: %s", reason)
        return reference, None, reason
    failed = self_test(fast, reference, probes(tokenizer))
    if failed is not None:
        reason = f"fastokens failed the self-test: {failed}"
        if backend == "fastokens":
            raise ConfigError(f"tokenizer.backend=fastokens: {reason}; use "
                              "tokenizer.backend=tokenizers")
        log.warning("tokenizer.backend=auto uses tokenizers: %s", reason)
        return reference, None, reason
    return fast, reference, f"fastokens passed the self-test ({backend})"


# --- warm start: load the backends while the rest of the process imports and plans -----------

_PRELOADED: dict = {}
_PRELOAD_LOCK = threading.Lock()


def preload(path: str, backend: str, split_special: bool) -> None:
    """Start loading the tokenizer and choosing its backend in a thread (fastokens' parse of the
    tokenizer.json frees the GIL), so ``encoders_for`` finds them ready. A run calls this as soon
    as its config is valid: start-up is then the longer of imports and tokenizer load, not both."""
    key = (path, backend, split_special)
    with _PRELOAD_LOCK:
        if key in _PRELOADED:
            return
        pool = ThreadPoolExecutor(1, thread_name_prefix="fewtrunc-preload")
        _PRELOADED[key] = pool.submit(_load, path, backend, split_special)
        pool.shutdown(wait=False)


def _load(path: str, backend: str, split_special: bool):
    from pipelines.infra.tokenizer import load_tokenizer

    return choose_encoder(load_tokenizer(path or None), backend, split_special)


def encoders_for(path: str, backend: str, split_special: bool):
    """``choose_encoder``'s (encoder, reference, reason) for this tokenizer: the preloaded ones
    (taken, so each ``Tokenize`` gets its own), else loaded now."""
    with _PRELOAD_LOCK:
        future = _PRELOADED.pop((path, backend, split_special), None)
    return future.result() if future is not None else _load(path, backend, split_special)
