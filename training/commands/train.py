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

Keys (override any with key=value): data.dir, data.batch_size, data.vocab_limit,
model.n_layers/d_model/n_heads/seq_len/positions/attention, train.max_steps, train.lr,
train.checkpoint_every, train.device, train.precision, train.compile, loss.kind
(mle|ent|loss_truncation), loss.ent.threshold|fraction|level|warmup_steps,
loss.truncation.drop_fraction|min_count, pruning.enabled|strategy|unit|keep_fraction|
offset_fraction|full_epochs|rescore_every, output.dir. See docs/training.md.

examples:
  fewtrunc run configs/demo.yaml                      # build shards first
  fewtrunc train configs/train_demo.yaml
  fewtrunc train configs/train_demo.yaml train.max_steps=400 loss.kind=ent loss.ent.fraction=0.05
"""


def add_arguments(parser) -> None:
    parser.add_argument("config", help="YAML training config (see configs/train_demo.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")


def main(args) -> int:
    from pipelines.configio import load_config
    from training.config import TrainRunConfig
    from training.trainer import Trainer

    cfg = load_config(TrainRunConfig, args.config, args.overrides)
    trainer = Trainer(cfg)
    if trainer.step:
        print(f"resuming {cfg.output.dir} from step {trainer.step}")
    print(f"{len(trainer.dataset):,} rows, vocab {trainer.vocab_size:,}, "
          f"{trainer.model.num_parameters():,} parameters, device {trainer.device}")
    result = trainer.fit()
    last = result["last"]
    if last is None:
        print(f"nothing to do: already at step {result['step']} (train.max_steps={cfg.train.max_steps})")
        return 0
    extra = f", peak memory {last['max_memory_mb']:.0f} MiB" if "max_memory_mb" in last else ""
    print(f"step {result['step']}: loss {last['loss']:.4f}; {result['seconds']:.1f} s, "
          f"{result['tokens_per_s']:,.0f} tokens/s{extra}; metrics in {cfg.output.dir}/metrics.jsonl")
    return 0
