"""Damaged shards end in one line naming the file: `fewtrunc train`, `score`, `inspect --row` and
``training.hf``. Real runs of `fewtrunc run` are damaged three ways: bytes flipped inside a zstd
shard, a truncated shard, and an uncompressed shard whose offsets decrease."""
from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.ipc as ipc
import pytest

from pipelines.cli import main as cli
from pipelines.infra.errors import InputError
from training.data import ShardDataset
from training.shard_checks import ShardError

ROOT = Path(__file__).resolve().parents[2]
DAMAGES = ("flipped", "truncated", "bad_offsets")
COMMANDS = ("train", "score", "inspect")
SUBPROCESS = {("flipped", "train"), ("truncated", "score"), ("bad_offsets", "inspect")}


def _run(out: Path, compression: str) -> Path:
    assert cli(["run", str(ROOT / "configs" / "jsonl.yaml"), "input.max_documents=6", "pack.seq_len=64",
                "output.rows_per_shard=32", f"output.compression={compression}", f"output.dir={out}"]) == 0
    return out


def _damage(run: Path, dest: Path, how: str) -> Path:
    """A copy of ``run`` whose shard-00001.arrow is damaged ``how``; returns the damaged file."""
    shutil.copytree(run, dest)
    shard = dest / "shard-00001.arrow"
    data = bytearray(shard.read_bytes())
    if how == "flipped":  # inside a zstd-compressed buffer (doc_ids) of the record batch
        for i in range(len(data) * 2 // 3, len(data) * 2 // 3 + 16):
            data[i] ^= 0xFF
    elif how == "truncated":
        data = data[: len(data) // 2]
    else:  # uncompressed: the offsets of input_ids, found by their bytes, decrease at row 3
        offsets = ipc.open_file(str(shard)).get_batch(0).column("input_ids").offsets.to_numpy()
        at = bytes(data).find(offsets.astype("<i4").tobytes())
        assert at > 0 and bytes(data).count(offsets.astype("<i4").tobytes()) == 1
        bad = offsets.astype("<i4").copy()
        bad[3] = bad[4] + 5
        data[at:at + bad.nbytes] = bad.tobytes()
    shard.write_bytes(bytes(data))
    return shard


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("damaged")
    zstd, plain = _run(root / "zstd", "zstd"), _run(root / "none", "none")
    damaged = {"flipped": _damage(zstd, root / "flipped", "flipped"),
               "truncated": _damage(zstd, root / "truncated", "truncated"),
               "bad_offsets": _damage(plain, root / "bad_offsets", "bad_offsets")}
    return root, zstd, damaged


@pytest.fixture(scope="module")
def cli_results(runs, demo_config, tiny):
    """Every command on every damaged run: one per damage as a subprocess (started together; they
    only read), the others in this process (the same ``main``, its stderr captured)."""
    root, zstd, damaged = runs
    trained = root / "trained"
    assert cli(["train", demo_config, f"data.dir={zstd}", f"output.dir={trained}", *tiny, "train.max_steps=1"]) == 0
    rows_before = ipc.open_file(str(zstd / "shard-00000.arrow")).read_all().num_rows
    procs, results = {}, {}
    for how, shard in damaged.items():
        data = shard.parent
        argv = {"train": ["train", demo_config, f"data.dir={data}", f"output.dir={root / ('t-' + how)}", *tiny],
                "score": ["score", demo_config, f"data.dir={zstd}", f"output.dir={trained}", *tiny,
                          f"score.data_dir={data}", f"score.out={root / ('s-' + how + '.arrow')}"],
                "inspect": ["inspect", str(data), "--row", str(rows_before + 4)]}  # row 4 of the damaged shard
        for command, args in argv.items():
            if (how, command) in SUBPROCESS:
                procs[how, command] = subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args], cwd=ROOT,
                                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            else:
                err = io.StringIO()
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    code = cli(args)
                results[how, command] = code, err.getvalue()
    for key, p in procs.items():
        out, err = p.communicate(timeout=300)
        results[key] = p.returncode, err
    return results


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_shard_is_one_line_naming_it(cli_results, runs, how, command):
    code, err = cli_results[how, command]
    shard = runs[2][how]
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"fewtrunc {command}: error: {shard}"), lines[0]
    reason = {"flipped": "cannot be decoded (ZSTD", "truncated": "not a readable Arrow IPC file",
              "bad_offsets": "column 'input_ids': offsets decrease at row 3"}[how]
    assert reason in lines[0], lines[0]
    if how != "truncated":
        assert "(record batch 0)" in lines[0]


def test_nothing_is_trained_on_a_damaged_shard(cli_results, runs):
    root = runs[0]
    for how in DAMAGES:
        assert not (root / f"t-{how}" / "metrics.jsonl").exists()
        assert not (root / f"s-{how}.arrow").exists()


@pytest.mark.parametrize("how", DAMAGES)
def test_training_hf_rows_refuse_a_damaged_shard(runs, how):
    shard = runs[2][how]
    pytest.importorskip("datasets")
    from training.hf import shard_rows

    for kwargs in ({}, {"use_datasets": True}):
        with pytest.raises(ShardError) as err:
            shard_rows(shard.parent, **kwargs)
        assert str(err.value).startswith(str(shard)) and isinstance(err.value, InputError)
    with pytest.raises(ShardError, match="shard-00001.arrow"):
        shard_rows(str(shard.parent / "shard-*.arrow"))


def test_intact_runs_read_the_same_rows_as_arrow(runs):
    _, zstd, _ = runs
    ds = ShardDataset(zstd)
    table = [r for p in sorted(zstd.glob("shard-*.arrow")) for r in ipc.open_file(str(p)).read_all().to_pylist()]
    assert len(ds) == len(table)
    assert all(ds[i]["input_ids"].tolist() == table[i]["input_ids"] for i in range(len(ds)))
    assert ds.longest_row == max(len(r["input_ids"]) for r in table)
    assert ds.max_token_id == max(max(r["input_ids"]) for r in table)
    assert np.array_equal(ds[len(ds) - 1]["doc_lens"], table[-1]["doc_lens"])
