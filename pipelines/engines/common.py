"""What every engine does the same way: prepare the output directory, resume from markers,
plan rows, write one shard, and finalize (rejects, stats, report, manifest last).

An engine adapter only decides *where* ``tokenize_units``-style work and ``write_shard_job`` run;
all file names, markers and bytes come from here and from the steps.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pipelines.configio import to_dict
from pipelines.errors import ConfigError, FatalError, OutputError
from pipelines.faults import crash_point
from pipelines.atomic import TMP_GLOB, fsync_path, write_json, write_text
from pipelines.shard_format import list_shards, shard_name, write_shard_batches
from pipelines.steps import spill
from pipelines.steps.manifest import build_manifest
from pipelines.steps.pack import plan_rows
from pipelines.steps.plan import expand_placeholders, inputs_digest, plan_units, split_glob
from pipelines.steps.stats import run_stats
from pipelines.steps.tokenize import Tokenize
from pipelines.steps.verify import SHARD_FILE, load_manifest, manifest_seal
from pipelines.steps.write import DocTable, build_shard, sha256_file, shard_ranges
from pipelines.tokenizer import load_tokenizer, tokenizer_fingerprint

WORK = "_work"
LOCK = ".fewtrunc.lock"  # held (flock) while a run uses the directory; removed when it ends


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
BACKEND_KEYS = ("backend", "guard_fraction", "guard_first", "guard_chars")


def _fingerprint(config: dict, tok_fp: str, digest: str) -> str:
    """What the output depends on: so a run may be resumed under another engine or backend."""
    produced = {k: v for k, v in config.items() if k not in ENGINE_KEYS}
    produced["tokenizer"] = {k: v for k, v in produced.get("tokenizer", {}).items()
                             if k not in BACKEND_KEYS}
    blob = json.dumps({"config": produced, "tokenizer": tok_fp, "inputs": digest}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def prepare(cfg, check: str = "size") -> tuple[RunContext, dict | None]:
    """Validate everything before work starts; return (context, manifest if already complete).

    Takes the output directory's lock (released by ``finalize``, or ``release_output``). A
    finished run counts as complete only when every shard exists with its recorded size
    (``check="sha256"``: and hash); a damaged one is repaired from kept work files or refused.
    """
    _check_seq_len(cfg.pack.seq_len)
    reference = load_tokenizer(cfg.tokenizer.path or None)
    with ThreadPoolExecutor(1) as pool:  # the backends load (GIL released) while inputs resolve
        loading = pool.submit(Tokenize, cfg.tokenizer)
        units = plan_units(cfg.input)
        tok_fp = tokenizer_fingerprint(reference)
        tokenize = loading.result()
    config = to_dict(cfg)
    digest = inputs_digest(units)
    fp = _fingerprint(_placeless(config), tok_fp, digest)
    out = Path(cfg.output.dir)
    tok_info = {"fingerprint": tok_fp, "vocab_size": tokenize.tokenizer.get_vocab_size(),
                "bos_id": tokenize.bos, "eos_id": tokenize.eos, "backend": tokenize.backend}
    inputs = {"units": len(units), "sources": sum(len(u.sources) for u in units),
              "digest": digest}
    ctx = RunContext(cfg, out, out / WORK, units, tokenize, tok_info, fp, config, inputs)
    _refuse_output_inside_inputs(cfg)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output.dir {str(out)!r} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    lock_output(out)
    try:
        return ctx, _resume(ctx, check)
    except BaseException:
        release_output(out)
        raise


def _resume(ctx: RunContext, check: str) -> dict | None:
    """The finished run's manifest when the output is complete and intact; None when there is
    work to do (a new run, an unfinished one, or a finished one being repaired)."""
    out, fp = ctx.out, ctx.fingerprint
    if (out / "manifest.json").is_file():
        manifest = load_manifest(out)
        if manifest["run_fingerprint"] != fp:
            raise ConfigError(f"output.dir {str(out)!r} holds a finished run with "
                              f"{_what_differs(manifest.get('config'), ctx)}; choose another "
                              "output.dir or delete it")
        damage = output_damage(out, manifest, check)
        if not damage:
            if ctx.work.exists() and not ctx.cfg.output.keep_work:
                shutil.rmtree(ctx.work, ignore_errors=True)  # killed after the manifest
            release_output(out)
            return manifest
        if not _same_run(ctx.work / "run.json", fp):
            raise OutputError(f"output.dir {str(out)!r} holds a finished run whose output is "
                              f"damaged: {'; '.join(damage[:3])}"
                              f"{f' (and {len(damage) - 3} more)' if len(damage) > 3 else ''}."
                              " Its work files are gone, so it cannot be repaired: delete the "
                              "directory and run again (output.keep_work=true keeps what a "
                              "repair needs)")
        # the kept work files hold the plan's tokens: the damaged shards are rewritten
    elif not ctx.work.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name != LOCK)
        if foreign:
            raise OutputError(f"output.dir {str(out)!r} is not empty and holds no fewtrunc run "
                              f"(no manifest.json, no {WORK}/; it has {', '.join(foreign[:3])}"
                              f"{', …' if len(foreign) > 3 else ''}): choose a new or empty "
                              "directory")
    ctx.work.mkdir(parents=True, exist_ok=True)
    run_file = ctx.work / "run.json"
    tokens_fp = _tokens_fingerprint(ctx)
    record = {"run_fingerprint": fp, "tokens_fingerprint": tokens_fp, "config": ctx.config}
    if run_file.is_file():
        if not _same_run(run_file, fp):
            old = _read_json(run_file)
            if old.get("tokens_fingerprint") != tokens_fp:
                raise ConfigError(f"output.dir {str(out)!r} holds an unfinished run with "
                                  f"{_what_differs(old.get('config'), ctx)}; delete it or "
                                  "choose another output.dir")
            _drop_shards(ctx)  # only pack.* / output.* differ: keep the tokenized units
            write_json(run_file, record)
    else:
        write_json(run_file, record)
    for stray in list(out.glob(TMP_GLOB)) + list(ctx.work.glob("*.tmp*")):
        stray.unlink(missing_ok=True)  # temporaries of a killed run (the lock keeps others out)
    return None


def _check_seq_len(seq_len: int) -> None:
    """Before any work: a seq_len the packer cannot hold used to fail after the whole corpus was
    tokenized (MemoryError, or OverflowError from numpy)."""
    from packing.validate import MAX_CAPACITY

    if seq_len > MAX_CAPACITY:
        raise ConfigError(f"pack.seq_len = {seq_len:,} exceeds the packer's limit of "
                          f"{MAX_CAPACITY:,} tokens (its memory grows with seq_len, ~80 bytes "
                          "per token of it)")


def _tokens_fingerprint(ctx: RunContext) -> str:
    """What the spilled tokens depend on: the input and tokenizer, not pack.* or output.*. An
    unfinished run whose config differs only in those resumes with its tokenized units (a
    seq_len fixed after a failed pack does not re-tokenize the corpus)."""
    config = {k: v for k, v in ctx.config.items() if k not in ("pack", "output")}
    return _fingerprint(config, ctx.tokenizer_info["fingerprint"], ctx.inputs["digest"])


def _drop_shards(ctx: RunContext) -> None:
    """Shards and shard markers of an unfinished run's old row plan (their rows would differ)."""
    for marker in ctx.work.glob("shard-*.done.json"):
        marker.unlink()
    for shard in list_shards(ctx.out):
        shard.unlink()


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return obj if isinstance(obj, dict) else {}


