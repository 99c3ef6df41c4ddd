"""``fewtrunc train``: train a small document-masked GPT on a directory of fewtrunc shards."""
from __future__ import annotations

HELP = "train a small GPT on fewtrunc shards (document-masked attention, ENT / loss truncation / EL2N pruning)"
DESCRIPTION = """\
Trains a GPT-style decoder on the Arrow shards of a pipeline run. Attention is block-diagonal
over the documents of each packed row, labels never cross a document boundary, and position ids
restart per document (data.reset_position_ids). Writes OUTPUT/metrics.jsonl (one JSON object per
logged step), OUTPUT/curves.png and OUTPUT/checkpoints/step-*.pt (torch.save, loads with
weights_only=True). Running the same command again with a larger train.max_steps resumes from
the newest checkpoint and logs exactly what an uninterrupted run would have. Before the first
step every shard is checked (a damaged one ends in one line naming it), and model.seq_len and the
vocabulary (model.vocab_size, data.vocab_limit, data.tokenizer) are checked against the shards.

Data parallel: launched by torchrun (`torchrun --nproc_per_node N -m pipelines.cli train ...`)
it joins the process group (gloo on CPU, NCCL on CUDA, train.dist_timeout_s); data.batch_size is
the global batch, each rank reads its share of it, gradients are averaged, and only rank 0 writes
files. N processes log the losses of 1; a checkpoint resumes with any number of processes.

Keys (override any with key=value): data.dir, data.batch_size, data.vocab_limit,
model.n_layers/d_model/n_heads/seq_len/positions/attention, train.max_steps, train.lr,
train.checkpoint_every, train.device, train.precision, train.compile, loss.kind
(mle|ent|loss_truncation), loss.ent.threshold|fraction|level|warmup_steps,
loss.truncation.drop_fraction|min_count, pruning.enabled|strategy|unit|keep_fraction|
offset_fraction|full_epochs|rescore_every, data.canonical_streams|window_blocks|cache_mb|
prefetch_blocks, train.dist_timeout_s, train.log_samples, output.dir. See docs/training.md.

examples:
  fewtrunc run configs/demo.yaml                      # build shards first
  fewtrunc train configs/train_demo.yaml
  fewtrunc train configs/train_demo.yaml train.max_steps=400 loss.kind=ent loss.ent.fraction=0.05
"""


def add_arguments(parser) -> None:
    parser.add_argument("config", help="YAML training config (see configs/train_demo.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")


def main(args) -> int:
    from pipelines.infra.configio import load_config
    from pipelines.infra.errors import FewtruncError
    from training.config import TrainRunConfig
    from training.distributed import DEFAULT_TIMEOUT_S, CollectiveError, Dist
    from training.runtime import wants_cuda

    cfg = error = None
    try:
        cfg = load_config(TrainRunConfig, args.config, args.overrides)
        cuda = wants_cuda(cfg.train.device)
    except FewtruncError as exc:  # under torchrun every rank finds it: the group forms, rank 0 says it
        error, cuda = exc, False
    dist = Dist.from_env(cfg.train.dist_timeout_s if cfg else DEFAULT_TIMEOUT_S, cuda)
    try:
        dist.agree(lambda: _raise(error))
        return _train(cfg, dist)
    except FewtruncError as exc:
        if dist.world == 1 or not getattr(exc, "agreed", False):
            raise
        return _stop(exc, dist)
    except CollectiveError as exc:  # a rank lost before training: name it
        lost = dist.lost(exc)
        if lost is exc:
            raise
        raise lost from None
    finally:
        dist.close()


def _raise(error) -> None:
    if error is not None:
        raise error


def _stop(exc, dist) -> int:
    """An error every rank agreed on: the rank it came from says it, then all exit together."""
    import sys

    from pipelines.infra.storage.redact import redact_text
    from training.distributed import Stopped

    if not isinstance(exc, Stopped):
        print(redact_text(f"fewtrunc train: error: {exc}"), file=sys.stderr, flush=True)
    dist.settle()
    return 2


def _train(cfg, dist) -> int:
    from training.trainer import Trainer

    trainer = Trainer(cfg, dist=dist)
    say = print if dist.rank == 0 else (lambda *a, **k: None)
    if trainer.step:
        say(f"resuming {cfg.output.dir} from step {trainer.step}")
    procs = f", {dist.world} processes ({dist.backend})" if dist.world > 1 else ""
    say(f"{len(trainer.dataset):,} rows, vocab {trainer.vocab_size:,}, "
        f"{trainer.model.num_parameters():,} parameters, device {trainer.device}{procs}")
    result = trainer.fit()
    dist.settle()  # every rank done (rank 0's last checkpoint written) before any exits
    last = result["last"]
    if last is None:
        say(f"nothing to do: already at step {result['step']} (train.max_steps={cfg.train.max_steps})")
        return 0
    extra = f", peak memory {last['max_memory_mb']:.0f} MiB" if "max_memory_mb" in last else ""
    say(f"step {result['step']}: loss {last['loss']:.4f}; {result['seconds']:.1f} s, "
        f"{result['tokens_per_s']:,.0f} tokens/s{extra}; metrics in {cfg.output.dir}/metrics.jsonl")
    return 0
