"""The HF Trainer path under ``torchrun`` (2 CPU processes, gloo) against 1 process with the same
global batch: per-step losses with dynamic EL2N pruning and ENT, the rows of every step, scoring
split across the ranks, main-process-only logs, resume 1 -> 2 and 2 -> 1 processes (another
gradient accumulation too), and the streaming reader as the Trainer's train set.

One ``torchrun`` launch runs every 2-process part (this file is its script: see ``_ranks``); the
1-process runs happen in the test process. The pruned epoch is 60 rows: 15 micro-batches of 4
rows, not a multiple of the 2 accumulation steps, so every Trainer epoch ends with a short step.
"""
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if __name__ != "__main__":
    pytest.importorskip("transformers")
    pytestmark = pytest.mark.slow

STEPS, RESUME_AT = 14, 9
PRUNED = dict(loss="ent", prune=True, steps=STEPS, save_steps=RESUME_AT, log_samples=True, ent_fraction=0.1)
STREAM = dict(loss="loss_truncation", streaming=True, steps=4, save_steps=2, log_samples=True)
TOL = 1e-4  # float32 sums in another order (2 ranks' halves, DDP's gradient mean) over 14 steps: ~1e-6 seen


def _example():
    spec = importlib.util.spec_from_file_location("hf_trainer_example", ROOT / "examples" / "hf_trainer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _make_shards(root: Path) -> Path:
    from pipelines.cli import main as cli

    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:60]
    corpus = root / "corpus.jsonl"
    with open(corpus, "w") as f:
        for i, p in enumerate(files):
            text = p.read_text(encoding="utf-8", errors="replace")[: 40 + (i * 131) % 700]
            f.write(json.dumps({"text": text}) + "\n")
    out = root / "shards"
    assert cli(["run", str(ROOT / "configs" / "jsonl.yaml"), f"input.paths={corpus}", "pack.seq_len=128",
                f"output.dir={out}", "output.rows_per_shard=16"]) == 0
    return out


def _continue_from(src: Path, dst: Path, step: int) -> None:
    """``dst`` as a run interrupted after ``step``: ``src``'s checkpoint and its first log lines."""
    shutil.copytree(src / f"checkpoint-{step}", dst / f"checkpoint-{step}")
    for name in ("steps.jsonl", "samples.jsonl"):
        lines = (src / name).read_text().splitlines(keepends=True)[:step]
        (dst / name).write_text("".join(lines))


LOSS_CASES = [dict(kind="ent", fraction=0.2, level="token"), dict(kind="ent", fraction=0.34, level="sequence"),
              dict(kind="ent", threshold=1.2, level="token"),
              dict(kind="loss_truncation", unit="document", drop_fraction=0.3, min_count=4)]