def _same_run(run_file: Path, fp: str) -> bool:
    return run_file.is_file() and _read_json(run_file).get("run_fingerprint") == fp


def _placeless(config: dict) -> dict:
    """The config without ``output.dir``: where a run is written does not change its bytes, so
    it may be resumed through another spelling of the path, or after the directory moved."""
    return {**config, "output": {k: v for k, v in config.get("output", {}).items() if k != "dir"}}


def _what_differs(old: dict | None, ctx: RunContext) -> str:
    """'another config (pack.seq_len: 512 -> 1024)', or 'another input or tokenizer'."""
    diffs = []

    def walk(a, b, prefix):
        for key in sorted(set(a) | set(b)):
            name = f"{prefix}{key}"
            if name in ENGINE_KEYS or name == "output.dir":
                continue
            x, y = a.get(key), b.get(key)
            if isinstance(x, dict) and isinstance(y, dict):
                walk(x, y, name + ".")
            elif x != y:
                diffs.append(f"{name}: {x!r} -> {y!r}")

    if isinstance(old, dict):
        walk(old, ctx.config, "")
    if diffs:
        return f"another config ({', '.join(diffs[:4])}{', …' if len(diffs) > 4 else ''})"
    return "another input (file names or sizes) or tokenizer"


def output_damage(out: Path, manifest: dict, check: str = "size") -> list[str]:
    """What is wrong with a finished run's shards: each must exist with its recorded size
    (``check="sha256"``: and its recorded sha256, as ``fewtrunc verify`` does); no stray shard."""
    problems = []
    listed = set()
    for entry in manifest["shards"]:
        name = entry["file"]
        listed.add(name)
        path = out / name
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            problems.append(f"{name} is missing")
            continue
        if size != entry["bytes"]:
            problems.append(f"{name} has {size:,} bytes, the manifest records {entry['bytes']:,}")
        elif check == "sha256" and sha256_file(path) != entry["sha256"]:
            problems.append(f"{name}: sha256 differs from the manifest's")
    for name, entry in manifest.get("files", {}).items():
        path = out / name
        if not path.is_file() or path.stat().st_size != entry["bytes"]:
            problems.append(f"{name} is missing or has another size than the manifest records")
        elif check == "sha256" and sha256_file(path) != entry["sha256"]:
            problems.append(f"{name}: sha256 differs from the manifest's")
    if check == "sha256" and manifest.get("seal") != manifest_seal(manifest):
        problems.append("manifest.json was edited after the run (its seal differs)")
    problems += [f"{p.name} is not in the manifest" for p in list_shards(out)
                 if p.name not in listed]
    return problems


