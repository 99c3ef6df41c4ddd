"""The end of a run: rejects, stats, config, report, timings, and the manifest last (sealed,
fsynced); the work directory goes unless ``output.keep_work``; the lock is released."""
from __future__ import annotations

import json
from pathlib import Path

from pipelines.atomic import atomic_path, fsync_path, write_json, write_text
from pipelines.errors import FatalError
from pipelines.faults import crash_point
from pipelines.output_lock import release_output
from pipelines.run_plan import RunPlan
from pipelines.steps.manifest import build_manifest
from pipelines.steps.verify import SHARD_FILE, manifest_seal
from pipelines.steps.write import sha256_file
from pipelines.storage.paths import as_path, remove_tree
from pipelines.storage.urls import is_url


def finalize_stats(plan: RunPlan, stats: dict, n_rows: int, markers, shards: list,
                   timings: dict) -> dict:
    """Write rejects, stats, report and, last, the manifest, from the run's stats and row count
    (merged from the partitions' summaries); refuses a run whose tokens do not add up."""
    manifest = build_manifest(config=plan.config, fingerprint=plan.fingerprint,
                              tokenizer=plan.tokenizer_info, inputs=plan.inputs, shards=shards,
                              markers=markers, stats=stats)
    t = manifest["totals"]
    if not all(manifest["checks"].values()) or t["sequences"] != n_rows:
        raise FatalError(f"conservation broken: {t['tokens_in']} tokens in, {t['tokens_out']} "
                         f"out, {t['sequences']} rows of {n_rows}; documents read "
                         f"{t['documents_read']}, accepted {t['documents_accepted']}, rejected "
                         f"{t['documents_rejected']}")
    write_rejects(plan, markers)
    write_json(plan.out / "stats.json", stats)
    write_text(plan.out / "config.yaml", _yaml(plan.config))
    if plan.cfg.output.report:
        from pipelines.steps.report import write_report

        write_report(plan.out, stats, manifest)
    write_json(plan.out / "timings.json", timings)
    manifest["files"] = output_files(plan.out)
    manifest["seal"] = manifest_seal(manifest)
    crash_point("manifest", 0)
    write_json(plan.out / "manifest.json", manifest, sync=True)
    if not is_url(plan.out):  # a store has the object once the upload returns
        fsync_path(plan.out)
    if not plan.cfg.output.keep_work:
        remove_tree(plan.work)
    release_output(plan.out)
    return manifest


UNHASHED = ("manifest.json", "timings.json")  # the record itself; the one file that varies


def output_files(out: Path) -> dict:
    """{name: {"bytes", "sha256"}} of every file of the run besides its shards, the manifest and
    timings.json (rejects.jsonl, stats.json, config.yaml, the report): ``verify`` checks them."""
    files = {}
    for path in sorted(as_path(out).iterdir()):
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


def write_rejects(plan: RunPlan, markers: list) -> None:
    """``rejects.jsonl``: every unit's rejects in unit order, read from one marker at a time
    (``markers``, their counts, say which units have any: only those are read again)."""
    from pipelines.steps.spill import load_marker

    with atomic_path(plan.out / "rejects.jsonl") as tmp, open(tmp, "w", encoding="utf-8") as f:
        for u, m in zip(plan.units, markers):
            if m["rejected"]:
                f.writelines(_json_line(r) for r in load_marker(plan.work, u.index)["rejects"])
