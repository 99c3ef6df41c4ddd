"""PackedCollator's default batch keeps documents apart on models built from DEFAULT configs.

Every pretrained Llama/Mistral/Qwen config says ``use_cache=True``; with a cache, transformers does
not derive the block-diagonal mask from ``position_ids``, and the documents of a packed row attend
to each other. The default batch carries ``use_cache=False``. Models here are the default configs of
three architectures with only their sizes shrunk (``use_cache`` left at True), in float64, with
eager and SDPA attention, in eval and in training mode; logits and per-document losses must equal
each document run alone, through ``model(**batch)`` and through the ``Trainer``.

Tolerances: SDPA in float64 differs from a document run alone only by float64 rounding in matmuls of
other shapes (measured: 0 to 1e-15), so 1e-10. Eager attention computes its softmax in float32
(``eager_attention_forward`` upcasts to float32, then casts back), so about 1e-7: 1e-6. A leak moves
logits by more than 1e-2 (the negative control below).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
import torch.nn.functional as F  # noqa: E402

from pipelines.infra.errors import ConfigError  # noqa: E402
from training.data import ShardDataset, vocab_map  # noqa: E402
from training.hf import PackedCollator  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
VOCAB = 128
TOL = {"sdpa": 1e-10, "eager": 1e-6}
ARCHS = {"llama": "LlamaConfig", "qwen2": "Qwen2Config", "mistral": "MistralConfig"}


def default_model(arch: str, attn: str, seed: int = 0):
    """The architecture's default config, only its sizes shrunk; float64."""
    cfg = getattr(transformers, ARCHS[arch])(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    assert cfg.use_cache is True
    torch.manual_seed(seed)
    return transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation=attn, dtype=torch.float64)


@pytest.fixture(scope="module")
def rows_and_map(shard_dir):
    """Three real packed rows with the most documents; ids mapped to the 127 most frequent + UNK."""
    ds = ShardDataset(shard_dir)
    token_map = vocab_map(ds, 50257, VOCAB)
    busiest = sorted(range(len(ds)), key=lambda i: -len(ds[i]["doc_lens"]))[:3]
    rows = [ds[i] for i in busiest]
    assert sum(len(r["doc_lens"]) for r in rows) >= 8
    return rows, token_map


@torch.no_grad()
def alone(model, rows, token_map):
    """Logits of every document run alone (one sequence: no packing to detect), concatenated, and
    each document's mean next-token loss."""
    logits, losses = [], []
    for r in rows:
        ids = torch.from_numpy(token_map[r["input_ids"]])
        for doc in torch.split(ids, [int(n) for n in r["doc_lens"]]):
            out = model(input_ids=doc[None]).logits[0].detach()
            logits.append(out)
            losses.append(F.cross_entropy(out[:-1], doc[1:]).item() if doc.numel() > 1 else float("nan"))
    return torch.cat(logits), np.array(losses)


def packed_doc_losses(logits, labels, doc_lens):
    """Per-document mean loss from a flattened batch (HF's unshifted labels)."""
    ce = F.cross_entropy(logits[:-1], labels[1:], ignore_index=-100, reduction="none")
    valid = labels[1:] != -100
    doc = torch.repeat_interleave(torch.arange(len(doc_lens)), torch.as_tensor(doc_lens))[1:]
    sums = torch.zeros(len(doc_lens), dtype=ce.dtype).index_add_(0, doc[valid], ce[valid])
    counts = torch.zeros(len(doc_lens), dtype=ce.dtype).index_add_(0, doc[valid], torch.ones_like(ce[valid]))
    return (sums / counts).detach().numpy()


def _check(got_logits, got_losses, ref_logits, ref_losses, tol):
    assert got_logits.shape == ref_logits.shape
    diff = float((got_logits - ref_logits).abs().max())
    scored = ~np.isnan(ref_losses)
    loss_diff = float(np.abs(got_losses[scored] - ref_losses[scored]).max())
    assert diff <= tol and loss_diff <= tol, (diff, loss_diff)
    return diff


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_default_config_model_scores_every_document_as_if_alone(rows_and_map, arch, attn, mode):
    rows, token_map = rows_and_map
    model = default_model(arch, attn)
    model.train(mode == "train")
    ref_logits, ref_losses = alone(model, rows, token_map)
    batch = PackedCollator(token_map=token_map)(rows)
    out = model(**batch)  # labels included: the model's own loss too
    doc_lens = np.concatenate([r["doc_lens"] for r in rows])
    logits = out.logits[0].detach()
    _check(logits, packed_doc_losses(logits, batch["labels"][0], doc_lens), ref_logits, ref_losses, TOL[attn])
    assert batch["use_cache"] is False and "attention_mask" not in batch
    counts = np.array([n - 1 for n in doc_lens])  # targets per document: all but its first token
    expected = np.nansum(ref_losses * counts) / counts.sum()
    assert abs(out.loss.item() - expected) <= 1e-6  # transformers' own loss casts the logits to float32
    if mode == "train":  # gradients flow through the same graph
        out.loss.backward()

    # negative control: the same batch without the key leaks on this config
    leaky = {k: v for k, v in batch.items() if k != "use_cache"}
    assert float((model(**leaky).logits[0].detach() - ref_logits).abs().max()) > 1e-2


