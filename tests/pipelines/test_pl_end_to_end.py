"""End to end on real corpora: stdlib sources + shipped English text, every accepted document
reconstructed token-exact from the shards against an independent tokenization."""
import json

import numpy as np
import pyarrow as pa
import pytest

import pipelines
from pipelines.config import load_run_config
from pipelines.steps.plan import resolve_sources
from pipelines.steps.read import stable_id
from pipelines.steps.verify import verify_dir
from tests.pipelines.conftest import (STDLIB, base_overrides, english_records, file_bytes,
                                      segments_by_doc, write_jsonl)

TREE = "{stdlib}/json"


def _expected(tokenizer, tmp_path, overrides):
    """doc_id -> independent token ids, for every accepted document of the run."""
    cfg = load_run_config(None, overrides)
    want = {}
    for src in resolve_sources(cfg.input):
        if src.format == "files":
            raw = open(src.path, "rb").read()
            if raw:
                want[stable_id(src.key, 0)] = raw.decode()
        else:
            for n, rec in enumerate(english_records(60)):
                want[n] = rec["text"]
    return {d: np.array(tokenizer.encode(t, add_special_tokens=False).ids + [50256])
            for d, t in want.items()}


@pytest.fixture()
def corpus(tmp_path):
    recs = [{"n": i, "text": r["text"]} for i, r in enumerate(english_records(60))]
    return write_jsonl(tmp_path / "en.jsonl.zst", recs, "zst")


@pytest.mark.parametrize("extra", [
    {}, {"pack.algorithm": "concat"}, {"pack.window_tokens": 4096},
    {"tokenizer.batch_bytes": 3000, "input.unit_bytes": 20000},
    {"pack.algorithm": "ffd", "output.compression": "none"},
])
def test_every_document_reconstructed_token_exact(tokenizer, tmp_path, corpus, extra):
    ov = base_overrides(tmp_path / "out", str(corpus), TREE, **{"input.id_field": "n",
                        "input.include": "'*.py'", **extra})
    result = pipelines.run(None, ov)
    out = tmp_path / "out"
    assert result["status"] == "complete"
    assert verify_dir(out)[0] == []
    got = segments_by_doc(out)
    want = _expected(tokenizer, tmp_path, ov)
    assert set(got) == set(want)
    for d in want:
        np.testing.assert_array_equal(got[d], want[d], err_msg=f"doc {d}")
    m = result["manifest"]
    t = m["totals"]
    assert t["tokens_in"] == t["tokens_out"] == sum(v.size for v in want.values())
    assert t["documents_accepted"] == len(want) and all(m["checks"].values())
    assert t["documents_read"] == t["documents_accepted"] + t["documents_rejected"]
    assert t["sequences"] >= t["lower_bound"]
    if not extra:
        longer = sum(v.size > 256 for v in want.values())
        assert t["documents_truncated"] == longer  # Best-fit: only documents longer than L
    assert not (out / "_work").exists()


def test_two_runs_identical_and_rerun_changes_nothing(tmp_path, corpus):
    outs = []
    for name in ("a", "b"):
        ov = base_overrides(tmp_path / name, str(corpus), TREE,
                            **{"output.report": "true", "input.include": "'*.py'"})
        pipelines.run(None, ov)
        outs.append(tmp_path / name)
    a, b = (file_bytes(o, skip=("timings.json", "manifest.json", "config.yaml", "report.html"))
            for o in outs)
    assert a == b and any(k.endswith(".arrow") for k in a)
    report = (outs[0] / "report.html").read_text()
    assert report.count("<svg") == 4 and "Truncated documents by length" in report
    ma, mb = (json.loads((o / "manifest.json").read_text()) for o in outs)
    assert ma["run_fingerprint"] == mb["run_fingerprint"]  # where it is written is no part
    for m in (ma, mb):
        m["config"]["output"].pop("dir")
        m.pop("seal")  # the manifest's hash, and those of the files that name output.dir:
        for name in ("config.yaml", "report.html"):
            m["files"].pop(name)
    assert ma == mb
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in outs[0].iterdir()}
    again = pipelines.run(None, base_overrides(outs[0], str(corpus), TREE, **{
        "output.report": "true", "input.include": "'*.py'"}))
    assert again["status"] == "already complete"
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in outs[0].iterdir()} == before


