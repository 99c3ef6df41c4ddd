"""Training configuration: pure frozen dataclasses, built by ``pipelines.infra.configio.load_config``.

Runtime objects (model, sampler, optimizer) are built *from* this data in ``trainer.py``; nothing
here imports torch. Every key can be set in YAML or as a dotted ``key=value`` override.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from pipelines.infra.errors import ConfigError


@dataclass(frozen=True)
class DataConfig:
    dir: str = ""  # a directory of fewtrunc shards (shard-*.arrow)
    batch_size: int = 8  # rows (packed sequences) per step
    reset_position_ids: bool = True  # positions restart at 0 in each document (False: 0..len-1)
    vocab_limit: int = 0  # 0 = the tokenizer's vocabulary; N = keep the N-1 most frequent ids + UNK
    tokenizer: str = ""  # tokenizer.json; "" = GPT-2 BPE (only its vocabulary size is used)
    seed: int = 0  # shuffling seed of the reader's global order
    # the streaming reader (training.streaming): the global order is a function of (seed, epoch,
    # canonical_streams, window_blocks), never of the number of processes
    canonical_streams: int = 8  # choose once per run: a multiple of every world size you will use
    window_blocks: int = 4  # record batches of a stream shuffled together
    cache_mb: int = 1024  # decoded record batches held ahead, per process
    prefetch_blocks: int = 8  # record batches read ahead on the background thread, per process

    def __post_init__(self):
        if self.batch_size < 1:
            raise ConfigError("data.batch_size must be >= 1 (the global batch, over all processes)")
        if min(self.canonical_streams, self.window_blocks, self.cache_mb, self.prefetch_blocks) < 1:
            raise ConfigError("data.canonical_streams, window_blocks, cache_mb and prefetch_blocks must be >= 1")
        if self.vocab_limit == 1 or self.vocab_limit < 0:
            raise ConfigError("data.vocab_limit must be 0 (off) or >= 2")


@dataclass(frozen=True)
class ModelConfig:
    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 4
    seq_len: int = 128  # longest row accepted (learned positions and RoPE tables are this long)
    vocab_size: int = 0  # 0 = from the tokenizer (or data.vocab_limit)
    positions: Literal["rope", "learned"] = "rope"
    mlp_ratio: int = 4
    dropout: float = 0.0
    attention: Literal["auto", "sdpa", "flex"] = "auto"  # auto: flex on CUDA when available, else SDPA

    def __post_init__(self):
        if min(self.n_layers, self.d_model, self.n_heads, self.seq_len, self.mlp_ratio) < 1:
            raise ConfigError("model.n_layers, d_model, n_heads, seq_len and mlp_ratio must be >= 1")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ConfigError("model.d_model / model.n_heads must be an even integer")
        if self.vocab_size < 0 or self.vocab_size == 1:
            raise ConfigError("model.vocab_size must be 0 (from the tokenizer or data.vocab_limit) or >= 2")


@dataclass(frozen=True)
class TrainConfig:
    max_steps: int = 200
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 10
    decay_steps: int = 0  # cosine decay from lr to min_lr over this many steps after warmup; 0 = constant
    weight_decay: float = 0.0
    betas: tuple[float, ...] = (0.9, 0.95)
    grad_clip: float = 1.0  # 0 = off
    seed: int = 0
    log_every: int = 1
    checkpoint_every: int = 50  # also checkpoints at max_steps
    keep_checkpoints: int = 2
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    compile: bool = False  # torch.compile the model (CUDA)
    threads: int = 0  # torch intra-op threads on CPU; 0 = torch's default
    dist_timeout_s: float = 600.0  # under torchrun: the longest any collective (and the start) may wait
    log_samples: bool = False  # samples.jsonl: each step's global rows and the rows each rank trained on

    def __post_init__(self):
        if not self.dist_timeout_s > 0:
            raise ConfigError("train.dist_timeout_s must be > 0 (seconds)")
        if self.max_steps < 0 or self.log_every < 1 or self.checkpoint_every < 1:
            raise ConfigError("train.max_steps >= 0, train.log_every >= 1, train.checkpoint_every >= 1")
        if self.keep_checkpoints < 1:
            raise ConfigError("train.keep_checkpoints must be >= 1")
        if len(self.betas) != 2:
            raise ConfigError("train.betas needs two numbers")


@dataclass(frozen=True)
class EntConfig:
    """Error Norm Truncation (pruning_data.ent_loss); give threshold or fraction.

    warmup_steps=k: the first k optimizer updates are plain MLE. unit (level="sequence" only):
    "document" ranks each document segment of a packed row (the paper's per-example rule),
    "row" ranks whole packed rows.
    """

    threshold: Optional[float] = None
    fraction: Optional[float] = None
    level: Literal["token", "sequence"] = "token"
    warmup_steps: int = 0
    unit: Literal["document", "row"] = "document"

    def __post_init__(self):
        if self.warmup_steps < 0:
            raise ConfigError("loss.ent.warmup_steps must be >= 0")


@dataclass(frozen=True)
class TruncationConfig:
    """Loss truncation (pruning_data.LossTruncation) over per-example mean losses.

    unit="document": an example is one document segment of a packed row (as in the paper, where
    each example is one sequence); unit="row": an example is a whole packed row.
    """

    drop_fraction: float = 0.1
    min_count: int = 64
    recompute_every: int = 1
    unit: Literal["document", "row"] = "document"


@dataclass(frozen=True)
class LossConfig:
    kind: Literal["mle", "ent", "loss_truncation"] = "mle"
    ent: EntConfig = field(default_factory=EntConfig)
    truncation: TruncationConfig = field(default_factory=TruncationConfig)
    # "all": kept losses summed over all valid tokens (ENT) / all examples (loss truncation), as
    # the papers' code; "kept": over the kept ones only (see pruning_data.ent_loss)
    normalize: Literal["all", "kept"] = "all"

    def __post_init__(self):
        if self.kind == "ent" and (self.ent.threshold is None) == (self.ent.fraction is None):
            raise ConfigError("loss.kind=ent needs exactly one of loss.ent.threshold, loss.ent.fraction")


@dataclass(frozen=True)
class PruningConfig:
    """Dynamic data pruning (pruning_data.DynamicPruner) applied by the sampler.

    unit="row": an example is one packed row; rows are kept or skipped (saves compute).
    unit="document": an example is one document (all its chunks, in whatever rows they were
    packed, are kept or pruned together; its score is the EL2N over all its chunks); pruned
    documents get no loss (labels ignored) and rows whose segments are all pruned are skipped.
    Rows are not re-packed.
    ema_previous_weight: w ranks by ``w * previous + (1 - w) * new`` scores. The data-diets
    code's ``prune_ema_alpha`` weights the *new* scores: ``prune_ema_alpha=a`` is
    ``ema_previous_weight=1-a``.
    """

    enabled: bool = False
    strategy: Literal["el2n", "random"] = "el2n"
    unit: Literal["row", "document"] = "row"
    keep_fraction: float = 0.5
    offset_fraction: float = 0.0
    full_epochs: int = 1
    rescore_every: int = 1
    ema_previous_weight: Optional[float] = None


@dataclass(frozen=True)
class OutputConfig:
    dir: str = "runs/train"
    plot: bool = True


@dataclass(frozen=True)
class ScoreConfig:
    """``fewtrunc score``: which model and shards, and where the scores go."""

    checkpoint: str = ""  # "" = the latest checkpoint in output.dir
    data_dir: str = ""  # "" = data.dir
    out: str = ""  # "" = output.dir/scores.arrow
    batch_size: int = 16


@dataclass(frozen=True)
class TrainRunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)


# Keys that may change between a run and its resumption without changing what was computed.
RESUMABLE_CHANGES = ("train.max_steps", "train.checkpoint_every", "train.keep_checkpoints",
                     "train.log_every", "train.dist_timeout_s", "train.log_samples", "data.cache_mb",
                     "data.prefetch_blocks", "output.plot", "score")
