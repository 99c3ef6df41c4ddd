"""``fewtrunc score``: per-document EL2N and error-norm statistics of a shard directory."""
from __future__ import annotations

HELP = "score every document of a shard directory with a trained model (EL2N, error norm)"
DESCRIPTION = """\
Runs the model of a training run (the newest checkpoint in output.dir, or score.checkpoint) over
a shard directory (score.data_dir, default data.dir) with document-masked attention and writes
one row per document, keyed by the shards' doc_ids, to an Arrow IPC file (score.out, default
OUTPUT/scores.arrow): doc_id, n_segments, n_scored, el2n (mean error norm), error_norm_max.
Use it to prune documents when building the next epoch's shards, or to inspect suspected noise
(high error_norm_max). Read it with training.scores.read_scores or pyarrow.ipc.open_file.

example:
  fewtrunc score configs/train_demo.yaml
  fewtrunc score configs/train_demo.yaml score.data_dir=out/heldout score.out=heldout_scores.arrow
"""


def add_arguments(parser) -> None:
    parser.add_argument("config", help="the training config of the run to score with")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")


def main(args) -> int:
    from dataclasses import replace
    from pathlib import Path

    import torch

    from pipelines.infra.configio import from_dict, load_config
    from pipelines.infra.errors import ConfigError
    from training import checkpoint as ckpt
    from training.config import ModelConfig, TrainRunConfig
    from training.data import DocumentCollator, ShardDataset
    from training.evaluate import score_dataset
    from training.model import GPT
    from training.preflight import check_seq_len, check_vocab
    from training.scores import per_document, write_scores

    cfg = load_config(TrainRunConfig, args.config, args.overrides)
    path = Path(cfg.score.checkpoint) if cfg.score.checkpoint else ckpt.latest_checkpoint(cfg.output.dir)
    if path is None or not path.is_file():
        raise ConfigError(f"no checkpoint to score with (looked for {cfg.score.checkpoint or cfg.output.dir})")
    state = ckpt.load_checkpoint(path)
    token_map = None if state["token_map"] is None else state["token_map"].numpy()
    dataset = ShardDataset(cfg.score.data_dir or cfg.data.dir)  # checks every shard before any work
    saved = state["config"]
    model_cfg = from_dict(ModelConfig, saved["model"], "model.")
    check_seq_len(dataset, model_cfg.seq_len, advice=f"the model of {path.name} takes rows of at most "
                  f"{model_cfg.seq_len} tokens; score shards packed to that length or less")
    check_vocab(dataset, int(state["vocab_size"]), token_map, f"vocab_size={int(state['vocab_size'])} in {path.name}")
    dataset.token_map = token_map
    model = GPT(replace(model_cfg, vocab_size=int(state["vocab_size"])))
    model.load_state_dict(state["model"])
    device = torch.device("cuda" if torch.cuda.is_available() and cfg.train.device != "cpu" else "cpu")
    model.to(device)
    collator = DocumentCollator(bool(saved["data"]["reset_position_ids"]))
    s = score_dataset(model, dataset, collator, batch_size=cfg.score.batch_size, device=device)
    table = per_document(s["doc_id"], s["n_scored"], s["el2n"], s["error_norm_max"])
    out = write_scores(table, cfg.score.out or Path(cfg.output.dir) / "scores.arrow")
    print(f"scored {table.num_rows:,} documents in {len(dataset):,} rows with {path.name}: {out}")
    return 0
