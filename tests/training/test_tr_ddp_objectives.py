"""Every objective gives the same losses and the same choices on 2 processes as on 1: ENT at the
token and sequence level with a threshold and a fraction, loss truncation per document and per row,
with and without dynamic pruning (unit row and document). One gloo group of 2 processes (started
with torch.multiprocessing) runs all the trainings in turn; the 1-process references run here.
The same group also checks the gathering itself and that ranks seeing different shard sets stop
with one line from rank 0."""
from __future__ import annotations

import json
import shutil
import time

import pytest
import torch
import torch.multiprocessing as mp

from pipelines.infra.configio import load_config
from pruning_data import tie_key
from pruning_data.ent import ent_drop_mask, sequence_groups
from training.config import TrainRunConfig
from training.trainer import Trainer

from tests.training.ddp_runs import DDP, DEMO, TOLERANCE, free_port, group_worker, losses, max_difference, metrics

PRUNE_ROWS = ["pruning.enabled=true", "pruning.unit=row", "pruning.full_epochs=0", "pruning.keep_fraction=0.6"]
PRUNE_DOCS = ["pruning.enabled=true", "pruning.unit=document", "pruning.full_epochs=0", "pruning.keep_fraction=0.6"]
JOBS = {
    "ent_token_threshold": ["loss.kind=ent", "loss.ent.threshold=0.9", "loss.ent.fraction=null", "loss.ent.warmup_steps=1"],
    "ent_sequence_fraction_documents": ["loss.kind=ent", "loss.ent.fraction=0.3", "loss.ent.warmup_steps=1", "loss.ent.level=sequence",
                                        "loss.ent.unit=document", "data.batch_size=8", *PRUNE_ROWS],
    "ent_sequence_threshold_rows": ["loss.kind=ent", "loss.ent.threshold=0.95", "loss.ent.fraction=null", "loss.ent.warmup_steps=1",
                                    "loss.ent.level=sequence",
                                    "loss.ent.unit=row", "loss.normalize=kept"],
    "truncation_documents": ["loss.kind=loss_truncation", "loss.truncation.min_count=8", "data.batch_size=8",
                             "loss.truncation.drop_fraction=0.25", "loss.normalize=kept", *PRUNE_DOCS],
    "truncation_rows": ["loss.kind=loss_truncation", "loss.truncation.unit=row", "loss.truncation.min_count=4",
                        "loss.truncation.drop_fraction=0.25"],
}
STEPS = 8


@pytest.fixture(scope="module")
def group(shard_dir, tmp_path_factory):
    """Run JOBS on 2 ranks, plus a job where rank 1 reads another shard set; the results per rank."""
    root = tmp_path_factory.mktemp("ddp_objectives")
    fewer = root / "fewer"
    fewer.mkdir()
    shutil.copy(shard_dir / "shard-00000.arrow", fewer)
    common = [f"data.dir={shard_dir}", *DDP, f"train.max_steps={STEPS}"]
    jobs = [(name, [*common, f"output.dir={root / name / 'two'}", *extra]) for name, extra in JOBS.items()]
    jobs.append(("other_shards", {"0": [*common, f"output.dir={root / 'other'}"],
                                  "1": [*common, f"output.dir={root / 'other'}", f"data.dir={fewer}"]}))
    results = root / "results"
    results.mkdir()
    ctx = mp.start_processes(group_worker, args=(2, free_port(), jobs, str(results)), nprocs=2, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + 300
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the 2-process group did not finish")
    return root, [json.loads((results / f"rank{r}.json").read_text()) for r in range(2)]


def test_gather_cat_concatenates_parts_of_any_length_in_rank_order(group):
    _, ranks = group
    for r in ranks:  # rank 0 has no element, rank 1 three
        assert r["gather_cat"] == [[10, 11, 12], [0, 3]]


@pytest.mark.parametrize("name", sorted(JOBS))
def test_two_processes_give_the_losses_and_choices_of_one(group, shard_dir, name):
    root, ranks = group
    assert ranks[0][name] == ranks[1][name] == "ok"
    one = root / name / "one"
    Trainer(load_config(TrainRunConfig, DEMO, [f"data.dir={shard_dir}", *DDP, f"train.max_steps={STEPS}",
                                              f"output.dir={one}", *JOBS[name]])).fit()
    two = root / name / "two"
    assert max_difference(losses(two), losses(one)) <= TOLERANCE
    keys = ("epoch", "rows", "tokens", "dropped_tokens", "dropped_rows", "dropped_examples")
    assert [[r[k] for k in keys] for r in metrics(two)] == [[r[k] for k in keys] for r in metrics(one)]
    assert sum(r["dropped_tokens"] for r in metrics(one)) > 0  # the choices were made


def test_ranks_that_see_different_shard_sets_stop_before_training(group):
    root, ranks = group
    kind, message, agreed = ranks[0]["other_shards"]
    assert kind == "ConfigError" and agreed
    assert message.startswith("the ranks see different shard sets in data.dir=") and "rank 1's" in message
    kind, message, agreed = ranks[1]["other_shards"]  # rank 1 stops quietly: rank 0 says it
    assert kind == "Stopped" and agreed and message.startswith("the ranks see different shard sets")
    assert not (root / "other").exists()


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_ent_choice_on_the_rows_gathered_from_two_ranks_is_the_choice_on_the_whole_batch(level):
    """What the trainer does with ENT fractions: each rank's valid positions (scores, tie keys,
    sequence ids renumbered per rank), concatenated in rank order, give the whole batch's choice.
    Scores are rounded to a few values so that ties (broken by the keys) decide many positions."""
    gen = torch.Generator().manual_seed(0)
    scores = (torch.rand(6, 10, generator=gen) * 4).round() / 4
    valid = torch.rand(6, 10, generator=gen) > 0.2
    keys = tie_key(torch.arange(60).reshape(6, 10) * 7919)
    segments = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2, 2]).expand(6, 10)
    groups = None if level == "token" else sequence_groups(valid, segments)
    whole, n_whole = ent_drop_mask(scores, valid, keys, None, 0.3, groups)
    parts, offset = [], 0
    for rows in (slice(0, 3), slice(3, 6)):  # rank 0 and rank 1 of a global batch of 6 rows
        member = valid[rows] if groups is None else valid[rows] & (groups[rows] >= 0)
        local = None if groups is None else torch.unique(groups[rows][member], return_inverse=True)[1] + offset
        offset += 0 if local is None else int(local.max()) + 1
        parts.append((scores[rows][member], keys[rows][member], local))
    cat = [torch.cat([p[i] for p in parts]) for i in range(2)]
    gathered, n_gathered = ent_drop_mask(cat[0], torch.ones_like(cat[0], dtype=torch.bool), cat[1], None, 0.3,
                                         None if groups is None else torch.cat([p[2] for p in parts]))
    member = valid if groups is None else valid & (groups >= 0)
    assert torch.equal(gathered, whole[member]) and n_gathered == n_whole
    assert 0 < int(whole.sum()) < int(valid.sum())
