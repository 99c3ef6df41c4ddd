"""engine=local, ray and beam on the same real corpus: byte-identical shards, equal manifests.

The corpus: the shipped English text (plus bad records, so rejects travel through every engine)
and three standard-library packages as a file tree, cut into several units and many small
batches so that units and batches really are reordered by Ray and Beam.
"""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import pipelines
from pipelines import api
from pipelines.run_plan import ENGINE_KEYS
from tests.pipelines.conftest import english_records, write_jsonl

SKIP = ("timings.json", "manifest.json", "config.yaml")


def make_corpus(root: Path) -> list[str]:
    recs = [{"text": r["text"]} for r in english_records(120)]
    path = write_jsonl(root / "en.jsonl.zst", recs, "zst")
    bad = root / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": \nnot json\n{"text": ""}\n{"text": 7}\n'
                   '{"other": 1}\n{"text": "last one"}\n', encoding="utf-8")
    return [str(path), str(bad), "{stdlib}/email", "{stdlib}/json", "{stdlib}/asyncio"]


def local_reference(root: Path) -> tuple[Path, list[str], Path]:
    """(root, the corpus made in ``root``, the local engine's output of it: ``root/local``)."""
    paths = make_corpus(root)
    pipelines.run(job_config(paths, root / "local"))
    return root, paths, root / "local"


def job_config(paths: list[str], out: Path, **sections) -> dict:
    cfg = {
        "input": {"paths": paths, "include": ["*.py"], "unit_bytes": 300_000},
        "tokenizer": {"batch_bytes": 40_000},
        "pack": {"seq_len": 512},
        "output": {"dir": str(out), "rows_per_shard": 150, "report": False},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            cfg.setdefault(key, {}).update(value)
        else:
            cfg[key] = value
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def comparable_manifest(out: Path) -> dict:
    m = json.loads((Path(out) / "manifest.json").read_text())
    m = copy.deepcopy(m)
    for key in ENGINE_KEYS:
        m["config"].pop(key, None)
    m["config"]["output"].pop("dir", None)
    m.pop("run_fingerprint", None)  # a hash of the config, engine and directory included
    m.pop("seal", None)  # the manifest's own hash, and config.yaml's, which names the engine
    m.get("files", {}).pop("config.yaml", None)
    return m


def output_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(out).iterdir())
            if p.is_file() and p.name not in SKIP}


def assert_same_output(got: Path, want: Path) -> None:
    g, w = output_files(got), output_files(want)
    assert sorted(g) == sorted(w)
    assert any(name.startswith("shard-") for name in w)
    for name in w:
        assert g[name] == w[name], f"{name} differs"
    assert comparable_manifest(got) == comparable_manifest(want)
    assert not list(Path(got).glob(".*tmp*")), "temporary files left behind"
    assert not (Path(got) / "_work").exists()


def loopback_env() -> dict:
    from tests.ray_cluster import loopback_env as env

    e = env()
    for key in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
        e.pop(key, None)
    return e


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("engines")
    paths = make_corpus(root)
    out = root / "local"
    result = pipelines.run(job_config(paths, out))
    assert result["status"] == "complete"
    m = result["manifest"]
    assert len(m["shards"]) >= 3 and m["inputs"]["units"] >= 3
    assert m["totals"]["documents_rejected"] >= 4
    return root, paths, out


@pytest.mark.slow
def test_beam_direct_runner_multiprocess_is_byte_identical(reference):
    """Each of 2 worker processes streams whole units, then writes shards."""
    root, paths, want = reference
    out = root / "beam"
    cfg = job_config(paths, out, engine="beam", beam={"num_workers": 2})
    result = pipelines.run(cfg)
    assert result["status"] == "complete"
    assert result["manifest"]["config"]["engine"] == "beam"
    assert_same_output(out, want)
    again = pipelines.run(cfg)  # a finished run is recognized, nothing rewritten
    assert again["status"] == "already complete"


@pytest.mark.slow
def test_beam_retried_bundles_leave_no_duplicates(reference):
    """Every bundle executed twice (as a retry would): same shards, no extra or partial files."""
    root, paths, want = reference
    out = root / "beam-repeat"
    cfg = job_config(paths, out, engine="beam", output={"keep_work": True})
    api.run(cfg, engine_args=["--direct_runner_bundle_repeat=1"])
    g, w = output_files(out), output_files(want)
    shards = sorted(n for n in w if n.startswith("shard-"))
    assert sorted(n for n in g if n.startswith("shard-")) == shards
    for name in shards + ["stats.json", "rejects.jsonl"]:
        assert g[name] == w[name], name
    assert not list(out.glob(".*tmp*")) and not list((out / "_work").glob("*tmp*"))


@pytest.mark.slow
def test_ray_empty_address_starts_private_local_ray(reference):
    """``ray.address`` empty: the run starts (and stops) its own Ray on 127.0.0.1."""
    root, paths, want = reference
    out = root / "ray-local"
    config = write_config(root / "ray-local.yaml", job_config(paths, out))
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run", str(config), "engine=ray",
         "ray.num_cpus=2", "--quiet"],
        env=loopback_env(), capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_output(out, want)
    assert json.loads((out / "manifest.json").read_text())["config"]["engine"] == "ray"