def test_worker_threads_do_not_change_the_bytes(tmp_path, corpus):
    """Many small units and batches, encoded by 1 or 3 threads: the same files, byte for byte."""
    outs = []
    for workers in (1, 3):
        out = tmp_path / f"w{workers}"
        pipelines.run(None, base_overrides(out, str(corpus), TREE, **{
            "input.include": "'*.py'", "tokenizer.batch_bytes": 3000, "input.unit_bytes": 20000,
            "local.workers": workers}))
        outs.append(out)
    a, b = (file_bytes(o, skip=("timings.json", "manifest.json", "config.yaml")) for o in outs)
    assert a == b and sum(k.endswith(".arrow") for k in a) > 1
    ma, mb = (json.loads((o / "manifest.json").read_text()) for o in outs)
    assert ma["totals"] == mb["totals"] and ma["shards"] == mb["shards"]


def test_verify_catches_a_flipped_byte(tmp_path, corpus):
    out = tmp_path / "out"
    pipelines.run(None, base_overrides(out, str(corpus)))
    shard = sorted(out.glob("shard-*.arrow"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    problems, _ = verify_dir(out)
    assert any("sha256 mismatch" in p and shard.name in p for p in problems)
    from pipelines.cli import main

    assert main(["verify", str(out)]) == 1


def test_verify_catches_a_missing_shard_and_bad_totals(tmp_path, corpus):
    out = tmp_path / "out"
    pipelines.run(None, base_overrides(out, str(corpus)))
    sorted(out.glob("shard-*.arrow"))[-1].unlink()
    assert any("missing" in p for p in verify_dir(out)[0])


def test_pyarrow_and_datasets_open_a_shard(tmp_path, corpus):
    out = tmp_path / "out"
    pipelines.run(None, base_overrides(out, str(corpus)))
    shard = sorted(out.glob("shard-*.arrow"))[0]
    with pa.memory_map(str(shard)) as src:
        table = pa.ipc.open_file(src).read_all()
    assert table.column_names == ["input_ids", "doc_lens", "doc_ids", "chunk_index"]
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset("arrow", data_files=str(shard), split="train",
                               cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == table.num_rows
    row = ds[0]
    assert sum(row["doc_lens"]) == len(row["input_ids"]) <= 256
    assert row["input_ids"] == table.column("input_ids")[0].as_py()


def test_torch_dataset_view_of_a_shard(tmp_path, corpus):
    torch = pytest.importorskip("torch")
    from pipelines.infra.shard_format import open_shard

    out = tmp_path / "out"
    pipelines.run(None, base_overrides(out, str(corpus)))
    table = open_shard(sorted(out.glob("shard-*.arrow"))[0])

    class Rows(torch.utils.data.Dataset):  # the minimal wrapper a training script writes
        def __len__(self):
            return table.num_rows

        def __getitem__(self, i):
            return torch.tensor(table.column("input_ids")[i].values.to_numpy())

    loader = torch.utils.data.DataLoader(Rows(), batch_size=None)
    first = next(iter(loader))
    assert first.dtype == torch.int32 and 0 < first.numel() <= 256


def test_library_entry_point_takes_a_config_object(tmp_path, corpus):
    cfg = load_run_config(None, base_overrides(tmp_path / "o", str(corpus)))
    assert pipelines.run(cfg)["manifest"]["totals"]["documents_accepted"] == 60


def test_stdlib_is_found(tmp_path):
    assert (STDLIB / "json" / "__init__.py").is_file()


def test_report_command_rebuilds_the_html_and_writes_pngs_on_request(tmp_path, corpus):
    from pipelines.cli import main

    out = tmp_path / "r"
    pipelines.run(None, base_overrides(out, str(corpus), **{"output.report": "true"}))
    assert not list(out.glob("*.png"))  # a run writes the charts inline only
    (out / "report.html").unlink()
    assert main(["report", str(out), "--png"]) == 0
    report = (out / "report.html").read_text()
    for name in ("lengths.png", "truncation.png", "fill.png", "overhead.png"):
        assert (out / name).stat().st_size > 1000 and f'src="{name}"' in report
    assert report.count("<svg") == 4
