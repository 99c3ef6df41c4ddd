"""A finished run's ``manifest.json`` as every reader takes it: loaded with its shape checked
(shard entries are plain shard names, so nothing opens files outside the run directory), and its
seal (a sha256 over everything else, so an edit after the run shows). The training side reads
shards through it; what a manifest holds is written by ``pipelines/steps/manifest.py``."""
from __future__ import annotations

import hashlib
import json
import re

from pipelines.infra.errors import OutputError
from pipelines.infra.storage.paths import as_path

SHARD_FILE = re.compile(r"shard-[0-9]{5,}\.arrow")  # a name inside the run directory, no path
_KEYS = {"run_fingerprint": str, "config": dict, "shards": list, "totals": dict}


def manifest_seal(manifest: dict) -> str:
    """sha256 of the manifest without its seal: any edit after the run shows in ``verify``."""
    body = {k: v for k, v in manifest.items() if k != "seal"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def load_manifest(directory) -> dict:
    """The manifest of a finished run, or ``OutputError`` naming what is wrong with it: not JSON,
    a key missing, or a shard entry that is not a plain shard name (``../x`` would make verify
    and inspect open files outside the run directory)."""
    path = as_path(directory) / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OutputError(f"{path}: unreadable manifest ({exc}); the run's record is damaged: "
                          "delete the output directory and run again") from None
    if not isinstance(manifest, dict):
        raise OutputError(f"{path}: not a fewtrunc manifest (a JSON {type(manifest).__name__})")
    for key, kind in _KEYS.items():
        if not isinstance(manifest.get(key), kind):
            raise OutputError(f"{path}: not a fewtrunc manifest ({key!r} missing or not a "
                              f"{kind.__name__})")
    for entry in manifest["shards"]:
        name = entry.get("file") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not SHARD_FILE.fullmatch(name):
            raise OutputError(f"{path}: shard entry {name!r} is not a shard file name inside "
                              "the run directory")
        for key in ("rows", "tokens", "bytes", "sha256"):
            if key not in entry:
                raise OutputError(f"{path}: shard entry {name!r} has no {key!r}")
    files = manifest.get("files", {})
    if not isinstance(files, dict):
        raise OutputError(f"{path}: not a fewtrunc manifest ('files' is not an object)")
    for name, entry in files.items():
        if "/" in name or "\\" in name or name.startswith(".") or not isinstance(entry, dict) \
                or not {"bytes", "sha256"} <= set(entry):
            raise OutputError(f"{path}: file entry {name!r} is not a file name inside the run "
                              "directory with its bytes and sha256")
    return manifest
