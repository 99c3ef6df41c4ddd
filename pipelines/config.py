"""The one config model of a pipeline run: frozen dataclasses, pure data, no runtime objects.

YAML files and dotted ``key=value`` overrides are both validated against it by
``pipelines.infra.configio.load_config``. An engine section (``ray:``, ``beam:``) is added as one more
field of ``RunConfig`` next to ``engine``; the steps never read engine sections.

``input.format``, ``pack.algorithm`` and ``engine`` name plug-ins: their choices are the format
registry (``pipelines.steps.formats``), the packing registry (``packing.registry``) and the
engine registry (``pipelines.engines.registry``, where each engine's section below registers
itself) as they are when a config is built, so a format, algorithm or engine registered at run
time is a valid choice.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, NewType

from pipelines.engines import registry as engine_registry
from pipelines.infra.errors import ConfigError, show
from pipelines.infra.storage.redact import environment_hint, inline_credentials, redact_text

CONCAT = "concat"  # pack.algorithm: the baseline (``steps/pack.concat_plan``), not a packer
# A plug-in's name. ``from_dict`` passes a value of a type it does not know as given, and
# ``__post_init__`` checks it against its registry, with the message a ``Literal`` gets (whose
# choices would be fixed when this module loads).
PluginName = NewType("PluginName", str)


def input_formats() -> tuple[str, ...]:
    """What ``input.format`` may be: ``auto``, then every registered format."""
    from pipelines.steps.formats import choices

    return choices()


def engines() -> tuple[str, ...]:
    """What ``engine`` may be: every registered engine."""
    return engine_registry.names()


def pack_algorithms() -> tuple[str, ...]:
    """What ``pack.algorithm`` may be: every registered packer, then the ``concat`` baseline."""
    from packing.registry import ALGORITHMS

    return (*ALGORITHMS, CONCAT)


def _one_of(key: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: {show(value)} is not one of {', '.join(map(repr, choices))}")


def _positive(key: str, value: int, minimum: int = 1) -> None:
    if value < minimum:
        raise ConfigError(f"{key} must be at least {minimum}, got {value}")


def _finite_positive(key: str, value: float) -> None:
    """A duration or CPU count: finite and > 0 (nan passed every ``<= 0`` check; inf overflows the
    timers and clients it is given to)."""
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{key} must be > 0 and finite, got {value}")


def _no_credentials(key: str, url: str) -> None:
    """``s3://KEY:SECRET@bucket/...``: refused before any work (the secret would be written to
    config.yaml and manifest.json, and pyarrow's error about the bucket name prints it)."""
    scheme = inline_credentials(url)
    if scheme:
        raise ConfigError(f"{key} {show(redact_text(url))} holds credentials in the URL: fewtrunc "
                          f"does not take them there; remove them and set "
                          f"{environment_hint(scheme)} in the environment instead")


@dataclass(frozen=True)
class InputConfig:
    paths: tuple[str, ...] = ()  # files, directories or globs; {stdlib} and {assets} expand
    format: PluginName = "auto"  # auto, or a name of the format registry (input_formats())
    text_field: str = "text"
    id_field: str = ""  # optional: ids from this field (ints kept, strings hashed)
    include: tuple[str, ...] = ()  # file trees: globs on the path relative to the tree root
    exclude: tuple[str, ...] = ()
    on_error: Literal["skip", "fail"] = "skip"
    max_document_bytes: int = 8_000_000  # larger documents are rejected ("huge document")
    # 0 = all; else a limit per source, not in all: the first N records of each record file, the
    # first N files of each tree
    max_documents: int = 0
    unit_bytes: int = 64_000_000  # consecutive small files group into units of about this size
    hf_name: str = ""  # load_dataset config name
    hf_split: str = "train"
    hf_data_files: tuple[str, ...] = ()

    def __post_init__(self):
        _one_of("input.format", self.format, input_formats())
        _positive("input.max_document_bytes", self.max_document_bytes)
        _positive("input.max_documents", self.max_documents, 0)
        _positive("input.unit_bytes", self.unit_bytes)
        for i, path in enumerate(self.paths):
            _no_credentials(f"input.paths[{i}]", path)