def _loss_calls(case: dict, rows: slice) -> list:
    """FewtruncLoss on 3 fixed micro-batches of 4 stacked rows (2 documents each, fixed random
    logits), taking ``rows`` of each: (returned loss, ``last``) per call."""
    import torch

    from training.hf import FewtruncLoss, PackedCollator

    g = torch.Generator().manual_seed(5)
    loss, out = FewtruncLoss(**case), []
    for _ in range(3):
        lens = torch.randint(5, 20, (4,), generator=g).tolist()
        ids = [torch.randint(0, 32, (n,), generator=g).numpy() for n in lens]
        logits = [3 * torch.randn(n, 32, generator=g) for n in lens]
        mine = list(range(4))[rows]
        labels = PackedCollator(layout="stack")([{"input_ids": ids[i], "doc_lens": [n // 2, n - n // 2]}
                                                 for i, n in zip(mine, [lens[i] for i in mine])])["labels"]
        padded = torch.zeros(len(mine), labels.shape[1], 32)
        for k, i in enumerate(mine):
            padded[k, :lens[i]] = logits[i]
        out.append((float(loss({"logits": padded}, labels)), dict(loss.last)))
    return out


def _ranks(shards: Path, work: Path) -> None:
    """What each of the 2 ranks runs: a pruned run, a resume of the 1-process run's checkpoint,
    and a streaming run; each rank writes what only it knows to ``rank<r>.json``."""
    example, rank = _example(), int(os.environ["RANK"])
    a2 = example.train(shards, work / "a2", batch_size=2, grad_accum=2, **PRUNED)
    b2 = example.train(shards, work / "b2", batch_size=2, grad_accum=2, resume=True, **PRUNED)
    s2 = example.train(shards, work / "s2", batch_size=2, **STREAM)
    mine = {name: {"rows_scored": r["rows_scored"], "rescored": r["rescored"], "log": r["log"]}
            for name, r in (("a2", a2), ("b2", b2), ("s2", s2))}
    mine["loss_calls"] = [_loss_calls(case, slice(2 * rank, 2 * rank + 2)) for case in LOSS_CASES]
    (work / f"rank{rank}.json").write_text(json.dumps(mine))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun rank (OMP_NUM_THREADS=1): a tiny model gains nothing from more
    try:
        yield _runs(tmp_path_factory.mktemp("hf_ddp"))
    finally:
        torch.set_num_threads(threads)


def _runs(work: Path) -> dict:
    shards = _make_shards(work)
    example = _example()
    a1 = example.train(shards, work / "a1", batch_size=4, grad_accum=2, **PRUNED)
    _continue_from(work / "a1", work / "b2", RESUME_AT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), __file__, str(shards), str(work)]
    launch = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    try:
        out, _ = launch.communicate(timeout=240)  # ~25 s when the machine is busy
    except subprocess.TimeoutExpired:
        os.killpg(launch.pid, signal.SIGKILL)  # torchrun and both ranks
        out, _ = launch.communicate()
        pytest.fail("the 2-process launch hung:\n" + out[-3000:])
    assert launch.returncode == 0, out[-6000:]
    _continue_from(work / "a2", work / "r1", RESUME_AT)  # 2 -> 1 process, 4 micro-batches of 2 rows
    r1 = example.train(shards, work / "r1", batch_size=2, grad_accum=4, resume=True, **PRUNED)
    s1 = example.train(shards, work / "s1", batch_size=4, **STREAM)
    _continue_from(work / "s2", work / "s1r", 2)  # the streaming reader, 2 -> 1 process
    s1r = example.train(shards, work / "s1r", batch_size=4, resume=True, **STREAM)
    ranks = [json.loads((work / f"rank{r}.json").read_text()) for r in range(2)]
    samples = {name: [json.loads(line) for line in open(work / name / "samples.jsonl")]
               for name in ("a1", "a2", "b2", "r1", "s1", "s2", "s1r")}
    return {"a1": a1, "r1": r1, "s1": s1, "s1r": s1r, "ranks": ranks, "samples": samples, "work": work,
            "shards": shards}


def _losses(log):
    return [r["loss"] for r in log]


def _close(a, b):
    assert len(a) == len(b)
    return max(abs(x - y) for x, y in zip(a, b))


def test_two_processes_log_the_losses_and_rows_of_one_with_pruning_and_ent(runs):
    a1, a2 = runs["a1"]["log"], runs["ranks"][0]["a2"]["log"]
    assert [r["step"] for r in a2] == list(range(1, STEPS + 1))  # one line per step: the main process wrote
    assert runs["ranks"][1]["a2"]["log"] == a2
    diff = _close(_losses(a1), _losses(a2))
    print(f"2 vs 1 process max per-step loss difference: {diff:.2e}")
    assert diff <= TOL
    # ENT's top 10% over the global micro-batch, as in 1 process
    assert [(r["targets"], r["dropped_targets"]) for r in a2] == [(r["targets"], r["dropped_targets"]) for r in a1]
    s1, s2 = runs["samples"]["a1"], runs["samples"]["a2"]
    assert [s["rows"] for s in s2] == [s["rows"] for s in s1]
    for s in s2:  # each rank trained on its own half of every global batch
        assert len(s["ranks"]) == 2 and sorted(s["ranks"][0] + s["ranks"][1]) == sorted(s["rows"])
        assert not set(s["ranks"][0]) & set(s["ranks"][1])
    # the short step that ends each Trainer epoch (15 micro-batches, 2 per step)
    assert [len(s["rows"]) for s in s1][:9] == [8] * 7 + [4, 8]


@pytest.mark.parametrize("case", range(len(LOSS_CASES)))
def test_the_losses_statistics_are_those_of_the_global_micro_batch(runs, case):
    one = _loss_calls(LOSS_CASES[case], slice(None))  # 1 process, all 4 rows
    shares = [rank["loss_calls"][case] for rank in runs["ranks"]]  # 2 ranks, 2 rows each
    for k, (value, last) in enumerate(one):
        # each rank's loss is its share: float32 sums of 2 halves vs of all, ~1e-7 relative
        assert abs(shares[0][k][0] + shares[1][k][0] - value) <= 1e-5 * max(1.0, abs(value))
        for rank in range(2):  # the counts are global, the same on every rank
            got = shares[rank][k][1]
            assert {key: got[key] for key in got if key != "loss"} == {key: last[key] for key in last if key != "loss"}
            assert abs(got["loss"] - last["loss"]) <= 1e-5 * max(1.0, abs(last["loss"]))
    assert sum(last["dropped_targets"] for _, last in one) > 0  # the case drops something to agree on


def test_rescoring_is_split_across_the_ranks(runs):
    a1 = runs["a1"]
    assert a1["rescored"] == [1, 2] and a1["rows_scored"] == 2 * 60
    for rank in runs["ranks"]:
        assert rank["a2"]["rescored"] == [1, 2]
        assert rank["a2"]["rows_scored"] == 2 * 30  # half the 60 rows, at each of the 2 rescorings


def test_resume_with_another_world_size_continues_the_same_rows(runs):
    s1 = {s["step"]: s["rows"] for s in runs["samples"]["a1"]}
    # 1 -> 2 processes (same micro-batches): the uninterrupted run's rows and losses
    b2 = runs["ranks"][0]["b2"]
    assert [s["rows"] for s in runs["samples"]["b2"]] == [s1[t] for t in range(1, STEPS + 1)]
    assert b2["rescored"] == [1, 2] and b2["rows_scored"] == 30  # only the rescoring after the checkpoint
    diff = _close(_losses(b2["log"]), _losses(runs["a1"]["log"]))
    print(f"resumed 1 -> 2 processes vs 1 uninterrupted: max per-step loss difference {diff:.2e}")
    assert diff <= TOL
    # 2 -> 1 process with 4 micro-batches of 2 rows: the same rows step by step, none repeated or skipped
    r1 = runs["samples"]["r1"]
    assert [s["step"] for s in r1] == list(range(1, STEPS + 1))
    assert [s["rows"] for s in r1] == [s1[t] for t in range(1, STEPS + 1)]
    assert runs["r1"]["rescored"] == [1, 2]


def test_streaming_rows_feed_the_trainer_on_every_rank(runs):
    s1, s2 = runs["samples"]["s1"], runs["samples"]["s2"]
    assert [s["rows"] for s in s2] == [s["rows"] for s in s1]
    seen = [i for s in s1 for i in s["rows"]]
    assert len(seen) == len(set(seen)) == 4 * 4
    for s in s2:
        assert not set(s["ranks"][0]) & set(s["ranks"][1]) and len(s["ranks"][0]) == len(s["ranks"][1]) == 2
    diff = _close(_losses(runs["ranks"][0]["s2"]["log"]), _losses(runs["s1"]["log"]))
    print(f"streaming, loss truncation, 2 vs 1 process: max per-step loss difference {diff:.2e}")
    assert diff <= TOL
    # resumed in 1 process from the 2-process checkpoint at step 2: the same rows and losses
    assert [s["rows"] for s in runs["samples"]["s1r"]] == [s["rows"] for s in s1]
    assert _close(_losses(runs["s1r"]["log"]), _losses(runs["s1"]["log"])) <= TOL


def test_a_resume_with_another_global_batch_is_refused(runs, tmp_path):
    from pipelines.infra.errors import ConfigError

    _continue_from(runs["work"] / "a1", tmp_path, RESUME_AT)
    with pytest.raises(ConfigError, match="global batch of 8 rows, this run has 4"):
        _example().train(runs["shards"], tmp_path, batch_size=2, grad_accum=2, resume=True, **PRUNED)


if __name__ == "__main__":
    from training.hf.distributed import finish

    _ranks(Path(sys.argv[1]), Path(sys.argv[2]))
    finish()
