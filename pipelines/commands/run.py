"""``fewtrunc run CONFIG [key=value ...]``: tokenize, Best-fit Pack and write shards.

Its help teaches in prose and examples; what the config model and the registries know (the
input formats, the packing algorithms, every key with its default and choices) is read from
them each time the help is built, so it lists a plug-in registered at run time too.
"""
from __future__ import annotations

HELP = "tokenize a corpus, Best-fit Pack it, write Arrow shards + manifest + report"
_INTRO = """\
Runs the job described by CONFIG (YAML), with dotted key=value overrides of any config key
(unknown keys are an error that names them; every key is listed at the end). {stdlib} and
{assets} in a path expand to this Python's standard library and fewtrunc's shipped sample data.

Writes to output.dir: shard-*.arrow (one row per training sequence), manifest.json, stats.json,
rejects.jsonl, report.html (charts inline; `fewtrunc report DIR --png` adds PNG files). A run
killed at any point resumes when started again and ends byte-identical; rerunning a finished run
does nothing once every shard is found with its recorded size (--verify: and sha256). A damaged
finished run is repaired from its work files (output.keep_work=true) or refused. One run at a
time may use an output.dir (a lock names the holder); output.dir may not lie inside an input,
nor be a non-empty directory of other files.

examples:
  fewtrunc run configs/demo.yaml
  fewtrunc run configs/demo.yaml pack.seq_len=4096 output.dir=out-4k
  fewtrunc run configs/jsonl.yaml input.paths=a.jsonl.zst,b.jsonl.gz input.on_error=fail
  fewtrunc run configs/demo.yaml pack.algorithm=concat output.dir=out-concat  # the baseline
  fewtrunc run configs/demo.yaml pack.window_tokens=50000000   # bounded-memory windows
  fewtrunc run configs/demo.yaml pack.partition_chunks=0       # always one global pack
"""
_PARTITIONS = """\
partitions (automatic): a corpus of at most pack.partition_chunks chunks (documents split at
seq_len; default {chunks:,}) is one global pack, the paper's setting. A larger one is packed in
partitions of consecutive input units of at most that many chunks each (one big file is cut
between its documents), pack.algorithm inside each, each partition its own contiguous range of
shards; the driver then holds per-unit and per-partition counts only, so its memory does not
grow with the documents. The cost is a few part-filled rows per partition: <= 0.01% more rows
at ~10^6 documents per partition. The cut depends on the input and config only, never on the
engine or workers.

tokenizer (any tokenizer.json; GPT-2 by default; the same ids from every backend):
  fewtrunc run configs/demo.yaml tokenizer.path=tokenizer.json
  fewtrunc run configs/demo.yaml tokenizer.backend=tokenizers    # HF tokenizers only (slow)
  tokenizer.backend={backend} (default) encodes with fastokens after a self-test against
  tokenizers, and tokenizer.guard_fraction (>= 1%) of the documents are re-encoded with
  tokenizers: a difference stops the run naming the document.
  tokenizer.special_tokens_in_text={special} (default) encodes "<|endoftext|>" inside a document
  as text; keep encodes it as the control id.

object stores (any path may be s3://, gs:// or file://; credentials and endpoints from the
environment: AWS_*, STORAGE_EMULATOR_HOST, application-default credentials; docs/storage.md):
  fewtrunc run configs/demo.yaml 'input.paths=s3://corpus/web/*.jsonl.zst' output.dir=s3://runs/a
  fewtrunc run configs/demo.yaml output.dir=gs://runs/b storage.retry_seconds=120
  storage.connect_timeout / request_timeout / retry_attempts apply to S3, retry_seconds to GCS

engines (engine={engines}; the same bytes on each; docs/engines.md):
  fewtrunc run configs/demo.yaml local.workers=4               # default: every core
  fewtrunc run configs/demo.yaml engine=ray                    # a private Ray on 127.0.0.1
  fewtrunc run configs/demo.yaml engine=ray ray.address=auto   # inside `ray job submit`
  fewtrunc run configs/demo.yaml engine=beam beam.num_workers=2
  fewtrunc run configs/demo.yaml engine=beam --runner DataflowRunner --project P --region R
      --temp_location gs://B/tmp --setup_file ./setup.py   # (one line)
  each worker tokenizes whole input units (input.unit_bytes groups small files, and cuts big
  ones whose format allows it): a corpus of fewer units than workers leaves workers idle
"""
_CONCAT = "the baseline: documents concatenated in input order, cut every pack.seq_len tokens"