@dataclass(frozen=True)
class TokenizerConfig:
    path: str = ""  # a tokenizer.json; empty = GPT-2 BPE, offline
    add_bos: bool = False
    add_eos: bool = True
    bos_token: str = "<|endoftext|>"
    eos_token: str = "<|endoftext|>"
    batch_bytes: int = 1_000_000  # text per encode_batch call (bounds memory: see docs)
    # auto: fastokens when it loads the tokenizer and passes the self-test, else tokenizers (the
    # reference). The backend never changes the output bytes (the guard below checks it).
    backend: Literal["auto", "tokenizers", "fastokens"] = "auto"
    guard_fraction: float = 0.01  # documents also encoded with tokenizers and compared (>= 1%)
    guard_first: int = 4  # ... plus the first documents of every input unit
    guard_chars: int = 2048  # a longer sampled document is compared on its first guard_chars
    # a special-token string inside a document ("<|endoftext|>" in a web page): encoded as
    # ordinary text (split), so fewtrunc's BOS/EOS are the only control ids, or as the control
    # id (keep, the tokenizer's default)
    special_tokens_in_text: Literal["split", "keep"] = "split"

    def __post_init__(self):
        _positive("tokenizer.batch_bytes", self.batch_bytes)
        _positive("tokenizer.guard_first", self.guard_first, 0)
        _positive("tokenizer.guard_chars", self.guard_chars, 64)
        _no_credentials("tokenizer.path", self.path)
        if not 0.01 <= self.guard_fraction <= 1:
            raise ConfigError(f"tokenizer.guard_fraction must be between 0.01 and 1, got "
                              f"{self.guard_fraction}")


@dataclass(frozen=True)
class PackConfig:
    seq_len: int = 2048
    algorithm: PluginName = "bfd"  # a name of the packing registry, or concat (pack_algorithms())
    window_tokens: int = 0  # 0 = one global pack; else windows of about this many tokens
    optimal_time_limit: float = 10.0  # per window, for algorithm=optimal
    # a corpus of more chunks is packed in partitions of consecutive units of at most this many
    # chunks each (pipelines/partitions.py); up to it, one global pack. 0 = always global
    partition_chunks: int = 1 << 20

    def __post_init__(self):
        _one_of("pack.algorithm", self.algorithm, pack_algorithms())
        _positive("pack.seq_len", self.seq_len)
        _positive("pack.partition_chunks", self.partition_chunks, 0)
        _positive("pack.window_tokens", self.window_tokens, 0)
        _finite_positive("pack.optimal_time_limit", self.optimal_time_limit)
        if self.window_tokens and self.window_tokens < 2 * self.seq_len:
            raise ConfigError(
                f"pack.window_tokens={self.window_tokens} must be 0 (global) or at least "
                f"2 * pack.seq_len = {2 * self.seq_len}"
            )


@dataclass(frozen=True)
class OutputConfig:
    dir: str = "fewtrunc-out"
    rows_per_shard: int = 4096
    compression: Literal["zstd", "lz4", "none"] = "zstd"
    report: bool = True  # stats.json is always written; report.html + PNGs when true
    keep_work: bool = False  # keep the spilled token files after a successful run

    def __post_init__(self):
        if not self.dir:
            raise ConfigError("output.dir must not be empty")
        _positive("output.rows_per_shard", self.rows_per_shard)
        _no_credentials("output.dir", self.dir)


@dataclass(frozen=True)
class StorageConfig:
    """``s3://`` and ``gs://`` (docs/storage.md): what the environment cannot say. Credentials,
    endpoints and regions come from the standard environment (AWS_*, STORAGE_EMULATOR_HOST,
    application-default credentials)."""

    connect_timeout: float = 10.0  # S3: seconds to connect
    request_timeout: float = 60.0  # S3: seconds per request
    retry_attempts: int = 3  # S3: attempts of a failing request (exponential back-off)
    retry_seconds: float = 60.0  # GCS: how long a failing request is retried

    def __post_init__(self):
        for name in ("connect_timeout", "request_timeout", "retry_seconds"):
            _finite_positive(f"storage.{name}", getattr(self, name))
        _positive("storage.retry_attempts", self.retry_attempts)