@pytest.mark.parametrize("layout", ["flatten", "stack"])
def test_a_4d_mask_keeps_documents_apart_even_with_a_cache(rows_and_map, layout):
    rows, token_map = rows_and_map
    model = default_model("qwen2", "sdpa").eval()
    ref_logits, _ = alone(model, rows, token_map)
    for use_cache in (None, True):
        batch = PackedCollator(layout=layout, mask="4d", mask_dtype=torch.float64, token_map=token_map,
                               use_cache=use_cache)(rows)
        assert batch.get("use_cache") is use_cache
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.detach()
        lens = [int(np.sum(r["doc_lens"])) for r in rows]
        got = logits.reshape(-1, VOCAB) if layout == "flatten" else \
            torch.cat([logits[b, :n] for b, n in enumerate(lens)])
        assert float((got - ref_logits).abs().max()) <= TOL["sdpa"]


def test_collators_that_cannot_keep_documents_apart_are_refused():
    with pytest.raises(ConfigError, match=r"^PackedCollator\(use_cache=None\) cannot keep documents apart"):
        PackedCollator(use_cache=None)
    with pytest.raises(ConfigError, match=r"^PackedCollator\(use_cache=True\) cannot keep documents apart"):
        PackedCollator(use_cache=True, flash_attn_kwargs=True)
    with pytest.raises(ConfigError, match="lets the documents of a row attend to each other"):
        PackedCollator(position_ids=False)
    PackedCollator(position_ids=False, flash_attn_kwargs=True)  # FlashAttention-2 varlen: cu_seq_lens separate


@pytest.mark.parametrize("arch, args_use_cache", [("llama", False), ("llama", True), ("mistral", True)])
def test_trainer_passes_use_cache_false_and_trains_on_separate_documents(rows_and_map, tmp_path, arch,
                                                                          args_use_cache):
    """A real Trainer step on a default-config model: the forward it runs (training mode) gets
    ``use_cache=False`` and gives the logits of each document alone, computed from the same
    initial weights. The Trainer writes ``TrainingArguments.use_cache`` (False unless set, True
    for some PEFT methods) into ``model.config``; the batch's own key keeps documents apart
    either way."""
    rows, token_map = rows_and_map
    ref_logits, ref_losses = alone(default_model(arch, "sdpa").train(), rows, token_map)
    model = default_model(arch, "sdpa")
    seen, captured = [], []
    model.register_forward_pre_hook(lambda m, args, kwargs: seen.append(dict(kwargs)), with_kwargs=True)

    def loss_func(outputs, labels, num_items_in_batch=None):
        captured.append((outputs.logits[0].detach().clone(), labels[0].clone()))
        return F.cross_entropy(outputs.logits[0, :-1], labels[0, 1:].to(outputs.logits.device), ignore_index=-100)

    args = transformers.TrainingArguments(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=len(rows),
                                          learning_rate=1e-3, use_cpu=True, report_to=[], disable_tqdm=True,
                                          dataloader_num_workers=0, remove_unused_columns=False, save_strategy="no",
                                          use_cache=args_use_cache)

    class InOrder(transformers.Trainer):
        def _get_train_sampler(self, *a, **k):
            return torch.utils.data.SequentialSampler(self.train_dataset)

    trainer = InOrder(model=model, args=args, train_dataset=rows, data_collator=PackedCollator(token_map=token_map),
                      compute_loss_func=loss_func)
    trainer.train()
    logits, labels = captured[0]
    doc_lens = np.concatenate([r["doc_lens"] for r in rows])
    _check(logits, packed_doc_losses(logits, labels, doc_lens), ref_logits, ref_losses, TOL["sdpa"])
    assert len(seen) == 1 and seen[0]["use_cache"] is False and model.training
    assert model.config.use_cache is args_use_cache


def test_the_example_model_keeps_the_default_cache_setting_and_documents_apart(rows_and_map):
    """examples/hf_trainer.py builds its Llama without touching use_cache; its batches still
    separate documents (float32 here, as the example trains: tolerance 1e-5)."""
    spec = importlib.util.spec_from_file_location("hf_trainer_example", ROOT / "examples" / "hf_trainer.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    rows, token_map = rows_and_map
    model = example.tiny_llama(VOCAB, 2048, "sdpa").eval()
    assert model.config.use_cache is True
    ref_logits, ref_losses = alone(model, rows, token_map)
    with torch.no_grad():
        batch = PackedCollator(token_map=token_map)(rows)
        logits = model(**batch).logits[0]
    doc_lens = np.concatenate([r["doc_lens"] for r in rows])
    _check(logits, packed_doc_losses(logits, batch["labels"][0], doc_lens), ref_logits, ref_losses, 1e-5)


def test_a_trainer_that_strips_the_rows_columns_says_how_to_keep_them(rows_and_map, tmp_path):
    """``remove_unused_columns=True`` (the Trainer's default) filters the rows before the collator,
    never its batch: ``doc_lens`` is gone, and the collator says which setting to change."""
    rows, token_map = rows_and_map
    args = transformers.TrainingArguments(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2,
                                          use_cpu=True, report_to=[], disable_tqdm=True, save_strategy="no")
    trainer = transformers.Trainer(model=default_model("llama", "sdpa"), args=args, train_dataset=rows,
                                   data_collator=PackedCollator(token_map=token_map))
    with pytest.raises(KeyError, match=r"remove_unused_columns=False\) so that they reach the collator"):
        trainer.train()
