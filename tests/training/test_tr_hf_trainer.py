"""End to end: `fewtrunc run` makes shards, the Hugging Face Trainer trains a tiny Llama on them
(examples/hf_trainer.py) with each loss kind, with dynamic EL2N pruning, and resumes exactly."""
import importlib.util
import json
import sysconfig
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from pipelines.cli import main as cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _example():
    spec = importlib.util.spec_from_file_location("hf_trainer_example", ROOT / "examples" / "hf_trainer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def example():
    return _example()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_e2e")
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


def _mean(values):
    return sum(values) / len(values)


@pytest.mark.parametrize("kind, use_datasets", [("mle", True), ("ent", False), ("loss_truncation", False)])
def test_each_loss_kind_trains_and_the_loss_falls(example, shards, tmp_path, kind, use_datasets):
    out = example.train(shards, tmp_path, loss=kind, steps=20, save_steps=100, ent_fraction=0.1,
                        use_datasets=use_datasets)
    log = out["log"]
    assert [r["step"] for r in log] == list(range(1, 21))
    losses = [r["loss"] for r in log]
    assert _mean(losses[-5:]) < _mean(losses[:5]) - 0.5, losses
    dropped = [r["dropped_targets"] for r in log]
    targets = [r["targets"] for r in log]
    if kind == "mle":
        assert sum(dropped) == 0
    elif kind == "ent":  # fraction 0.1 of the targets of every batch, from the first step
        assert dropped == [int(0.1 * n) for n in targets]
        assert 0.09 < out["dropped_share"] <= 0.1
    else:  # 20% of the documents once 8 losses were seen
        assert sum(dropped) > 0 and all(r["dropped_sequences"] <= 0.2 * r["targets"] for r in log)


def test_resume_from_a_checkpoint_reproduces_the_uninterrupted_run(example, shards, tmp_path):
    # two micro-batches of 2 rows per step: gradient accumulation on the path being resumed
    kwargs = dict(loss="loss_truncation", prune=True, steps=24, save_steps=6, batch_size=2, grad_accum=2)
    full = example.train(shards, tmp_path / "full", **kwargs)
    example.train(shards, tmp_path / "split", stop_after=12, **kwargs)
    resumed = example.train(shards, tmp_path / "split", resume=True, **kwargs)
    assert [r["step"] for r in resumed["log"]] == list(range(1, 25))
    assert [r["loss"] for r in resumed["log"]] == [r["loss"] for r in full["log"]]
    assert [r["dropped_sequences"] for r in resumed["log"]] == [r["dropped_sequences"] for r in full["log"]]
    # the schedule rescored before and after the interruption, at the same epochs
    assert len(full["rescored"]) >= 2 and resumed["rescored"] == full["rescored"]
    assert (tmp_path / "split" / "checkpoint-12" / "fewtrunc-pruning.pt").is_file()
    assert (tmp_path / "split" / "checkpoint-12" / "fewtrunc-loss.pt").is_file()
