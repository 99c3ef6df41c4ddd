"""The end of a run: rejects, stats, config, report, timings, and the manifest last (sealed,
fsynced); the work directory goes unless ``output.keep_work``. All of it holding the output lock,
which the run's ``output_lock.holding`` releases once this returns."""
from __future__ import annotations

import json
from pathlib import Path

from pipelines.infra.atomic import atomic_path, fsync_path, write_json, write_text
from pipelines.infra.errors import FatalError
from pipelines.faults import crash_point
from pipelines.markers import UNIT, read_marker
from pipelines.run_plan import RunPlan
from pipelines.steps.manifest import build_manifest
from pipelines.infra.manifest import SHARD_FILE, manifest_seal
from pipelines.infra.hashing import sha256_file
from pipelines.infra.storage.paths import as_path
from pipelines.work_dir import remove_work


def finalize_stats(plan: RunPlan, stats: dict, n_rows: int, markers, shards: list,
                   timings: dict) -> dict:
    """Write rejects, stats, report and, last, the manifest, from the run's stats and row count
    (merged from the partitions' summaries); refuses a run whose tokens do not add up."""
    manifest = build_manifest(config=plan.config, fingerprint=plan.fingerprint,
                              tokenizer=plan.tokenizer_info, inputs=plan.inputs, shards=shards,
                              markers=markers, stats=stats)
    duplicates = count_duplicates(manifest, plan)
    t = manifest["totals"]
    if not all(manifest["checks"].values()) or t["sequences"] != n_rows:
        raise FatalError(f"conservation broken: {t['tokens_in']} tokens in, {t['tokens_out']} "
                         f"out, {t['sequences']} rows of {n_rows}; documents read "
                         f"{t['documents_read']}, accepted {t['documents_accepted']}, rejected "
                         f"{t['documents_rejected']}")
    write_rejects(plan, markers, duplicates)
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
    if plan.out_location.needs_fsync:  # a store has the object once the upload returns
        fsync_path(plan.out)
    if not plan.cfg.output.keep_work:
        remove_work(plan.work)  # only what this run wrote: anything else stays, said in a line
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
    """config.yaml: the plan's config is redacted already; again here, as every file is."""
    import yaml

    from pipelines.infra.storage.redact import redact_tree

    return yaml.safe_dump(redact_tree(config), sort_keys=False)


def _json_line(record: dict) -> str:
    """A line of rejects.jsonl: its ``file`` is the URL the source was read with (a presigned
    URL's signature, user info), so every string is redacted."""
    from pipelines.infra.storage.redact import redact_tree

    record = redact_tree(record)
    line = json.dumps(record, sort_keys=True, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:  # a file name that is not UTF-8: keep it as \udcXX escapes
        line = json.dumps(record, sort_keys=True)
    return line + "\n"


def count_duplicates(manifest: dict, plan: RunPlan) -> int:
    """Move the documents left out as duplicate ids (``pipelines/duplicates.py``, counted by the
    partition layout) from accepted to rejected, record their tokens as deliberately dropped,
    and make the conservation checks exact with them: tokens in = out + dropped, documents read
    = accepted + rejected. Returns how many there are."""
    from pipelines.partition_layout import PARTITIONS, read_json

    layout = read_json(as_path(plan.work) / PARTITIONS) or {}
    found = layout.get("duplicates") or {"documents": 0, "tokens": 0}
    t = manifest["totals"]
    t["documents_accepted"] -= found["documents"]
    t["documents_rejected"] += found["documents"]
    t["documents_duplicate"] = found["documents"]
    t["tokens_dropped"] = found["tokens"]
    manifest["checks"]["token_conservation"] = \
        t["tokens_in"] == t["tokens_out"] + t["tokens_dropped"]
    manifest["checks"]["documents_conserved"] = \
        t["documents_read"] == t["documents_accepted"] + t["documents_rejected"]
    return found["documents"]


def write_rejects(plan: RunPlan, markers: list, duplicates: int = 0) -> None:
    """``rejects.jsonl``: every unit's rejects in unit order, read from one marker at a time
    (``markers``, their counts, say which units have any: only those are read again), then the
    duplicate ids left out, in input order."""
    from pipelines.duplicates import REJECTS
    from pipelines.infra.storage.reading import open_input

    with atomic_path(plan.out / "rejects.jsonl") as tmp, open(tmp, "w", encoding="utf-8") as f:
        for u, m in zip(plan.units, markers):
            if m["rejected"]:
                rejects = read_marker(plan.work, UNIT, u.index)["rejects"]
                f.writelines(_json_line(r) for r in rejects)
        if duplicates:
            with open_input(str(as_path(plan.work) / REJECTS)) as lines:
                f.writelines(_json_line(json.loads(line)) for line in lines)