def describe() -> str:
    """The ``--help`` text, from the config model and the registries as they are now."""
    from packing.registry import ALGORITHMS
    from pipelines import config
    from pipelines.commands.config_keys import config_keys
    from pipelines.steps.formats import COMPRESSED, FORMATS

    formats = [(f.name, f.summary + (f": {' '.join(f.suffixes)}" if f.suffixes else ""))
               for f in FORMATS.values()]
    packers = [(a.name, a.summary) for a in ALGORITHMS.values()] + [(config.CONCAT, _CONCAT)]
    choices = {"input.format": config.input_formats(), "engine": config.engines(),
               "pack.algorithm": config.pack_algorithms()}
    pack, tok = config.PackConfig(), config.TokenizerConfig()
    return "\n".join([
        _INTRO,
        "inputs (input.format; auto, the default, reads a file by its suffix below, "
        f"{'/'.join(COMPRESSED)}",
        "dropped first, else as files; a directory as a tree of files, or whole if it is a "
        "dataset):", _table(formats), "",
        f"packing (pack.algorithm, default {pack.algorithm}):", _table(packers), "",
        _PARTITIONS.format(chunks=pack.partition_chunks, backend=tok.backend,
                           special=tok.special_tokens_in_text,
                           engines="|".join(config.engines())),
        "every key, with its default (a|b: the choices, the default first):",
        config_keys(config.RunConfig, choices),
    ])


def _table(rows: list[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in rows) + 2
    return "\n".join(f"  {name:<{width}}{text}" for name, text in rows)


def __getattr__(name: str):
    """``DESCRIPTION`` (what ``pipelines.cli`` shows) is built when it is read (PEP 562)."""
    if name == "DESCRIPTION":
        return describe()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


PASS_UNKNOWN_FLAGS = True  # engine=beam: flags fewtrunc does not know go to PipelineOptions


def add_arguments(parser) -> None:
    parser.add_argument("config", help="YAML config file (see configs/)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted overrides, e.g. pack.seq_len=4096 output.dir=out")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--verify", action="store_true",
                        help="over a finished run: check every shard's sha256 (as `fewtrunc "
                        "verify` does), not only that it exists with its recorded size")


def summary_table(manifest: dict) -> str:
    t = manifest["totals"]
    lines = [
        ("documents read", t["documents_read"]),
        ("documents accepted", t["documents_accepted"]),
        ("documents rejected", t["documents_rejected"]),
        ("documents truncated", t["documents_truncated"]),
        ("chunks", t["chunks"]),
        ("tokens in / out", f"{t['tokens_in']:,} / {t['tokens_out']:,}"),
        ("sequences", t["sequences"]),
        ("lower bound", t["lower_bound"]),
        ("overhead", f"{t['overhead']:.5%}"),
        ("shards", len(manifest["shards"])),
        ("token conservation", "ok" if manifest["checks"]["token_conservation"] else "BROKEN"),
    ]
    backend = manifest.get("tokenizer", {}).get("backend")
    if backend:  # which tokenizer ran, and what the guard and the special-token policy saw
        lines.append(("tokenizer", f"{backend['name']} {backend['version']}"))
        if backend["guard_fraction"]:
            lines.append(("guard-checked docs", t.get("documents_guard_checked", 0)))
    lines.append(("special-token docs", t.get("documents_with_special_tokens", 0)))
    return "\n".join(f"  {k:<22} {v:>18,}" if isinstance(v, int) else f"  {k:<22} {v:>18}"
                     for k, v in lines)


def main(args) -> int:
    import sys

    from pipelines.api import run
    from pipelines.infra.storage.redact import redact_text

    extra = getattr(args, "extra", [])
    is_override = [("=" in a and not a.startswith("-")) for a in extra]
    overrides = list(args.overrides) + [a for a, o in zip(extra, is_override) if o]
    flags = [a for a, o in zip(extra, is_override) if not o]
    check = {"check": "sha256"} if args.verify else {}
    result = run(args.config, overrides, progress=not args.quiet and sys.stderr.isatty(),
                 engine_args=flags, **check)
    m = result["manifest"]
    print(redact_text(f"{result['status']}: {result['out']}"))  # output.dir may be a URL
    print(summary_table(m))
    if "timings" in result:
        t = result["timings"]
        tok_s = m["totals"]["tokens_in"] / max(t["total_s"], 1e-9)
        print(f"  {'time':<22} {t['total_s']:>17.1f}s  ({tok_s:,.0f} tokens/s)")
    return 0
