"""What an output directory already holds for a run: nothing (a new run), an unfinished run to
resume from its markers, a finished one to recognize (or repair from kept work files), or
something else to refuse."""
from __future__ import annotations

import json
from pathlib import Path

from pipelines.infra.atomic import TMP_GLOB, write_json
from pipelines.infra.errors import ConfigError, OutputError
from pipelines.markers import SHARD, remove_markers
from pipelines.output_lock import LOCK
from pipelines.run_plan import ENGINE_KEYS, WORK, RunPlan
from pipelines.infra.shard_format import list_shards
from pipelines.infra.manifest import load_manifest, manifest_seal
from pipelines.infra.hashing import sha256_file
from pipelines.work_dir import (RECORD, TEMPORARY, WORK_FILE, has_record, remove_work,
                                unrecorded)


def assess(plan: RunPlan, check: str = "size") -> tuple[str, dict | None]:
    """What ``output.dir`` holds for this run, found by reading only (the driver asks once
    before it takes the lock or creates anything, so a refused run writes nothing, and again
    once it holds the lock): ``("new" | "unfinished" | "complete" | "repair", manifest)``.
    Raises the refusals: foreign content (a ``_work/`` without fewtrunc's run record included),
    a finished or unfinished run of another config, a damaged finished run without its work
    files."""
    out, fp = plan.out, plan.fingerprint
    if not out.exists():
        return "new", None
    if (out / "manifest.json").is_file():
        manifest = load_manifest(out)
        if manifest["run_fingerprint"] != fp:
            raise ConfigError(f"output.dir {str(out)!r} holds a finished run with "
                              f"{_what_differs(manifest.get('config'), plan)}; choose another "
                              "output.dir or delete it")
        damage = output_damage(out, manifest, check)
        if not damage:
            return "complete", manifest
        if not _same_run(plan.work / RECORD, fp):
            raise OutputError(f"output.dir {str(out)!r} holds a finished run whose output is "
                              f"damaged: {'; '.join(damage[:3])}"
                              f"{f' (and {len(damage) - 3} more)' if len(damage) > 3 else ''}."
                              " Its work files are gone, so it cannot be repaired: delete the "
                              "directory and run again (output.keep_work=true keeps what a "
                              "repair needs)")
        return "repair", manifest  # the kept work files hold the plan's tokens
    if not has_record(plan.work):
        foreign = sorted(p.name for p in out.iterdir()
                         if p.name != LOCK and not (p.name == WORK and not unrecorded(p)))
        if foreign:
            what = (f"its {WORK}/ has no fewtrunc run record ({RECORD})" if WORK in foreign
                    else f"no manifest.json, no {WORK}/{RECORD}")
            raise OutputError(f"output.dir {str(out)!r} is not empty and holds no fewtrunc run "
                              f"({what}; it has {', '.join(foreign[:3])}"
                              f"{', …' if len(foreign) > 3 else ''}): choose a new or empty "
                              "directory")
        return "new", None
    old = _read_json(plan.work / RECORD)
    if old.get("run_fingerprint") != fp and old.get("tokens_fingerprint") != \
            plan.tokens_fingerprint:
        raise ConfigError(f"output.dir {str(out)!r} holds an unfinished run with "
                          f"{_what_differs(old.get('config'), plan)}; delete it or "
                          "choose another output.dir")
    return "unfinished", None


def resume(plan: RunPlan, check: str) -> dict | None:
    """The finished run's manifest when the output is complete and intact; None when there is
    work to do (a new run, an unfinished one, or a finished one being repaired). Called holding
    the output lock, which the run's ``output_lock.holding`` releases."""
    out, fp = plan.out, plan.fingerprint
    state, manifest = assess(plan, check)
    if state == "complete":
        if plan.work.exists() and not plan.cfg.output.keep_work:
            remove_work(plan.work)  # killed after the manifest
        return manifest
    plan.work.mkdir(parents=True, exist_ok=True)
    run_file = plan.work / RECORD
    record = {"run_fingerprint": fp, "tokens_fingerprint": plan.tokens_fingerprint,
              "config": plan.config}
    if state == "unfinished" and not _same_run(run_file, fp):
        _drop_shards(plan)  # only pack.* / output.* differ: keep the tokenized units
        write_json(run_file, record)
    elif state == "new":
        write_json(run_file, record)
    if plan.out_location.keeps_temporaries:  # a store holds none (pipelines.infra.atomic)
        strays = [p for p in out.glob(TMP_GLOB) if TEMPORARY.fullmatch(p.name)] + \
            [p for p in plan.work.glob(TMP_GLOB) if WORK_FILE.fullmatch(p.name)]
        for stray in strays:  # of a killed run (the lock keeps others out)
            stray.unlink(missing_ok=True)
    return None


def _drop_shards(plan: RunPlan) -> None:
    """Shards and shard markers of an unfinished run's old row plan (their rows would differ)."""
    remove_markers(plan.work, SHARD)
    for shard in list_shards(plan.out):
        shard.unlink()


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return obj if isinstance(obj, dict) else {}


def _same_run(run_file: Path, fp: str) -> bool:
    return run_file.is_file() and _read_json(run_file).get("run_fingerprint") == fp


def _what_differs(old: dict | None, plan: RunPlan) -> str:
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
        walk(old, plan.config, "")
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
