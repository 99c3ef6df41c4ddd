"""Verify step: recompute checksums and invariants of a finished output directory.

Returns a list of problems (empty = valid): missing or extra shards, sha256 mismatches, an
unreadable shard, a wrong schema, rows over seq_len, sum(doc_lens) != len(input_ids), per-row
list lengths that disagree, record batches that differ from the manifest's ``batch_rows`` (the
streaming reader plans its reads from them), and totals that differ from the manifest.
Vectorized per shard.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from pipelines.infra.errors import OutputError
from pipelines.infra.manifest import load_manifest, manifest_seal
from pipelines.infra.shard_format import SCHEMA, list_shards
from pipelines.infra.hashing import sha256_file
from pipelines.infra.storage.paths import UrlPath, as_path
from pipelines.infra.storage.reading import open_input



def _offsets(col) -> np.ndarray:
    arr = col.combine_chunks()
    return np.asarray(arr.offsets, dtype=np.int64), np.asarray(arr.values)


def check_table(table, seq_len: int, name: str) -> tuple[list[str], int]:
    problems = []
    if not table.schema.remove_metadata().equals(SCHEMA.remove_metadata()):
        return [f"{name}: schema {table.schema} is not the fewtrunc schema"], 0
    ids_off, _ = _offsets(table.column("input_ids"))
    lens_off, lens = _offsets(table.column("doc_lens"))
    ids_len = np.diff(ids_off)
    if (ids_len > seq_len).any():
        r = int(np.flatnonzero(ids_len > seq_len)[0])
        problems.append(f"{name}: row {r} has {int(ids_len[r])} tokens > seq_len {seq_len}")
    for col in ("doc_ids", "chunk_index"):
        off, _ = _offsets(table.column(col))
        if not np.array_equal(off - off[0], lens_off - lens_off[0]):
            problems.append(f"{name}: {col} and doc_lens disagree in length")
    seg = np.diff(lens_off)
    if (seg < 1).any() or (lens < 1).any():
        problems.append(f"{name}: a row or document segment is empty")
    else:
        sums = np.add.reduceat(lens.astype(np.int64), lens_off[:-1] - lens_off[0]) if seg.size \
            else np.zeros(0, np.int64)
        bad = np.flatnonzero(sums != ids_len)
        if bad.size:
            problems.append(f"{name}: row {int(bad[0])}: sum(doc_lens) = {int(sums[bad[0]])} "
                            f"!= len(input_ids) = {int(ids_len[bad[0]])}")
    return problems, int(ids_len.sum())


def verify_dir(directory) -> tuple[list[str], dict]:
    out = as_path(directory)
    mpath = out / "manifest.json"
    if not mpath.is_file():
        return [f"{mpath}: no manifest (the run is not finished, or this is not a fewtrunc "
                "output directory)"], {}
    try:
        manifest = load_manifest(out)
        seq_len = int(manifest["config"]["pack"]["seq_len"])
    except OutputError as exc:
        return [str(exc)], {}
    except (KeyError, TypeError, ValueError):
        return [f"{mpath}: not a fewtrunc manifest (no config.pack.seq_len)"], {}
    problems: list[str] = []
    listed = [s["file"] for s in manifest["shards"]]
    on_disk = [p.name for p in list_shards(out)]
    if listed != on_disk:
        missing = sorted(set(listed) - set(on_disk))
        extra = sorted(set(on_disk) - set(listed))
        problems.append(f"shards differ from the manifest: missing {missing}, extra {extra}")
    rows = tokens = segments = firsts = 0
    for entry in manifest["shards"]:
        path = out / entry["file"]
        if not path.is_file():
            continue
        # a shard on a store is downloaded once, for its hash and its table
        data = path.read_bytes() if isinstance(path, UrlPath) else None
        digest = sha256_file(path) if data is None else hashlib.sha256(data).hexdigest()
        if digest != entry["sha256"]:
            problems.append(f"{entry['file']}: sha256 mismatch (the file changed after the run)")
        try:
            table, per_batch = _read_shard(path, data)
        except Exception as exc:  # a corrupt file raises many pyarrow types
            problems.append(f"{entry['file']}: unreadable: {exc}")
            continue
        p, t = check_table(table, seq_len, entry["file"])
        problems += p + _check_batches(entry, per_batch)
        if table.num_rows != entry["rows"] or t != entry["tokens"]:
            problems.append(f"{entry['file']}: {table.num_rows} rows / {t} tokens, manifest "
                            f"says {entry['rows']} / {entry['tokens']}")
        rows, tokens = rows + table.num_rows, tokens + t
        chunk = table.column("chunk_index").combine_chunks().values
        segments += len(chunk)
        firsts += int((np.asarray(chunk) == 0).sum())
    totals = manifest["totals"]
    problems += _check_files(out, manifest)
    problems += _rederived(out, manifest, segments, firsts)
    if rows != totals.get("sequences"):
        problems.append(f"{rows} rows in shards, manifest totals say {totals['sequences']}")
    dropped = totals.get("tokens_dropped", 0)  # duplicates left out (absent: older manifests)
    if tokens != totals.get("tokens_out") or not isinstance(dropped, int) or \
            totals.get("tokens_in") != (totals.get("tokens_out") or 0) + dropped:
        problems.append(f"{tokens} tokens in shards; manifest tokens_out "
                        f"{totals.get('tokens_out')}, tokens_in {totals.get('tokens_in')}, "
                        f"tokens_dropped {dropped}")
    return problems, manifest


def _read_shard(path, data: bytes | None) -> tuple[pa.Table, list[int]]:
    """A shard's table (memory-mapped, or from ``data``) and the rows of each of its record
    batches in file order, empty ones included."""
    reader = ipc.open_file(pa.memory_map(str(path), "r") if data is None else pa.py_buffer(data))
    batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
    return pa.Table.from_batches(batches, reader.schema), [b.num_rows for b in batches]


def _check_batches(entry: dict, per_batch: list[int]) -> list[str]:
    """The shard's record batches against its entry's ``batch_rows`` (absent in older runs)."""
    if "batch_rows" not in entry:
        return []
    recorded, name = entry["batch_rows"], entry["file"]
    if not isinstance(recorded, list) or not all(type(n) is int for n in recorded):
        return [f"{name}: the manifest's batch_rows is not a list of row counts"]
    if len(recorded) != len(per_batch):
        return [f"{name}: {len(per_batch)} record batches, the manifest's batch_rows lists "
                f"{len(recorded)}"]
    bad = [b for b, (n, m) in enumerate(zip(per_batch, recorded)) if n != m]
    if bad:
        return [f"{name}: record batch {bad[0]} has {per_batch[bad[0]]} rows, the manifest's "
                f"batch_rows says {recorded[bad[0]]}"]
    return []


def _check_files(out: Path, manifest: dict) -> list[str]:
    problems = []
    if "seal" not in manifest:
        problems.append("manifest.json has no seal (not written by this fewtrunc, or edited)")
    elif manifest["seal"] != manifest_seal(manifest):
        problems.append("manifest.json was edited after the run (its seal differs)")
    for name, entry in manifest.get("files", {}).items():
        path = out / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{name}: sha256 mismatch (the file changed after the run)")
    return problems


def _rederived(out: Path, manifest: dict, segments: int, firsts: int) -> list[str]:
    """Totals that the shards and rejects.jsonl determine, compared with the manifest's."""
    t = manifest["totals"]
    problems = []
    if segments != t.get("chunks"):
        problems.append(f"{segments} document segments in shards, manifest chunks {t.get('chunks')}")
    if firsts != t.get("documents_accepted"):
        problems.append(f"{firsts} documents start in the shards (chunk 0), manifest "
                        f"documents_accepted {t.get('documents_accepted')}")
    rejects = out / "rejects.jsonl"
    if rejects.is_file():
        with open_input(rejects) as f:
            n = sum(1 for _ in f)
        if n != t.get("documents_rejected"):
            problems.append(f"{n} lines in rejects.jsonl, manifest documents_rejected "
                            f"{t.get('documents_rejected')}")
    if t.get("documents_read") != (t.get("documents_accepted") or 0) + (
            t.get("documents_rejected") or 0):
        problems.append("manifest documents_read != documents_accepted + documents_rejected")
    return problems
