"""What every engine does the same way: prepare the output directory, resume from markers,
plan rows, write one shard, and finalize (rejects, stats, report, manifest last).

An engine adapter only decides *where* ``tokenize_units``-style work and ``write_shard_job`` run;
all file names, markers and bytes come from here and from the steps.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipelines.configio import to_dict
from pipelines.errors import ConfigError, FatalError
from pipelines.faults import crash_point
from pipelines.shard_format import fsync_path, list_shards, shard_name, write_shard_batches
from pipelines.steps import spill
from pipelines.steps.manifest import build_manifest
from pipelines.steps.pack import plan_rows
from pipelines.steps.plan import inputs_digest, plan_units
from pipelines.steps.stats import run_stats
from pipelines.steps.tokenize import Tokenize
from pipelines.steps.write import DocTable, build_shard, sha256_file, shard_ranges
from pipelines.tokenizer import tokenizer_fingerprint

WORK = "_work"


@dataclass
class RunContext:
    cfg: object
    out: Path
    work: Path
    units: list
    tokenize: Tokenize
    tokenizer_info: dict
    fingerprint: str
    config: dict
    inputs: dict


ENGINE_KEYS = ("engine", "local", "ray", "beam")  # how a run is executed, not what it produces
# how ids are computed, not which: every backend gives the reference's ids (the guard checks it)
BACKEND_KEYS = ("backend", "guard_fraction", "guard_first")


def _fingerprint(config: dict, tok_fp: str, digest: str) -> str:
    """What the output depends on: so a run may be resumed under another engine or backend."""
    produced = {k: v for k, v in config.items() if k not in ENGINE_KEYS}
    produced["tokenizer"] = {k: v for k, v in produced.get("tokenizer", {}).items()
                             if k not in BACKEND_KEYS}
    blob = json.dumps({"config": produced, "tokenizer": tok_fp, "inputs": digest}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def prepare(cfg) -> tuple[RunContext, dict | None]:
    """Validate everything before work starts; return (context, manifest if already complete)."""
    tokenize = Tokenize(cfg.tokenizer)
    units = plan_units(cfg.input)
    tok_fp = tokenizer_fingerprint(tokenize.tokenizer)
    config = to_dict(cfg)
    digest = inputs_digest(units)
    fp = _fingerprint(config, tok_fp, digest)
    out = Path(cfg.output.dir)
    tok_info = {"fingerprint": tok_fp, "vocab_size": tokenize.tokenizer.get_vocab_size(),
                "bos_id": tokenize.bos, "eos_id": tokenize.eos, "backend": tokenize.backend}
    inputs = {"units": len(units), "sources": sum(len(u.sources) for u in units),
              "digest": digest}
    ctx = RunContext(cfg, out, out / WORK, units, tokenize, tok_info, fp, config, inputs)
    manifest_path = out / "manifest.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("run_fingerprint") != fp:
            raise ConfigError(f"output.dir {str(out)!r} holds a finished run with another config "
                              "or input; choose another output.dir or delete it")
        if ctx.work.exists():
            shutil.rmtree(ctx.work, ignore_errors=True)  # killed after the manifest was written
        return ctx, manifest
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output.dir {str(out)!r} exists and is not a directory")
    ctx.work.mkdir(parents=True, exist_ok=True)
    run_file = ctx.work / "run.json"
    if run_file.is_file():
        if json.loads(run_file.read_text()).get("run_fingerprint") != fp:
            raise ConfigError(f"output.dir {str(out)!r} holds an unfinished run with another "
                              "config or input; delete it or choose another output.dir")
    else:
        spill.write_json_atomic(run_file, {"run_fingerprint": fp, "config": config})
    for stray in list(out.glob(".*.tmp-*")) + list(ctx.work.glob("*.tmp*")):
        stray.unlink(missing_ok=True)  # temporaries of a killed run
    return ctx, None


def spread_batches(policy: str, n_units: int, workers: int) -> bool:
    """Spread each unit's text batches over the workers after reading (``rebalance``)?

    Needed only when units are too few to keep every worker busy ("auto": fewer than 2 per
    worker). Otherwise each worker reads, tokenizes and spills whole units itself
    (``unit_stream``): no text batch or token part travels between workers, nothing is committed.
    """
    if policy != "auto":
        return policy == "always"
    return n_units < 2 * workers


def pending_units(ctx: RunContext) -> list:
    return [u for u in ctx.units if spill.load_marker(ctx.work, u.index) is None]


def plan(ctx: RunContext):
    markers = [spill.load_marker(ctx.work, u.index) for u in ctx.units]
    if any(m is None for m in markers):
        raise FatalError("planning rows before every unit is tokenized")
    docs = DocTable.from_units([spill.load_docs(ctx.work, u.index) for u in ctx.units])
    rows = plan_rows(docs.length, ctx.cfg.pack)
    if int(rows.seg_len.sum()) != int(docs.length.sum()):
        raise FatalError("the row plan does not hold every token of the accepted documents")
    return docs, rows, markers


def write_shard_job(ctx: RunContext, rows, docs, store, k: int, start: int, end: int) -> dict:
    """Write shard ``k`` unless its marker shows an identical file is already there."""
    path = ctx.out / shard_name(k)
    marker = ctx.work / f"shard-{k:05d}.done.json"
    if marker.is_file() and path.is_file():
        entry = json.loads(marker.read_text())
        if entry["rows"] == end - start and sha256_file(path) == entry["sha256"]:
            return entry
    step = batch_rows(ctx.cfg.pack.seq_len)

    def batches():
        for a in range(start, end, step):
            yield build_shard(rows, a, min(a + step, end), docs, store)
        crash_point("shard_tmp", k)

    write_shard_batches(batches(), path, ctx.cfg.output.compression)
    entry = {"file": path.name, "rows": end - start,
             "tokens": int(rows.seg_len[rows.row_offsets[start] : rows.row_offsets[end]].sum()),
             "bytes": path.stat().st_size, "sha256": sha256_file(path)}
    spill.write_json_atomic(marker, entry)
    crash_point("shard", k)
    return entry


def batch_rows(seq_len: int) -> int:
    """Rows per Arrow record batch inside a shard: about 1M tokens, fixed by seq_len alone."""
    return max(1, (1 << 20) // seq_len)


def shard_plan(ctx: RunContext, rows) -> list[tuple[int, int]]:
    ranges = shard_ranges(rows.n_rows, ctx.cfg.output.rows_per_shard)
    for extra in list_shards(ctx.out)[len(ranges):]:
        extra.unlink()
    return ranges


def finalize(ctx: RunContext, docs, rows, markers, shards: list, timings: dict) -> dict:
    stats = run_stats(docs.length, rows, ctx.cfg.pack)
    manifest = build_manifest(config=ctx.config, fingerprint=ctx.fingerprint,
                              tokenizer=ctx.tokenizer_info, inputs=ctx.inputs, shards=shards,
                              markers=markers, stats=stats)
    t = manifest["totals"]
    if not all(manifest["checks"].values()) or t["sequences"] != rows.n_rows:
        raise FatalError(f"conservation broken: {t['tokens_in']} tokens in, {t['tokens_out']} "
                         f"out, {t['sequences']} rows of {rows.n_rows}; documents read "
                         f"{t['documents_read']}, accepted {t['documents_accepted']}, rejected "
                         f"{t['documents_rejected']}")
    _write_lines(ctx.out / "rejects.jsonl", [r for m in markers for r in m["rejects"]])
    spill.write_json_atomic(ctx.out / "stats.json", stats)
    _write_text(ctx.out / "config.yaml", _yaml(ctx.config))
    if ctx.cfg.output.report:
        from pipelines.steps.report import write_report

        write_report(ctx.out, stats, manifest)
    spill.write_json_atomic(ctx.out / "timings.json", timings)
    crash_point("manifest", 0)
    spill.write_json_atomic(ctx.out / "manifest.json", manifest, sync=True)
    fsync_path(ctx.out)
    if not ctx.cfg.output.keep_work:
        shutil.rmtree(ctx.work, ignore_errors=True)
    return manifest


def _yaml(config: dict) -> str:
    import yaml

    return yaml.safe_dump(config, sort_keys=False)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _json_line(record: dict) -> str:
    line = json.dumps(record, sort_keys=True, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:  # a file name that is not UTF-8: keep it as \udcXX escapes
        line = json.dumps(record, sort_keys=True)
    return line + "\n"


def _write_lines(path: Path, records: list) -> None:
    _write_text(path, "".join(_json_line(r) for r in records))