def _refuse_output_inside_inputs(cfg) -> None:
    """output.dir where an input path would reach it: its shards and rejects would become input,
    and every resume or rerun would see another input. Refused before any work."""
    out = os.path.realpath(cfg.output.dir)
    ours = ("shard-00000.arrow", "manifest.json", "rejects.jsonl", "stats.json", "config.yaml",
            "timings.json", "report.html", "lengths.png", WORK, LOCK)
    for i, written in enumerate(cfg.input.paths):
        prefix, pattern = split_glob(written)
        base = os.path.realpath(expand_placeholders(prefix if pattern else written))
        rel = os.path.relpath(out, base).replace(os.sep, "/")
        if rel == ".." or rel.startswith("../"):
            continue  # out is not below this input
        parts = [] if rel == "." else rel.split("/")
        if not pattern:
            reached = os.path.isdir(base)  # a tree (or HF directory) holds everything below it
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
            raise ConfigError(f"output.dir {cfg.output.dir!r} is inside input.paths[{i}] "
                              f"{written!r}: the run's own output would become its input; "
                              "choose an output.dir outside the inputs")


_LOCKS: dict[str, int] = {}  # output directory (real path) -> descriptor of its held lock file


def lock_output(out: Path) -> None:
    """Take the exclusive lock of ``out`` (flock on ``out/.fewtrunc.lock``, which names the
    holder), or raise ``OutputError`` naming the run that holds it."""
    import fcntl
    import socket
    import time

    key = os.path.realpath(out)
    if key in _LOCKS:  # this process holds it already (an earlier run here ended in an error)
        return
    path = out / LOCK
    for _ in range(20):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            raise OutputError(f"output.dir {str(out)!r} is in use by another fewtrunc run "
                              f"({holder}); wait for it to end, or choose another output.dir"
                              ) from None
        except OSError as exc:
            os.close(fd)
            raise OutputError(f"output.dir {str(out)!r}: cannot lock {path} ({exc.strerror}); "
                              "use an output.dir on a file system with file locks") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed the file as we opened it: take the new one
    else:
        raise OutputError(f"output.dir {str(out)!r}: could not take its lock {path}")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {stamp}\n".encode(), 0)
    _LOCKS[key] = fd


def release_output(out) -> None:
    """Remove and release the lock of ``out`` if this process holds it."""
    fd = _LOCKS.pop(os.path.realpath(out), None)
    if fd is None:
        return
    path = Path(out) / LOCK
    try:
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            path.unlink()
    except OSError:
        pass
    os.close(fd)


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
    write_json(marker, entry)
    crash_point("shard", k)
    return entry


def batch_rows(seq_len: int) -> int:
    """Rows per Arrow record batch inside a shard: about 1M tokens, fixed by seq_len alone."""
    return max(1, (1 << 20) // seq_len)


def plan_shards_and_remove_strays(ctx: RunContext, rows) -> list[tuple[int, int]]:
    """The row range of every shard; shard files beyond them (an earlier, larger plan's) go."""
    ranges = shard_ranges(rows.n_rows, ctx.cfg.output.rows_per_shard)
    planned = {shard_name(k) for k in range(len(ranges))}
    for extra in list_shards(ctx.out):  # only inside a known run (prepare refuses others)
        if extra.name not in planned:
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
    write_json(ctx.out / "stats.json", stats)
    write_text(ctx.out / "config.yaml", _yaml(ctx.config))
    if ctx.cfg.output.report:
        from pipelines.steps.report import write_report

        write_report(ctx.out, stats, manifest)
    write_json(ctx.out / "timings.json", timings)
    manifest["files"] = output_files(ctx.out)
    manifest["seal"] = manifest_seal(manifest)
    crash_point("manifest", 0)
    write_json(ctx.out / "manifest.json", manifest, sync=True)
    fsync_path(ctx.out)
    if not ctx.cfg.output.keep_work:
        shutil.rmtree(ctx.work, ignore_errors=True)
    release_output(ctx.out)
    return manifest


UNHASHED = ("manifest.json", "timings.json")  # the record itself; the one file that varies


def output_files(out: Path) -> dict:
    """{name: {"bytes", "sha256"}} of every file of the run besides its shards, the manifest and
    timings.json (rejects.jsonl, stats.json, config.yaml, the report): ``verify`` checks them."""
    files = {}
    for path in sorted(Path(out).iterdir()):
        name = path.name
        if (name.startswith(".") or name in UNHASHED or not path.is_file()
                or SHARD_FILE.fullmatch(name)):
            continue
        files[name] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    return files


def _yaml(config: dict) -> str:
    import yaml

    return yaml.safe_dump(config, sort_keys=False)


def _json_line(record: dict) -> str:
    line = json.dumps(record, sort_keys=True, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:  # a file name that is not UTF-8: keep it as \udcXX escapes
        line = json.dumps(record, sort_keys=True)
    return line + "\n"


def _write_lines(path: Path, records: list) -> None:
    write_text(path, "".join(_json_line(r) for r in records))
