"""The training loop: build runtime objects from a ``TrainRunConfig``, train, log, checkpoint, resume.

Resuming: when ``output.dir`` holds a checkpoint, the run continues from the newest one, and
``metrics.jsonl`` keeps only the lines up to that step. Since the learning-rate schedule depends
on ``train.warmup_steps``/``decay_steps`` (never on ``max_steps``) and every piece of state is in
the checkpoint, a run extended with a larger ``train.max_steps`` logs exactly the losses of an
uninterrupted run (on CPU; on CUDA up to kernel non-determinism).
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from pipelines.configio import dump_yaml, to_dict
from pipelines.errors import ConfigError
from pruning_data import DynamicPruner
from training import checkpoint as ckpt
from training.config import RESUMABLE_CHANGES, TrainRunConfig
from training.data import DocumentCollator, ShardDataset, mask_documents, vocab_map
from training.evaluate import score_dataset
from training.losses import Objective, token_tie_ids
from training.metrics import MetricsLog, plot_metrics
from training.model import GPT
from training.preflight import check_ids_fit, check_seq_len, check_vocab
from training.sampler import PrunerSubset, ResumableSampler


def lr_at(step: int, cfg) -> float:
    """Linear warmup to ``lr``, then constant or cosine to ``min_lr`` over ``decay_steps``."""
    if cfg.warmup_steps and step <= cfg.warmup_steps:
        return cfg.lr * step / cfg.warmup_steps
    if cfg.decay_steps <= 0:
        return cfg.lr
    t = min(1.0, (step - cfg.warmup_steps) / cfg.decay_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * t))


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but CUDA is not available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def tokenizer_vocab_size(path: str) -> int:
    from pipelines.tokenizer import load_tokenizer

    return load_tokenizer(path or None).get_vocab_size()


class Trainer:
    """``Trainer(cfg).fit()``; ``step_callback(step, batch, logits, stats)`` observes each step."""

    def __init__(self, cfg: TrainRunConfig, step_callback: Optional[Callable] = None):
        self.cfg = cfg
        self.step_callback = step_callback
        self.out = Path(cfg.output.dir)
        if cfg.train.threads > 0:
            torch.set_num_threads(cfg.train.threads)
        self.device = resolve_device(cfg.train.device)
        bf16 = cfg.train.precision == "bf16" or (cfg.train.precision == "auto" and self.device.type == "cuda")
        self.autocast = (lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)) if bf16 else nullcontext
        resume_path = ckpt.latest_checkpoint(self.out)
        self.resume = ckpt.load_checkpoint(resume_path) if resume_path else None
        if self.resume is not None:
            diff = ckpt.config_differences(self.resume["config"], to_dict(cfg), RESUMABLE_CHANGES)
            if diff:
                raise ConfigError(f"{self.out} holds a run with a different configuration "
                                  f"({', '.join(diff)}); use another output.dir")
        self._build_data()
        self._build_model()

    def _build_data(self) -> None:
        cfg = self.cfg
        self.dataset = ShardDataset(cfg.data.dir)  # checks every shard; damage ends here, naming the file
        check_seq_len(self.dataset, cfg.model.seq_len)
        token_map = None
        if self.resume is not None and self.resume["token_map"] is not None:
            token_map = self.resume["token_map"].numpy()
        elif cfg.data.vocab_limit:
            n_ids = tokenizer_vocab_size(cfg.data.tokenizer)
            check_ids_fit(self.dataset, n_ids, f"data.tokenizer ({cfg.data.tokenizer or 'GPT-2'})")
            token_map = vocab_map(self.dataset, n_ids, cfg.data.vocab_limit)
        if cfg.model.vocab_size:
            self.vocab_size, what = cfg.model.vocab_size, f"model.vocab_size={cfg.model.vocab_size}"
        elif cfg.data.vocab_limit:
            self.vocab_size, what = cfg.data.vocab_limit, f"data.vocab_limit={cfg.data.vocab_limit}"
        else:
            self.vocab_size = tokenizer_vocab_size(cfg.data.tokenizer)
            what = f"{self.vocab_size} ids of data.tokenizer ({cfg.data.tokenizer or 'GPT-2'})"
        check_vocab(self.dataset, self.vocab_size, token_map, what)
        self.dataset.token_map = token_map
        self.collator = DocumentCollator(cfg.data.reset_position_ids)
        self.pruner = self.subset = None
        p = cfg.pruning
        self.segment_document = None  # unit=document: the pruner's example index of every segment
        if p.enabled:
            doc_ids = [self.dataset[i]["doc_ids"] for i in range(len(self.dataset))]
            per_row = np.array([d.size for d in doc_ids])
            if p.unit == "row":
                n = len(per_row)
            else:  # every chunk of a document, in whatever row, is one example: kept or pruned together
                _, self.segment_document = np.unique(np.concatenate(doc_ids), return_inverse=True)
                n = int(self.segment_document.max()) + 1 if self.segment_document.size else 0
            self.pruner = DynamicPruner(n, p.keep_fraction, p.offset_fraction, p.full_epochs,
                                        p.rescore_every, seed=cfg.data.seed, strategy=p.strategy,
                                        ema_previous_weight=p.ema_previous_weight)
            self.subset = PrunerSubset(self.pruner, p.unit, per_row, segment_example=self.segment_document)
        self.sampler = ResumableSampler(len(self.dataset), cfg.data.batch_size, cfg.data.seed,
                                        subset=self.subset, on_epoch_start=self._on_epoch_start)
        self.rescored_epochs: list[int] = []

    def _build_model(self) -> None:
        from dataclasses import replace

        torch.manual_seed(self.cfg.train.seed)
        model_cfg = replace(self.cfg.model, vocab_size=self.vocab_size)
        self.model = GPT(model_cfg).to(self.device)
        t = self.cfg.train
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=t.lr, betas=tuple(t.betas),
                                           weight_decay=t.weight_decay)
        self.objective = Objective(self.cfg.loss)
        self.step = 0
        if self.resume is not None:
            r = self.resume
            self.model.load_state_dict(r["model"])
            self.optimizer.load_state_dict(r["optimizer"])
            self.sampler.load_state_dict(r["sampler"])
            self.objective.load_state_dict(r["objective"])
            if self.pruner is not None:
                self.pruner.load_state_dict(r["pruner"])
            torch.set_rng_state(r["rng"])
            if self.device.type == "cuda" and r.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(r["cuda_rng"])
            self.step = int(r["step"])
        self.forward_model = torch.compile(self.model) if self.cfg.train.compile else self.model

    def _on_epoch_start(self, epoch: int) -> None:
        """Dynamic pruning: re-score every example with the current model when scheduled."""
        if self.pruner is None or not self.pruner.needs_scores(epoch):
            return
        s = score_dataset(self.model, self.dataset, self.collator, self.cfg.data.batch_size, self.device)
        if self.cfg.pruning.unit == "row":
            scores = s["row_el2n"]
        else:  # a document's EL2N: the mean over all its chunks' scored targets
            n = self.pruner.n_examples
            weight = s["n_scored"].astype(np.float64)
            sums = np.bincount(self.segment_document, np.nan_to_num(s["el2n"], nan=0.0) * weight, n)
            counts = np.bincount(self.segment_document, weight, n)
            scores = np.divide(sums, counts, out=np.zeros(n), where=counts > 0)
        self.pruner.update(np.nan_to_num(scores, nan=0.0))  # nothing scored: no loss to lose
        self.rescored_epochs.append(epoch)

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "sampler": self.sampler.state_dict(),
            "objective": self.objective.state_dict(),
            "pruner": None if self.pruner is None else self.pruner.state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if self.device.type == "cuda" else None,
            "token_map": None if self.dataset.token_map is None else torch.from_numpy(self.dataset.token_map),
            "vocab_size": self.vocab_size,
            "config": to_dict(self.cfg),
        }

    def next_batch(self) -> dict:
        rows = self.sampler.next_batch()
        batch = self.collator([self.dataset[int(i)] for i in rows])
        if self.subset is not None:
            keep = self.subset.keep_masks(self.sampler.epoch, rows)
            if keep is not None:
                batch = mask_documents(batch, keep)
        return batch

    def train_step(self, batch: dict) -> dict:
        t = self.cfg.train
        lr = lr_at(self.step + 1, t)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        with self.autocast():
            logits = self.forward_model(batch["input_ids"].to(self.device),
                                        batch["position_ids"].to(self.device),
                                        batch["segment_ids"].to(self.device))
        labels = batch["labels"].to(self.device)
        e = self.cfg.loss.ent
        tie_ids = token_tie_ids(batch).to(self.device) \
            if self.cfg.loss.kind == "ent" and e.fraction is not None else None
        # step = updates already done, so loss.ent.warmup_steps=k gives exactly k MLE updates
        loss, stats = self.objective(logits, labels, self.step,
                                     segment_ids=batch["segment_ids"].to(self.device), tie_ids=tie_ids)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        self.optimizer.step()
        self.step += 1
        if self.step_callback is not None:
            self.step_callback(self.step, batch, logits.detach(), stats)
        stats.pop("dropped_mask", None)
        return {"step": self.step, "loss": float(loss.detach()), "lr": lr, "epoch": self.sampler.epoch,
                "rows": int(batch["input_ids"].shape[0]), **stats}

    def fit(self) -> dict:
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.yaml").write_text(dump_yaml(cfg), encoding="utf-8")
        log = MetricsLog(self.out / "metrics.jsonl", resume_step=self.step)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start_step, t0, tokens = self.step, time.perf_counter(), 0
        last = None
        while self.step < cfg.train.max_steps:
            batch = self.next_batch()
            t_step = time.perf_counter()
            record = self.train_step(batch)
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            tokens += int(batch["input_ids"].numel())
            record["input_tokens"] = int(batch["input_ids"].numel())
            record["seconds"] = round(time.perf_counter() - t_step, 5)
            record["tokens_per_s"] = round(tokens / max(time.perf_counter() - t0, 1e-9), 1)
            if self.device.type == "cuda":
                record["max_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            if self.step % cfg.train.log_every == 0 or self.step == cfg.train.max_steps:
                log.write(record)
            if self.step % cfg.train.checkpoint_every == 0 or self.step == cfg.train.max_steps:
                ckpt.save_checkpoint(self.state_dict(), self.out, self.step, cfg.train.keep_checkpoints)
            last = record
        if cfg.output.plot and (self.out / "metrics.jsonl").stat().st_size:
            plot_metrics(self.out / "metrics.jsonl", self.out / "curves.png")
        elapsed = time.perf_counter() - t0
        return {"start_step": start_step, "step": self.step, "seconds": elapsed,
                "tokens_per_s": tokens / max(elapsed, 1e-9), "last": last,
                "rescored_epochs": list(self.rescored_epochs)}