@engine_registry.engine_config("local")
@dataclass(frozen=True)
class LocalConfig:
    """``engine: local`` only."""

    workers: int = 0  # threads of the threaded stages (encoding, shard writes); 0 = every core

    def __post_init__(self):
        _positive("local.workers", self.workers, 0)


@engine_registry.engine_config("ray")
@dataclass(frozen=True)
class RayConfig:
    """``engine: ray`` only (see docs/engines.md)."""

    address: str = ""  # "" = a private local Ray on 127.0.0.1; "auto", "ray://h:10001", "http://h:8265"
    num_cpus: int = 0  # local Ray only: CPUs it may use; 0 = all
    concurrency: int = 0  # actors (each tokenizes whole units, writes shards); 0 = CPUs / cpus_per_actor
    cpus_per_actor: float = 1.0  # CPUs reserved per actor (= its tokenizer and writer threads)
    max_restarts: int = -1  # actor restarts after a lost worker (-1 = unlimited)
    max_task_retries: int = -1  # retries of a lost actor call (-1 = unlimited)
    # seconds the pool may find no work running and no actor placed before the run stops
    stall_timeout: float = 300.0

    def __post_init__(self):
        _finite_positive("ray.stall_timeout", self.stall_timeout)
        _positive("ray.num_cpus", self.num_cpus, 0)
        _positive("ray.concurrency", self.concurrency, 0)
        _finite_positive("ray.cpus_per_actor", self.cpus_per_actor)
        _positive("ray.max_restarts", self.max_restarts, -1)
        _positive("ray.max_task_retries", self.max_task_retries, -1)


@engine_registry.engine_config("beam")
@dataclass(frozen=True)
class BeamConfig:
    """``engine: beam`` only (see docs/engines.md); unknown command-line flags are added to options."""

    runner: str = "DirectRunner"  # DirectRunner (local, multi-process) | DataflowRunner | ...
    num_workers: int = 2  # DirectRunner: direct_num_workers
    running_mode: Literal["multi_processing", "multi_threading", "in_memory"] = "multi_processing"
    warm_workers: bool = True  # DirectRunner multi_processing: start the workers while planning
    options: tuple[str, ...] = ()  # more PipelineOptions flags, e.g. --project=P --region=R

    def __post_init__(self):
        _positive("beam.num_workers", self.num_workers)


@dataclass(frozen=True)
class RunConfig:
    input: InputConfig = field(default_factory=InputConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    pack: PackConfig = field(default_factory=PackConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    engine: str = "local"
    local: LocalConfig = field(default_factory=LocalConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    beam: BeamConfig = field(default_factory=BeamConfig)

    def __post_init__(self):
        if self.engine not in engines():
            raise ConfigError(f"engine {show(self.engine)} is not available; choose one of "
                              f"{engines()}")


_SPREAD = ("the engines always give whole units to workers (one unit's batches spread over "
           "workers was slower in every measurement; smaller input.unit_bytes gives more units)")
REMOVED = {  # keys of earlier versions: a config that still sets one gets a line saying so
    ("ray", "rebalance"): _SPREAD, ("beam", "rebalance"): _SPREAD, ("ray", "io_cpus"): _SPREAD,
    ("ray", "block_mb"): _SPREAD,
}


def load_run_config(config=None, overrides=()) -> RunConfig:
    """A ``RunConfig`` from a RunConfig, a dict, a YAML path or None, plus dotted overrides."""
    from pipelines.infra.configio import deep_merge, from_dict, parse_overrides, read_yaml, to_dict

    if isinstance(config, RunConfig):
        if not overrides:
            return config
        config = to_dict(config)
    if not isinstance(config, dict):
        config = read_yaml(config) if config is not None else {}
    data = deep_merge(config, parse_overrides(overrides))
    gone = [(s, k) for s, k in REMOVED if isinstance(data.get(s), dict) and k in data[s]]
    if gone:
        raise ConfigError("; ".join(f"{s}.{k} was removed: {REMOVED[s, k]}; delete it from the "
                                    "config" for s, k in gone))
    return from_dict(RunConfig, data)
