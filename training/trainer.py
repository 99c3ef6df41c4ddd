"""The training loop: build runtime objects from a ``TrainRunConfig``, train, log, checkpoint, resume,
in one process or in each of N data-parallel ones (``training.distributed``).

Data comes from the streaming reader (``training.feed``) in its global order, which does not
depend on the number of processes; ``data.batch_size`` is the global batch, split into one share
per rank. Gradients are averaged by DDP, and the loss of a step is normalized by the global
counts, so N processes log, step for step, the losses of one (within float rounding). Only rank 0
writes ``config.yaml``, ``metrics.jsonl``, ``samples.jsonl``, plots and checkpoints.

Resuming: when ``output.dir`` holds a checkpoint, the run continues from the newest one, with the
same or another number of processes (the checkpoint holds global state only: the model and
optimizer, the reader's epoch and global sample position, the pruner, the loss-truncation buffer,
the RNG), and ``metrics.jsonl`` keeps only the lines up to that step. Since the learning-rate
schedule depends on ``train.warmup_steps``/``decay_steps`` (never on ``max_steps``), a run
extended with a larger ``train.max_steps`` logs exactly the losses of an uninterrupted run (on
CPU; on CUDA up to kernel non-determinism).
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import yaml

from pipelines.infra.configio import to_dict
from pipelines.infra.errors import ConfigError
from pipelines.infra.storage.redact import redact_tree
from pruning_data import DynamicPruner
from training import checkpoint as ckpt
from training.config import RESUMABLE_CHANGES, TrainRunConfig
from training.data import DocumentCollator, mask_documents
from training.distributed import LOCAL, CollectiveError
from training.feed import RowView, StepFeed, nothing_to_learn
from training.losses import Objective, token_tie_ids
from training.metrics import MetricsLog, plot_metrics
from training.model import GPT
from training.rescoring import rescore
from training.runtime import lr_at, resolve_device
from training.sampler import PrunerSubset
from training.startup import open_data

__all__ = ["Trainer", "lr_at", "resolve_device"]


class Trainer:
    """``Trainer(cfg).fit()``; ``step_callback(step, batch, logits, stats)`` observes each step
    (this rank's share of it); ``dist`` (a ``training.distributed.Dist``) for data-parallel runs."""

    def __init__(self, cfg: TrainRunConfig, step_callback: Optional[Callable] = None, dist=None):
        self.cfg, self.step_callback = cfg, step_callback
        self.dist = d = dist or LOCAL
        self.out = Path(cfg.output.dir)
        if cfg.train.threads > 0:
            torch.set_num_threads(cfg.train.threads)
        self.device = resolve_device(cfg.train.device, d.local_rank)
        bf16 = cfg.train.precision == "bf16" or (cfg.train.precision == "auto" and self.device.type == "cuda")
        self.autocast = (lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)) if bf16 else nullcontext
        d.agree(self._check_world)
        self.resume = d.broadcast(d.agree(self._read_checkpoint if d.rank == 0 else lambda: None))
        self._build_data()
        self._build_model()

    def _check_world(self) -> None:
        if self.cfg.data.batch_size % self.dist.world:
            raise ConfigError(f"data.batch_size={self.cfg.data.batch_size} (the global batch) is not a multiple of "
                              f"the {self.dist.world} processes: every rank must take the same share of a step; "
                              "use a multiple, or another number of processes")

    def config_tree(self) -> dict:
        """The configuration as written down (``config.yaml``, checkpoints): secrets redacted."""
        return redact_tree(to_dict(self.cfg))

    def _read_checkpoint(self) -> Optional[dict]:
        path = ckpt.latest_checkpoint(self.out)
        if path is None:
            return None
        state = ckpt.load_checkpoint(path)
        diff = ckpt.config_differences(state["config"], self.config_tree(), RESUMABLE_CHANGES)
        if diff:
            raise ConfigError(f"{self.out} holds a run with a different configuration "
                              f"({', '.join(diff)}); use another output.dir")
        return state

    def _build_data(self) -> None:
        cfg, d, r = self.cfg, self.dist, self.resume
        data = open_data(cfg, d, None if r is None or r["token_map"] is None else r["token_map"].numpy())
        self.index, self.vocab_size = data.index, data.vocab_size
        self.dataset = RowView(data.index, data.summary, data.token_map)  # any row, for scoring and tests
        self.collator = DocumentCollator(cfg.data.reset_position_ids)
        self.pruner = self.subset = None
        self.segment_document = None  # unit=document: the pruner's example index of every segment
        p = cfg.pruning
        if p.enabled:
            per_row, doc_ids = data.docs
            if p.unit == "row":
                n = per_row.size
            else:  # every chunk of a document, in whatever row, is one example: kept or pruned together
                _, self.segment_document = np.unique(doc_ids, return_inverse=True)
                n = int(self.segment_document.max()) + 1 if self.segment_document.size else 0
            self.pruner = DynamicPruner(n, p.keep_fraction, p.offset_fraction, p.full_epochs,
                                        p.rescore_every, seed=cfg.data.seed, strategy=p.strategy,
                                        ema_previous_weight=p.ema_previous_weight)
            self.subset = PrunerSubset(self.pruner, p.unit, per_row, segment_example=self.segment_document)
        self.feed = StepFeed(data.index, cfg.data, d.rank, d.world, data.token_map, self.subset,
                             self._on_epoch_start)
        self.sampler = self.feed  # its former name: .epoch, .state_dict()
        self.rescored_epochs: list[int] = []
        self.step_rows = (np.zeros(0, np.int64), [])

    def _build_model(self) -> None:
        torch.manual_seed(self.cfg.train.seed)
        self.model = GPT(replace(self.cfg.model, vocab_size=self.vocab_size)).to(self.device)
        t = self.cfg.train
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=t.lr, betas=tuple(t.betas),
                                           weight_decay=t.weight_decay)
        self.objective = Objective(self.cfg.loss)
        self.step = 0
        if self.resume is not None:
            self.dist.agree(self._load_state)
        net = self.model
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            with self.dist.collective():  # broadcasts rank 0's parameters
                net = DistributedDataParallel(self.model, forward_sync_buffers=False, device_ids=(
                    [self.device.index] if self.device.type == "cuda" else None))
        self.forward_model = torch.compile(net) if t.compile else net

    def _load_state(self) -> None:
        r = self.resume
        self.model.load_state_dict(r["model"])
        self.optimizer.load_state_dict(r["optimizer"])
        self.feed.load_state_dict(r["sampler"])  # refuses a state of another data set or seed
        self.objective.load_state_dict(r["objective"])
        if self.pruner is not None:
            self.pruner.load_state_dict(r["pruner"])
        torch.set_rng_state(r["rng"])
        if self.device.type == "cuda" and r.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(r["cuda_rng"])
        self.step = int(r["step"])

    def _on_epoch_start(self, epoch: int) -> None:
        """Dynamic pruning: re-score every example with the current model when scheduled."""
        if self.pruner is None or not self.pruner.needs_scores(epoch):
            return
        scores = rescore(self.model, self.dataset, self.collator, self.cfg.data.batch_size, self.device,
                         self.dist, self.cfg.pruning.unit, self.segment_document, self.pruner.n_examples)
        self.pruner.update(scores)
        self.rescored_epochs.append(epoch)

    def state_dict(self) -> dict:
        """Global state only (every rank holds the same): a run resumes with any world size."""
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "sampler": self.feed.state_dict(),
            "objective": self.objective.state_dict(),
            "pruner": None if self.pruner is None else self.pruner.state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "token_map": None if self.dataset.token_map is None else torch.from_numpy(self.dataset.token_map),
            "vocab_size": self.vocab_size,
            "world_size": self.dist.world,
            "config": self.config_tree(),
        }

    def next_batch(self) -> dict:
        """This rank's share of the next global batch, collated (``nothing_to_learn`` when empty)."""
        rows, global_rows = self.feed.next_step()
        self.step_rows = (global_rows, [int(r["index"]) for r in rows])
        if not rows:
            return nothing_to_learn(self.collator)
        batch = self.collator(rows)
        if self.subset is not None:
            keep = self.subset.keep_masks(self.feed.epoch, batch["index"].numpy())
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
            logits = self.forward_model(batch["input_ids"].to(self.device), batch["position_ids"].to(self.device),
                                        batch["segment_ids"].to(self.device))
        labels = batch["labels"].to(self.device)
        e = self.cfg.loss.ent
        tie_ids = token_tie_ids(batch).to(self.device) \
            if self.cfg.loss.kind == "ent" and e.fraction is not None else None
        # step = updates already done, so loss.ent.warmup_steps=k gives exactly k MLE updates
        share, stats = self.objective(logits, labels, self.step, segment_ids=batch["segment_ids"].to(self.device),
                                      tie_ids=tie_ids, comm=self.dist)
        self.optimizer.zero_grad(set_to_none=True)
        with self.dist.collective():  # DDP averages the gradients over the ranks: scale the share back
            (share * self.dist.world).backward()
        if t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        self.optimizer.step()
        self.step += 1
        if self.step_callback is not None:
            self.step_callback(self.step, batch, logits.detach(), stats)
        stats.pop("dropped_mask", None)
        loss = stats.pop("global_loss")
        return {"step": self.step, "loss": loss, "lr": lr, "epoch": self.feed.epoch,
                "rows": int(self.step_rows[0].size), **stats}

    def fit(self) -> dict:
        cfg, d = self.cfg, self.dist
        main = d.rank == 0
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(yaml.safe_dump(self.config_tree(), sort_keys=False), encoding="utf-8")
        log = MetricsLog(self.out / "metrics.jsonl", resume_step=self.step) if main else None
        samples = MetricsLog(self.out / "samples.jsonl", resume_step=self.step) \
            if main and cfg.train.log_samples else None
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        start_step, t0, tokens, last = self.step, time.perf_counter(), 0, None
        try:
            while self.step < cfg.train.max_steps:
                d.at = f"step {self.step + 1}"
                batch = self.next_batch()
                t_step = time.perf_counter()
                record = self.train_step(batch)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                here = int(batch["input_ids"].numel()) if batch["index"].numel() else 0
                step_tokens = int(d.sum(torch.tensor([here], device=self.device)).item())
                tokens += step_tokens
                record["input_tokens"] = step_tokens
                record["seconds"] = round(time.perf_counter() - t_step, 5)
                record["tokens_per_s"] = round(tokens / max(time.perf_counter() - t0, 1e-9), 1)
                if self.device.type == "cuda":
                    record["max_memory_mb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
                if cfg.train.log_samples:  # what each rank trained on, as each rank says it
                    ranks = d.objects(self.step_rows[1])
                    if main:
                        samples.write({"step": self.step, "rows": self.step_rows[0].tolist(), "ranks": ranks})
                if main and (self.step % cfg.train.log_every == 0 or self.step == cfg.train.max_steps):
                    log.write(record)
                if main and (self.step % cfg.train.checkpoint_every == 0 or self.step == cfg.train.max_steps):
                    ckpt.save_checkpoint(self.state_dict(), self.out, self.step, cfg.train.keep_checkpoints)
                last = record
        except CollectiveError as exc:
            lost = d.lost(exc)
            if lost is exc:  # every rank answered: not a peer's death, so the original error
                raise
            raise lost from None
        except BaseException as exc:
            d.post_failure(exc)
            raise
        finally:
            self.feed.close()
        if main and cfg.output.plot and (self.out / "metrics.jsonl").stat().st_size:
            plot_metrics(self.out / "metrics.jsonl", self.out / "curves.png")
        elapsed = time.perf_counter() - t0
        return {"start_step": start_step, "step": self.step, "seconds": elapsed,
                "tokens_per_s": tokens / max(elapsed, 1e-9), "last": last,
                "rescored_epochs": list(self.rescored_epochs)}
