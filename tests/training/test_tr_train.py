import json

import pytest
import torch

from pipelines.cli import main as cli
from pipelines.infra.configio import load_config
from pruning_data import error_norm
from training.checkpoint import latest_checkpoint, list_checkpoints
from training.config import TrainRunConfig
from training.data import IGNORE_INDEX
from training.trainer import Trainer


TINY: list = []


@pytest.fixture(autouse=True)
def _tiny(tiny):
    TINY[:] = tiny


def _metrics(out):
    return [json.loads(line) for line in open(out / "metrics.jsonl")]


def _train(demo_config, shard_dir, out, *extra):
    argv = ["train", demo_config, f"data.dir={shard_dir}", f"output.dir={out}", *TINY, *extra]
    assert cli(argv) == 0
    return _metrics(out)


def test_train_help_works(capsys):
    with pytest.raises(SystemExit) as exc:
        cli(["train", "--help"])
    assert exc.value.code == 0
    assert "metrics.jsonl" in capsys.readouterr().out


def test_missing_shards_is_a_clear_error(demo_config, tmp_path, capsys):
    assert cli(["train", demo_config, f"data.dir={tmp_path}", f"output.dir={tmp_path / 'o'}"]) == 2
    assert "no shards" in capsys.readouterr().err


def test_resume_with_more_steps_logs_the_losses_of_an_uninterrupted_run(demo_config, shard_dir, tmp_path):
    # 85 rows / batch 4 = 22 steps per epoch: 30 steps cross an epoch boundary
    full = _train(demo_config, shard_dir, tmp_path / "full", "train.max_steps=30", "train.checkpoint_every=7")
    _train(demo_config, shard_dir, tmp_path / "split", "train.max_steps=12", "train.checkpoint_every=7")
    resumed = _train(demo_config, shard_dir, tmp_path / "split", "train.max_steps=30", "train.checkpoint_every=7")
    assert [r["step"] for r in full] == list(range(1, 31))
    assert [(r["step"], r["loss"]) for r in resumed] == [(r["step"], r["loss"]) for r in full]
    assert full[-1]["loss"] < full[0]["loss"]


def test_checkpoint_loads_with_weights_only_and_holds_all_state(demo_config, shard_dir, tmp_path):
    _train(demo_config, shard_dir, tmp_path, "train.max_steps=4", "train.checkpoint_every=2",
           "loss.kind=loss_truncation", "loss.truncation.min_count=4", "loss.truncation.unit=row")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000002.pt", "step-00000004.pt"]
    state = torch.load(latest_checkpoint(tmp_path), weights_only=True)
    assert state["step"] == 4
    assert {"model", "optimizer", "sampler", "rng", "objective", "token_map", "config"} <= set(state)
    assert state["optimizer"]["state"]  # Adam moments
    assert state["sampler"]["position"] == 16
    assert state["objective"]["truncation"]["seen"] == 16


def test_changing_the_model_of_an_existing_run_is_refused(demo_config, shard_dir, tmp_path, capsys):
    _train(demo_config, shard_dir, tmp_path, "train.max_steps=1")
    argv = ["train", demo_config, f"data.dir={shard_dir}", f"output.dir={tmp_path}", *TINY, "model.n_layers=3"]
    assert cli(argv) == 2
    assert "model.n_layers" in capsys.readouterr().err


@pytest.mark.parametrize("kind, extra", [
    ("mle", []),
    ("ent", ["loss.ent.fraction=0.2", "loss.ent.warmup_steps=0"]),
    ("loss_truncation", ["loss.truncation.drop_fraction=0.25", "loss.truncation.min_count=4"]),
])
def test_loss_kinds_switch(demo_config, shard_dir, tmp_path, kind, extra):
    rows = _train(demo_config, shard_dir, tmp_path, "train.max_steps=3", f"loss.kind={kind}", *extra)
    dropped = sum(r["dropped_tokens"] for r in rows)
    if kind == "mle":
        assert dropped == 0
    elif kind == "ent":
        assert all(r["dropped_tokens"] == int(0.2 * r["tokens"]) for r in rows)
    else:
        assert rows[0]["dropped_examples"] >= 1 and dropped > 0


def _config(shard_dir, out, *extra):
    return load_config(TrainRunConfig, None, [f"data.dir={shard_dir}", f"output.dir={out}", *TINY, *extra])


def test_ent_drops_exactly_the_tokens_above_the_threshold_in_the_loop(shard_dir, tmp_path):
    seen = []

    def check(step, batch, logits, stats):
        labels = batch["labels"]
        norms = error_norm(logits, labels)
        expected = (labels != IGNORE_INDEX) & (norms > 0.97) & (step > 3)  # updates 1-3 are MLE
        assert torch.equal(stats["dropped_mask"], expected)
        seen.append((step, int(expected.sum())))

    cfg = _config(shard_dir, tmp_path, "train.max_steps=5", "loss.kind=ent", "loss.ent.threshold=0.97",
                  "loss.ent.warmup_steps=3")
    Trainer(cfg, step_callback=check).fit()
    assert [s for s, _ in seen] == [1, 2, 3, 4, 5]
    assert [n for _, n in seen[:3]] == [0, 0, 0]  # warmup_steps=3: exactly 3 plain MLE updates
    assert all(n > 0 for _, n in seen[3:])


def test_dynamic_pruning_in_the_loop_trains_on_the_kept_rows(shard_dir, tmp_path):
    rows_seen, kept = {}, {}

    def record(step, batch, logits, stats):
        epoch = trainer.sampler.epoch
        rows_seen.setdefault(epoch, []).extend(batch["index"].tolist())
        kept[epoch] = trainer.pruner.indices(epoch).tolist()

    cfg = _config(shard_dir, tmp_path, "train.max_steps=34", "pruning.enabled=true",
                  "pruning.keep_fraction=0.5", "pruning.offset_fraction=0.1", "data.batch_size=8")
    trainer = Trainer(cfg, step_callback=record)
    result = trainer.fit()
    n = len(trainer.dataset)
    assert sorted(rows_seen[0]) == list(range(n))
    assert result["rescored_epochs"][0] == 1
    assert sorted(rows_seen[1]) == kept[1]
    assert len(rows_seen[1]) == int(0.5 * n)
