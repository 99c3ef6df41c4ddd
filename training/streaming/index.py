"""``ShardIndex``: the rows of every shard and record batch, known at start-up from the manifest
alone.

Start-up is one listing of the directory and one read of ``manifest.json``: each shard entry
records ``batch_rows`` (the rows of each record batch, written by the pipeline), so nothing is
decompressed and no shard is opened, whatever the corpus size. Shards whose entry lacks the
counts (a run from an older fewtrunc), and directories without a manifest, fall back to the
shards' Arrow footers and record batch headers: a few small reads per shard and per batch,
still nothing decompressed, with a warning that says so.

The index checks the directory against its manifest before any training: a shard missing or not
listed, a size that differs, or counts that do not add up end in one ``ShardError`` line.
``fingerprint`` names the data set (the run's fingerprint, every shard's name, size, sha256 and
batch rows): a saved reader state is refused on another data set.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

import numpy as np

from pipelines.infra.errors import ConfigError, OutputError
from pipelines.infra.manifest import SHARD_FILE, load_manifest, manifest_seal
from pipelines.infra.storage.listing import list_files
from pipelines.infra.storage.urls import join
from training.shard_checks import ShardError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shard:
    name: str
    path: str  # local path or URL
    bytes: int
    sha256: str | None  # None without a manifest
    batch_rows: np.ndarray  # int64 rows of each record batch, in file order


class ShardIndex:
    """Every shard of a directory and its record batches ("blocks"), numbered globally.

    - ``rows``: total rows; global row ``i`` is row ``i - block_start[b]`` of block ``b``, blocks
      in shard order then batch order (the same numbering as ``training.data.ShardDataset``).
    - ``block_shard``, ``block_batch``, ``block_rows``, ``block_start``: int64 arrays, one entry
      per non-empty record batch; ``block_of(rows)`` maps global rows to blocks.
    - ``shard_bytes``: the shards' total size (what one epoch should read, about once).
    - ``fingerprint``: the data set's identity; ``seq_len``: the run's ``pack.seq_len`` or None.
    - ``scanned``: how many shards had their counts read from their files (0 with a current
      manifest).
    """

    def __init__(self, location: str, shards: list[Shard], run_fingerprint: str | None,
                 seq_len: int | None = None, scanned: int = 0):
        if not shards:
            raise ConfigError(f"no shards (shard-*.arrow) in {location!r}: build them first, e.g. "
                              "`fewtrunc run configs/demo.yaml`, and point data.dir at its output")
        self.location, self.shards, self.seq_len, self.scanned = location, shards, seq_len, scanned
        counts = [s.batch_rows for s in shards]
        shard_of = np.repeat(np.arange(len(shards)), [c.size for c in counts])
        batch_of = np.concatenate([np.arange(c.size) for c in counts])
        rows = np.concatenate(counts).astype(np.int64)
        keep = rows > 0
        self.block_shard, self.block_batch, self.block_rows = shard_of[keep], batch_of[keep], rows[keep]
        self.block_start = np.concatenate([[0], np.cumsum(self.block_rows)]).astype(np.int64)
        self.rows = int(self.block_start[-1])
        self.shard_bytes = sum(s.bytes for s in shards)
        body = [run_fingerprint, [[s.name, s.bytes, s.sha256, s.batch_rows.tolist()] for s in shards]]
        self.fingerprint = hashlib.sha256(json.dumps(body).encode()).hexdigest()[:32]

    @property
    def blocks(self) -> int:
        return int(self.block_rows.size)

    def block_of(self, rows: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.block_start, rows, side="right") - 1

    @classmethod
    def open(cls, location) -> "ShardIndex":
        """The index of the shards at ``location`` (a directory, ``s3://`` or ``gs://`` prefix)."""
        from training.streaming.blocks import BlockReader

        location = str(location).rstrip("/") or "/"
        listed = {}
        for path, st in list_files(location, recursive=False):
            name = path.rsplit("/", 1)[-1]
            if SHARD_FILE.fullmatch(name) or name == "manifest.json":
                listed[name] = (path, st.size)
        manifest, run_fp, seq_len = None, None, None
        if "manifest.json" in listed:
            try:
                manifest = load_manifest(location)
            except OutputError as exc:
                raise ShardError(join(location, "manifest.json"), str(exc).split(": ", 1)[-1]) from None
            if "seal" in manifest and manifest["seal"] != manifest_seal(manifest):
                raise ShardError(join(location, "manifest.json"), "was edited after the run (its "
                                 "seal differs): its shard counts cannot be trusted; rebuild the run")
            run_fp = manifest["run_fingerprint"]
            seq_len = (manifest.get("config", {}).get("pack") or {}).get("seq_len")
            entries = manifest["shards"]
            _check_listing(location, [e["file"] for e in entries],
                           sorted(n for n in listed if n != "manifest.json"))
        else:
            entries = [{"file": n, "bytes": listed[n][1]} for n in sorted(listed)]
        paths = [listed[e["file"]][0] for e in entries]
        for e, path in zip(entries, paths):
            if listed[e["file"]][1] != e["bytes"]:
                raise ShardError(path, f"has {listed[e['file']][1]:,} bytes, the manifest records "
                                       f"{e['bytes']:,}: the shards are not the ones of this run")
        missing = [i for i, e in enumerate(entries) if not isinstance(e.get("batch_rows"), list)]
        scanned = {}
        if missing:
            why = "has no manifest.json" if manifest is None else "has a manifest without batch_rows"
            log.warning("%s %s: reading the Arrow footers and batch headers of %d shards to count "
                        "their rows (small reads, nothing decompressed); a run of this fewtrunc "
                        "records them in the manifest", location, why, len(missing))
            reader = BlockReader([paths[i] for i in missing], [entries[i]["bytes"] for i in missing])
            try:
                scanned = {i: reader.scan_rows(j) for j, i in enumerate(missing)}
            finally:
                reader.close()
        shards = []
        for i, (e, path) in enumerate(zip(entries, paths)):
            rows = scanned[i] if i in scanned else _counts(e["batch_rows"], path)
            if (rows < 0).any():
                raise ShardError(path, "a record batch with a negative row count")
            if "rows" in e and int(rows.sum()) != e["rows"]:
                raise ShardError(path, f"its record batches hold {int(rows.sum()):,} rows, the "
                                       f"manifest records {e['rows']:,}")
            shards.append(Shard(e["file"], path, int(e["bytes"]), e.get("sha256"), rows))
        return cls(location, shards, run_fp, seq_len, len(missing))


def _counts(value: list, path: str) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise ShardError(path, "the manifest's batch_rows is not a list of row counts") from None


def _check_listing(location: str, in_manifest: list[str], on_store: list[str]) -> None:
    if in_manifest != on_store:
        missing = sorted(set(in_manifest) - set(on_store))
        extra = sorted(set(on_store) - set(in_manifest))
        raise ShardError(join(location, "manifest.json"), f"the shards differ from the manifest: "
                                                          f"missing {missing[:5]}, not listed {extra[:5]}")
