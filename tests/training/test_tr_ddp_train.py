"""Data-parallel `fewtrunc train` launched for real (2 CPU processes, gloo): torchrun gives the
losses of 1 process step for step, each rank says what it trained on and every row is trained once
per epoch; a run resumes with another number of processes; a killed rank stops the others with a
line naming it (a plain launch, no torchrun agent to clean up) and the run resumes; a world size
that does not divide the batch is one line. The 1-process references run in this process."""
from __future__ import annotations

import json
import shutil

import numpy as np
import torch

from pipelines.cli import main as cli
from training.checkpoint import latest_checkpoint, list_checkpoints
from training.streaming import ShardIndex

from tests.training.conftest import build_shards, real_documents
from tests.training.ddp_runs import (TOLERANCE, losses, max_difference, metrics, plain_launch, torchrun,
                                     train_args, wait_for)


def _jsonl(path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def _same_choices(a, b) -> None:
    """The same rows, targets and drops at every step (integers: exact)."""
    keys = ("epoch", "rows", "tokens", "dropped_tokens", "dropped_rows", "dropped_examples")
    assert [[r[k] for k in keys] for r in metrics(a)] == [[r[k] for k in keys] for r in metrics(b)]


def test_two_processes_log_the_losses_of_one_and_train_every_row_once_per_epoch(shard_dir, tmp_path):
    extra = ["train.max_steps=24", "train.log_samples=true", "train.checkpoint_every=10"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert cli(train_args(shard_dir, one, *extra)) == 0
    run = torchrun(train_args(shard_dir, two, *extra))
    assert run.returncode == 0, run.stderr
    assert max_difference(losses(two), losses(one)) <= TOLERANCE
    _same_choices(two, one)
    # only rank 0 wrote: one line per step, its checkpoints
    assert [r["step"] for r in metrics(two)] == list(range(1, 25))
    assert [p.name for p in list_checkpoints(two)] == ["step-00000020.pt", "step-00000024.pt"]
    samples, single = _jsonl(two / "samples.jsonl"), _jsonl(one / "samples.jsonl")
    assert [s["step"] for s in samples] == list(range(1, 25))
    assert [s["rows"] for s in samples] == [s["rows"] for s in single]  # the same global batches
    assert all(s["ranks"] == [s["rows"]] for s in single)
    assert all(len(s["ranks"]) == 2 and s["ranks"][0] + s["ranks"][1] == s["rows"] for s in samples)
    # 85 rows, batch 4: epoch 0 is 21 full steps and one of 1 row, where rank 0 has nothing to train
    # on and still takes part
    n_rows = ShardIndex.open(shard_dir).rows
    epoch0 = [s for s, m in zip(samples, metrics(two)) if m["epoch"] == 0]
    assert len(epoch0) == -(-n_rows // 4) == 22
    assert sorted(sum((s["ranks"][0] + s["ranks"][1] for s in epoch0), [])) == list(range(n_rows))
    assert [len(r) for r in epoch0[-1]["ranks"]] == [0, 1]
    assert all(len(r) == 2 for s in epoch0[:-1] for r in s["ranks"])


def test_ent_with_dynamic_pruning_matches_one_process_and_resumes_with_one(shard_dir, tmp_path):
    extra = ["data.batch_size=8", "loss.kind=ent", "loss.ent.fraction=0.2", "loss.ent.warmup_steps=2",
             "pruning.enabled=true", "pruning.unit=document", "pruning.full_epochs=0", "pruning.keep_fraction=0.6",
             "train.checkpoint_every=6"]
    ref, run_dir = tmp_path / "one", tmp_path / "two"
    assert cli(train_args(shard_dir, ref, *extra, "train.max_steps=18")) == 0
    run = torchrun(train_args(shard_dir, run_dir, *extra, "train.max_steps=12"))
    assert run.returncode == 0, run.stderr
    assert {r["epoch"] for r in metrics(run_dir)} == {0, 1}  # EL2N scored by 2 ranks twice
    assert cli(train_args(shard_dir, run_dir, *extra, "train.max_steps=18")) == 0  # 2 -> 1 process
    assert max_difference(losses(run_dir), losses(ref)) <= TOLERANCE
    _same_choices(run_dir, ref)
    assert sum(r["dropped_tokens"] for r in metrics(ref)) > 0


def test_a_killed_rank_stops_the_other_naming_it_and_the_run_resumes(shard_dir, tmp_path):
    extra = ["loss.kind=loss_truncation", "loss.truncation.min_count=8", "loss.truncation.drop_fraction=0.25",
             "train.checkpoint_every=3", "train.dist_timeout_s=8"]
    out = tmp_path / "run"
    procs = plain_launch(train_args(shard_dir, out, *extra, "train.max_steps=100000"))
    try:
        wait_for(lambda: latest_checkpoint(out) is not None and len(metrics(out)) >= 4, 120, procs)
        procs[1].kill()
        procs[1].wait(timeout=30)
        _, err = procs[0].communicate(timeout=60)  # the roll call waits dist_timeout_s / 4
    finally:
        for p in procs:
            p.kill()
    assert procs[0].returncode == 2, err
    said = [line for line in err.splitlines() if line.startswith("fewtrunc train")]
    assert len(said) == 1 and "Traceback" not in err, err
    assert said[0].startswith("fewtrunc train: error: rank 1 of 2 stopped during step "), said[0]
    assert "its process is gone" in said[0] and "resume" in said[0]
    resume_at = int(latest_checkpoint(out).stem.split("-")[1])
    end = resume_at + 4
    run = torchrun(train_args(shard_dir, out, *extra, f"train.max_steps={end}"))
    assert run.returncode == 0, run.stderr
    assert f"resuming {out} from step {resume_at}" in run.stdout
    ref = tmp_path / "uninterrupted"
    assert cli(train_args(shard_dir, ref, *extra, f"train.max_steps={end}")) == 0
    assert max_difference(losses(out), losses(ref)) <= TOLERANCE
    _same_choices(out, ref)
    assert sum(r["dropped_examples"] for r in metrics(ref)) > 0


def test_a_world_size_that_does_not_divide_the_batch_is_one_line(shard_dir, tmp_path):
    out = tmp_path / "out"
    run = torchrun(train_args(shard_dir, out, "data.batch_size=5"), timeout=120)
    assert run.returncode != 0
    said = [line for line in (run.stdout + run.stderr).splitlines() if "fewtrunc train" in line]
    assert said == ["fewtrunc train: error: data.batch_size=5 (the global batch) is not a multiple of the 2 "
                    "processes: every rank must take the same share of a step; use a multiple, or another "
                    "number of processes"], run.stderr
    assert not out.exists()


def test_a_checkpoint_of_another_data_set_is_refused(shard_dir, tmp_path, capsys):
    data, out = shutil.copytree(shard_dir, tmp_path / "data"), tmp_path / "out"
    assert cli(train_args(data, out, "train.max_steps=2")) == 0
    build_shards(data, real_documents(60))  # the same data.dir now holds other shards
    capsys.readouterr()
    assert cli(train_args(data, out, "train.max_steps=4")) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fewtrunc")]
    assert lines == ["fewtrunc train: error: the reader state was saved with another data set, this reader has "
                     f"dataset {ShardIndex.open(data).fingerprint!r}: resume with the same data and settings"]
    assert np.array_equal([r["step"] for r in metrics(out)], [1, 2])


def test_the_configuration_written_down_has_its_secrets_redacted(shard_dir, tmp_path):
    secret = "score.data_dir=https://user:hunter2@example.invalid/d?X-Amz-Signature=abc123"
    out = tmp_path / "out"
    assert cli(train_args(shard_dir, out, secret, "train.max_steps=1")) == 0
    assert cli(train_args(shard_dir, out, secret, "train.max_steps=2")) == 0  # the redacted config resumes
    state = torch.load(latest_checkpoint(out), weights_only=True)
    for text in ((out / "config.yaml").read_text(), json.dumps(state["config"])):
        assert "hunter2" not in text and "abc123" not in text
        assert "https://***@example.invalid/d?X-Amz-Signature=***" in text
    assert [r["step"] for r in metrics(out)] == [1, 2]
