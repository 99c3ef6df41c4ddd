"""Train a Hugging Face model on fewtrunc shards with the ``transformers`` Trainer.

    fewtrunc run configs/demo.yaml pack.seq_len=256 output.dir=out/hf_shards
    python examples/hf_trainer.py out/hf_shards --loss ent --steps 20 --output out/hf_ent
    python examples/hf_trainer.py out/hf_shards --loss loss_truncation --prune --steps 40

A tiny ``LlamaForCausalLM`` built from a config (random init, nothing downloaded) learns on CPU
in seconds. Batches are padding-free (``training.hf.PackedCollator``): documents never attend to
each other and no target crosses a document boundary. ``--loss`` picks MLE, Error Norm
Truncation or loss truncation (``training.hf.FewtruncLoss``); ``--prune`` adds dynamic EL2N
pruning (``training.hf.PruningSampler``). Rerunning with ``--resume`` continues from the newest
checkpoint in ``--output`` and logs the losses an uninterrupted run logs.

Many processes, the same script (CPU: gloo; ``--cuda``: one GPU per process, NCCL):

    torchrun --nproc_per_node 2 examples/hf_trainer.py out/hf_shards --loss ent --prune --batch-size 2
    accelerate launch --multi_gpu --num_processes 2 examples/hf_trainer.py out/hf_shards --cuda \
        --loss ent --prune --batch-size 2

(On CPU use ``torchrun``: ``accelerate launch --cpu`` starts one process unless given an MPI hostfile.)

``--batch-size`` is per process: 2 processes x 2 rows take the batches of 1 process x 4 rows, and
log the same losses. Only the main process writes ``steps.jsonl`` (and ``samples.jsonl`` with
``--log-samples``: the rows of every step, gathered from the ranks). ``--streaming`` reads the
shards with the streaming reader (``shard_rows(..., streaming=True)``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
import transformers

from pruning_data import DynamicPruner
from training.data import ShardDataset, vocab_map
from training.hf import FewtruncLoss, PackedCollator, PruningCallback, PruningSampler, PruningTrainer, shard_rows
from training.hf.distributed import finish
from training.hf.sample_log import RowRecorder, SampleLog

GPT2_VOCAB = 50257


def tiny_llama(vocab_size: int, max_positions: int, attn: str = "sdpa", seed: int = 0):
    cfg = transformers.LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=max_positions, tie_word_embeddings=False,
                                   attn_implementation=attn)  # use_cache stays True: the batches say False
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(cfg)


class StepLog(transformers.TrainerCallback):
    """Exact per-step loss and drop counts (the Trainer's own log rounds the loss), of the global
    batch (``FewtruncLoss`` sums them over the ranks); written by the main process only."""

    def __init__(self, loss: FewtruncLoss, path: Path):
        self.loss, self.path = loss, path

    def on_step_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            record = {**self.loss.current, "step": state.global_step}
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def train(shards, output, *, loss: str = "mle", steps: int = 20, batch_size: int = 4, lr: float = 3e-3,
          vocab_limit: int = 512, prune: bool = False, resume: bool = False, save_steps: int = 10,
          stop_after: int | None = None, attn: str = "sdpa", layout: str = "flatten", seed: int = 0,
          ent_fraction: float = 0.1, use_datasets: bool = False, grad_accum: int = 1, streaming: bool = False,
          log_samples: bool = False, cuda: bool = False) -> dict:
    """Train and return ``{"log": [per-step records], "dropped_share": ..., "rescored": [...],
    "rows_scored": rows this process scored, "samples": [samples.jsonl records] (log_samples)}``.

    ``batch_size`` is per process; under ``torchrun`` the pruned epoch keeps a multiple of
    ``batch_size`` x world size rows."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    world = int(os.environ.get("WORLD_SIZE", 1))
    main_process = int(os.environ.get("RANK", 0)) == 0
    token_map = vocab_map(ShardDataset(shards), GPT2_VOCAB, vocab_limit)  # the vocab_limit-1 most frequent ids
    if streaming:
        if prune:
            raise SystemExit("--streaming and --prune do not go together yet: prune a ShardDataset")
        dataset = shard_rows(shards, streaming=True, per_device_batch_size=batch_size, seed=seed)
    else:
        dataset = shard_rows(shards, use_datasets=use_datasets)  # ShardDataset, or datasets' Arrow loader
    model = tiny_llama(vocab_limit, 2048, attn, seed)
    collator = PackedCollator(layout=layout, token_map=token_map)
    objective = FewtruncLoss(loss, fraction=ent_fraction, level="token", warmup_steps=0, drop_fraction=0.2,
                             min_count=8, unit="document")
    log_path, samples_path = output / "steps.jsonl", output / "samples.jsonl"
    if not resume and main_process:
        log_path.unlink(missing_ok=True)
        samples_path.unlink(missing_ok=True)
    callbacks = [objective, StepLog(objective, log_path)]
    data_collator = collator
    if log_samples:
        data_collator = RowRecorder(collator)
        callbacks.append(SampleLog(data_collator, samples_path))
    sampler, pruning = None, None
    if prune:
        pruner = DynamicPruner(len(dataset), keep_fraction=0.5, offset_fraction=0.1, full_epochs=1, rescore_every=1)
        micro = batch_size * world
        sampler = PruningSampler(pruner, seed=seed, samples_per_epoch=len(dataset) // micro * micro)
        pruning = PruningCallback(sampler, dataset, collator, batch_size=16)
        callbacks.append(pruning)
    if stop_after is not None:
        callbacks.append(_StopAt(stop_after))
    args = transformers.TrainingArguments(
        output_dir=str(output), max_steps=steps, per_device_train_batch_size=batch_size, learning_rate=lr,
        gradient_accumulation_steps=grad_accum,
        lr_scheduler_type="constant", logging_steps=1, save_strategy="steps", save_steps=save_steps,
        seed=seed, data_seed=seed, use_cpu=not cuda, report_to=[], disable_tqdm=True, dataloader_num_workers=0,
        remove_unused_columns=False)
    trainer = PruningTrainer(model=model, args=args, train_dataset=dataset, data_collator=data_collator,
                             compute_loss_func=objective, callbacks=callbacks, train_sampler=sampler)
    trainer.train(resume_from_checkpoint=True if resume else None)
    trainer.accelerator.wait_for_everyone()  # the main process has written its logs
    log = [json.loads(line) for line in open(log_path)]
    samples = [json.loads(line) for line in open(samples_path)] if log_samples else []
    return {"log": log, "dropped_share": objective.dropped_share, "samples": samples,
            "rescored": list(sampler.rescored) if sampler else [],
            "rows_scored": pruning.rows_scored if pruning else 0}


class _StopAt(transformers.TrainerCallback):
    """Stop after a step (and its checkpoint): simulates a run that was interrupted."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True
        return control


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("shards", help="a directory of shard-*.arrow files (fewtrunc run ... output.dir)")
    p.add_argument("--output", default="out/hf_trainer")
    p.add_argument("--loss", choices=["mle", "ent", "loss_truncation"], default="mle")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--prune", action="store_true", help="dynamic EL2N pruning: keep 50%%, skip the hardest 10%%")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output")
    p.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa")
    p.add_argument("--layout", choices=["flatten", "stack"], default="flatten")
    p.add_argument("--datasets", action="store_true", help='read the shards with datasets.load_dataset("arrow")')
    p.add_argument("--streaming", action="store_true", help="read the shards with the streaming reader")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--save-steps", type=int, default=10)
    p.add_argument("--log-samples", action="store_true", help="write samples.jsonl: the rows of every step")
    p.add_argument("--cuda", action="store_true", help="train on the GPU(s) (NCCL under torchrun); default: CPU")
    a = p.parse_args(argv)
    out = train(a.shards, a.output, loss=a.loss, steps=a.steps, batch_size=a.batch_size, prune=a.prune,
                resume=a.resume, attn=a.attn, layout=a.layout, use_datasets=a.datasets, streaming=a.streaming,
                grad_accum=a.grad_accum, save_steps=a.save_steps, log_samples=a.log_samples, cuda=a.cuda)
    finish()  # under torchrun: every rank leaves the process group together
    if int(os.environ.get("RANK", 0)) != 0:
        return 0
    log = out["log"]
    print(f"steps {log[0]['step']}..{log[-1]['step']}: loss {log[0]['loss']:.4f} -> {log[-1]['loss']:.4f}; "
          f"targets dropped {out['dropped_share']:.2%}" + (f"; rescored epochs {out['rescored']}" if a.prune else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
