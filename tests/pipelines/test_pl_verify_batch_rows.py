"""``fewtrunc verify`` compares each shard's record batches with its manifest entry's
``batch_rows``: the streaming reader plans its ranged reads from those counts, so a manifest whose
counts were changed (and resealed, so the seal does not catch it) is damage, on a local disk and
on a store."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import pipelines
from pipelines.cli import main as cli_main
from pipelines.infra.manifest import manifest_seal
from pipelines.steps.verify import verify_dir
from tests.pipelines.object_stores import Store, gcs_server  # noqa: F401

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The demo job at seq_len 8192: record batches of 128 rows, two per shard of 256 rows."""
    out = tmp_path_factory.mktemp("batches") / "run"
    pipelines.run(str(DEMO), [f"output.dir={out}", "pack.seq_len=8192", "output.rows_per_shard=256",
                              "output.report=false"])
    return out


def _reseal(directory: Path, change) -> None:
    """Edit the manifest and seal it again, as a run of that content would have."""
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    manifest["seal"] = manifest_seal(manifest)
    path.write_text(json.dumps(manifest))


def test_a_normal_run_verifies_with_its_batch_rows(run, capsys):
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["shards"][0]["batch_rows"] == [128, 128]  # what the edits below rely on
    assert verify_dir(run)[0] == []
    assert cli_main(["verify", str(run)]) == 0
    assert capsys.readouterr().out.startswith("ok: ")


@pytest.mark.parametrize("counts, said", [
    ([100, 156], "shard-00000.arrow: record batch 0 has 128 rows, the manifest's batch_rows says 100"),
    ([256], "shard-00000.arrow: 2 record batches, the manifest's batch_rows lists 1"),
    ([128, "128"], "shard-00000.arrow: the manifest's batch_rows is not a list of row counts"),
])
def test_batch_rows_that_differ_from_the_shard_fail_verify(run, tmp_path, capsys, counts, said):
    out = tmp_path / "run"
    shutil.copytree(run, out)
    _reseal(out, lambda m: m["shards"][0].update(batch_rows=counts))  # rows still add up
    problems = verify_dir(out)[0]
    assert problems == [said]  # only this: the seal, the rows and the totals all still agree
    assert cli_main(["verify", str(out)]) == 1
    assert f"FAIL {said}" in capsys.readouterr().out


def _upload(directory: Path, url: str) -> str:
    from pipelines.infra.storage.filesystems import resolve

    for path in sorted(directory.iterdir()):
        loc = resolve(f"{url}/{path.name}")
        with loc.fs.open_output_stream(loc.path) as f:
            f.write(path.read_bytes())
    return url


def test_batch_rows_are_checked_on_a_store(run, gcs_server, monkeypatch, tmp_path):  # noqa: F811
    """On a store verify reads each shard's bytes once (another path than the memory map)."""
    for k, v in gcs_server.env.items():
        monkeypatch.setenv(k, v)
    store = Store(gcs_server)
    bad = tmp_path / "bad"
    shutil.copytree(run, bad)
    _reseal(bad, lambda m: m["shards"][2].update(batch_rows=[72, 128]))
    url = _upload(bad, store.url("bad"))
    assert verify_dir(url)[0] == ["shard-00002.arrow: record batch 0 has 128 rows, the "
                                  "manifest's batch_rows says 72"]
