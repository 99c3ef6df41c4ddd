"""Launching real data-parallel runs of ``fewtrunc train`` for the test_tr_ddp_* tests: torchrun
(``python -m torch.distributed.run``), a plain launch of N processes without torchrun's agent, and a
gloo group of N processes started with ``torch.multiprocessing`` that runs several trainings."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / "configs" / "train_demo.yaml")
# the tests' tiny model at the demo's learning rate: float rounding (a sum over 2 ranks instead of
# 1) is not amplified by the optimization, so 1 and 2 processes stay within ~1e-6 for 20+ steps
DDP = ["data.batch_size=4", "data.vocab_limit=256", "model.n_layers=2", "model.d_model=32", "model.n_heads=2",
       "model.seq_len=64", "train.warmup_steps=2", "train.threads=1", "train.lr=0.003", "output.plot=false",
       "train.dist_timeout_s=60"]
TOLERANCE = 1e-4  # the losses of N processes against 1: float32 sums in another order


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_args(shard_dir, out, *extra) -> list[str]:
    return ["train", DEMO, f"data.dir={shard_dir}", f"output.dir={out}", *DDP, *extra]


def torchrun(args: list[str], nproc: int = 2, timeout: float = 180) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
           "--master_port", str(free_port()), "-m", "pipelines.cli", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def plain_launch(args: list[str], nproc: int = 2) -> list[subprocess.Popen]:
    """N ``python -m pipelines.cli`` processes with the environment torchrun would set, no agent."""
    port = free_port()
    return [subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args], cwd=ROOT, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env={**os.environ, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(nproc),
                                  "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"})
            for r in range(nproc)]


def metrics(out) -> list[dict]:
    """The complete lines of ``out/metrics.jsonl`` (a line being written is left out)."""
    path = Path(out) / "metrics.jsonl"
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    return [json.loads(line) for line in lines[:-1] if line.strip()]


def losses(out) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in metrics(out)}


def max_difference(a: dict, b: dict) -> float:
    assert sorted(a) == sorted(b), (sorted(a), sorted(b))
    return max(abs(a[s] - b[s]) for s in a)


def wait_for(condition, timeout: float, procs=()) -> None:
    """Poll ``condition`` (a file another process writes) until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        for p in procs:
            assert p.poll() is None, p.communicate()[1]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def group_worker(rank: int, world: int, port: int, jobs: list, results: str) -> None:
    """One rank of a gloo group: run each job (name, {rank: overrides}) as a training; record
    ``"ok"`` or (error class, message, agreed) per job in ``results/rank{rank}.json``, plus what
    ``Dist.gather_cat`` gives for parts of unequal lengths (one empty)."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    import torch

    from pipelines.infra.configio import load_config
    from pipelines.infra.errors import FewtruncError
    from training.config import TrainRunConfig
    from training.distributed import Dist
    from training.trainer import Trainer

    dist = Dist.from_env(60, cuda=False)
    part = torch.arange(3 * rank, dtype=torch.int64) + 10 * rank
    gathered, sizes = dist.gather_cat(part)
    out = {"gather_cat": [gathered.tolist(), sizes]}
    for name, overrides in jobs:
        cfg = load_config(TrainRunConfig, DEMO, overrides[str(rank)] if isinstance(overrides, dict) else overrides)
        try:
            Trainer(cfg, dist=dist).fit()
            out[name] = "ok"
        except FewtruncError as exc:
            out[name] = [type(exc).__name__, str(exc), bool(getattr(exc, "agreed", False))]
    Path(results, f"rank{rank}.json").write_text(json.dumps(out))
    dist.settle()  # no rank tears the group down while another still uses it
    dist.close()
