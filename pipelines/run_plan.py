"""The run plan: what a run produces, as pure, picklable data (config, units, fingerprints).

Built once by the driver and shipped as is to every worker of every engine; it holds no live
object (the tokenizer, locks, pools are built from it where they are used). It carries what a
worker would otherwise read from a file that only the driver may see: the tokenizer's JSON
(``tokenizer_json``, the very text the fingerprint hashes), which a plan unpickled on a worker
hands to ``pipelines.infra.tokenizer.give``, so no node needs ``tokenizer.path``.

What a run records (``config``: config.yaml, manifest.json, _work/run.json) is redacted here,
once: user info and signature query values of URLs (``pipelines.infra.storage.redact``). So are the
sources' stable names, which seed the document ids and the inputs digest: the fingerprint, the
ids and the shard bytes do not change when only a presigned URL's signature (or a password)
does, and a re-signed URL resumes the same run. ``cfg`` keeps the URLs as given: they are read
with them.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from pipelines.infra.configio import to_dict
from pipelines.infra.errors import ConfigError, show
from pipelines.output_lock import LOCK
from pipelines.steps.plan import (expand_placeholders, input_locations, inputs_digest,
                                  plan_units, split_glob)
from pipelines.infra.storage.location import Location
from pipelines.infra.storage.redact import redact_text, redact_tree
from pipelines.steps.tokenize import Tokenize
from pipelines.infra.tokenizer import give, json_fingerprint, load_tokenizer

WORK = "_work"
# how a run is executed, not what it produces
ENGINE_KEYS = ("engine", "local", "ray", "beam", "storage")
# how ids are computed, not which: every backend gives the reference's ids (the guard checks it)
BACKEND_KEYS = ("backend", "guard_fraction", "guard_first", "guard_chars")


@dataclass(frozen=True)
class RunPlan:
    cfg: object  # the RunConfig (frozen dataclasses), URLs as given: never written anywhere
    out: Path  # a UrlPath when output.dir is a URL (pipelines.infra.storage.paths)
    work: Path
    units: tuple
    tokenizer_info: dict
    fingerprint: str  # what the output depends on
    tokens_fingerprint: str  # what the spilled tokens depend on
    config: dict  # the RunConfig as written to files: redacted
    inputs: dict
    # output.dir, resolved once: what its store can do (fsync, temporaries, directories) is
    # asked of it, never of the text again (``out`` is its ``as_path()``)
    out_location: Location
    # the tokenizer's JSON (``to_str``) when tokenizer.path is set: workers build it from this
    tokenizer_json: str = field(default="", repr=False, compare=False)

    def __setstate__(self, state: dict) -> None:
        """Unpickled on a worker: ``load_tokenizer(tokenizer.path)`` there builds the driver's
        tokenizer from the plan (the path may exist on the driver only)."""
        self.__dict__.update(state)
        if state.get("tokenizer_json"):
            give(self.cfg.tokenizer.path, state["tokenizer_json"])


def fingerprint(config: dict, tok_fp: str, digest: str) -> str:
    """What the output depends on: so a run may be resumed under another engine or backend."""
    produced = {k: v for k, v in config.items() if k not in ENGINE_KEYS}
    produced["tokenizer"] = {k: v for k, v in produced.get("tokenizer", {}).items()
                             if k not in BACKEND_KEYS}
    blob = json.dumps({"config": produced, "tokenizer": tok_fp, "inputs": digest}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _placeless(config: dict) -> dict:
    """The config without ``output.dir``: where a run is written does not change its bytes, so
    it may be resumed through another spelling of the path, or after the directory moved."""
    return {**config, "output": {k: v for k, v in config.get("output", {}).items() if k != "dir"}}


def build_run_plan(cfg) -> tuple[RunPlan, Tokenize]:
    """The plan of ``cfg`` and the driver's tokenizer (loaded while the inputs resolve).

    Validates before any work: seq_len, output.dir outside the inputs."""
    _check_seq_len(cfg.pack.seq_len)
    reference = load_tokenizer(cfg.tokenizer.path or None)
    with ThreadPoolExecutor(1) as pool:  # the backends load (GIL released) while inputs resolve
        loading = pool.submit(Tokenize, cfg.tokenizer)
        where = input_locations(cfg.input)
        units = _redacted_keys(plan_units(cfg.input, where), cfg.input.paths)
        tok_json = reference.to_str()
        tok_fp = json_fingerprint(tok_json)
        tokenize = loading.result()
    config = redact_tree(to_dict(cfg))
    digest = inputs_digest(units)
    out_location = Location.of(cfg.output.dir)
    out = out_location.as_path()
    tok_info = {"fingerprint": tok_fp, "vocab_size": tokenize.tokenizer.get_vocab_size(),
                "bos_id": tokenize.bos, "eos_id": tokenize.eos, "backend": tokenize.backend}
    inputs = {"units": len(units), "sources": sum(len(u.sources) for u in units),
              "digest": digest}
    # what the spilled tokens depend on: the input and tokenizer, not pack.* or output.* (a
    # seq_len fixed after a failed pack does not re-tokenize the corpus)
    tokens_config = {k: v for k, v in config.items() if k not in ("pack", "output")}
    plan = RunPlan(cfg, out, out / WORK, tuple(units), tok_info,
                   fingerprint(_placeless(config), tok_fp, digest),
                   fingerprint(tokens_config, tok_fp, digest), config, inputs, out_location,
                   tok_json if cfg.tokenizer.path else "")
    _refuse_output_inside_inputs(cfg, out_location, where)
    return plan, tokenize


def _redacted_keys(units: list, paths) -> list:
    """``units`` with every source's stable name redacted (its ``path``, which is read, kept),
    when an entry of ``input.paths`` is a URL that holds a secret: otherwise (a local tree of 10^5
    files, a URL without one) nothing is looked at and the names stay as they are."""
    if not any("://" in p and redact_text(p) != p for p in paths):
        return units
    return [replace(u, sources=tuple(replace(s, key=redact_text(s.key)) for s in u.sources))
            for u in units]


def _check_seq_len(seq_len: int) -> None:
    """Before any work: a seq_len the packer cannot hold used to fail after the whole corpus was
    tokenized (MemoryError, or OverflowError from numpy)."""
    from packing.validate import MAX_CAPACITY

    if seq_len > MAX_CAPACITY:
        raise ConfigError(f"pack.seq_len = {seq_len:,} exceeds the packer's limit of "
                          f"{MAX_CAPACITY:,} tokens (its memory grows with seq_len, ~80 bytes "
                          "per token of it)")


def _refuse_output_inside_inputs(cfg, out_location: Location, where: tuple) -> None:
    """output.dir where an input path would reach it: its shards and rejects would become input,
    and every resume or rerun would see another input. Refused before any work. ``where``: the
    locations of ``cfg.input.paths`` (``steps.plan.input_locations``)."""
    from pipelines.infra.storage import local_path, stat

    remote = out_location.remote
    out = out_location.text.rstrip("/") if remote else os.path.realpath(out_location.local_path)
    ours = ("shard-00000.arrow", "manifest.json", "rejects.jsonl", "stats.json", "config.yaml",
            "timings.json", "report.html", "lengths.png", WORK, LOCK)
    for i, written in enumerate(cfg.input.paths):
        prefix, pattern = split_glob(written)
        base = expand_placeholders(prefix if pattern else written)
        if where[i].remote != remote:  # a glob's base is where its entry is
            continue  # one on a store, the other on a local disk
        base = base.rstrip("/") if remote else os.path.realpath(local_path(base))
        rel = os.path.relpath(out, base).replace(os.sep, "/")
        if rel == ".." or rel.startswith("../"):
            continue  # out is not below this input
        parts = [] if rel == "." else rel.split("/")
        if not pattern:
            st = stat(base) if remote else None
            reached = st.is_dir if remote and st else os.path.isdir(base)  # a tree (or HF directory) holds everything below it
        else:
            globs = pattern.split("/")
            if "**" in globs or any("**" in g for g in globs):
                reached = True
            elif len(parts) >= len(globs):
                reached = all(fnmatch.fnmatchcase(p, g) for p, g in zip(parts, globs))
            else:  # out matches the glob's first levels: could a match lie inside it?
                reached = all(fnmatch.fnmatchcase(p, g) for p, g in zip(parts, globs)) and (
                    len(globs) - len(parts) > 1
                    or any(fnmatch.fnmatchcase(n, globs[-1]) for n in ours))
        if reached:
            raise ConfigError(f"output.dir {show(cfg.output.dir)} is inside input.paths[{i}] "
                              f"{show(written)}: the run's own output would become its input; "
                              "choose an output.dir outside the inputs")
