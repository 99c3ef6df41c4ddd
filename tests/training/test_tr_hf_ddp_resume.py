"""PruningCallback's resume position, in process, through accelerate's own batch sharding.

A run with (per-device rows, processes, accumulation) stops after global step ``g``; a run with
another triple and the same global batch resumes. The Trainer skips ``(g % steps_per_epoch) *
grad_accum`` batches of each rank's loader (accelerate's ``SkipBatchSampler`` over its
``BatchSamplerShard``); the sampler must then continue at the very row the first run would have
taken next. Epochs of 60 rows with micro-batches of 4 rows make 15 batches, not a multiple of 2
accumulation steps, so the Trainer's epochs end with a short step.
"""
import types

import pytest

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from accelerate.data_loader import BatchSamplerShard, SkipBatchSampler  # noqa: E402
from torch.utils.data import BatchSampler  # noqa: E402
from transformers import TrainerControl, TrainerState  # noqa: E402

from pipelines.infra.errors import ConfigError  # noqa: E402
from pruning_data import DynamicPruner  # noqa: E402
from training.hf import PruningCallback, PruningSampler  # noqa: E402
from training.hf.schedule import StepLayout  # noqa: E402

ROWS = 60


def _sampler():
    # "random" needs no model to score, so the schedule alone is under test
    return PruningSampler(DynamicPruner(ROWS, keep_fraction=0.5, full_epochs=1, strategy="random", seed=1), seed=2)


def _args(tmp_path, b, n, ga):
    return types.SimpleNamespace(per_device_train_batch_size=b, world_size=n, gradient_accumulation_steps=ga,
                                 output_dir=str(tmp_path), dataloader_num_workers=0)


def _rank_batches(sampler, b, n, rank, skip=0):
    """One rank's batches of the sampler's current epoch, sharded and skipped as accelerate does."""
    batches = BatchSampler(sampler, b, drop_last=False)
    if n > 1:
        batches = BatchSamplerShard(batches, num_processes=n, process_index=rank)
    return list(SkipBatchSampler(batches, skip) if skip else batches)


def _stream(epochs):
    """The 1-process stream of rows, Trainer epoch by Trainer epoch."""
    s = _sampler()
    out = []
    for t in range(epochs):
        s.set_epoch(t)
        out += list(s)
    return out


@pytest.mark.parametrize("before, after", [((4, 1, 2), (2, 2, 2)), ((2, 2, 2), (2, 1, 4)),
                                           ((2, 2, 2), (1, 2, 4)), ((4, 1, 2), (4, 1, 2)), ((2, 2, 2), (2, 2, 2))])
@pytest.mark.parametrize("step", [3, 7, 8, 9, 17])
def test_a_resumed_run_takes_the_next_rows_of_the_interrupted_one(tmp_path, before, after, step):
    first = PruningCallback(_sampler(), dataset=None, collator=None)
    first.on_train_begin(_args(tmp_path, *before), TrainerState(global_step=0, max_steps=100), TrainerControl())
    folder = tmp_path / f"checkpoint-{step}"
    folder.mkdir()
    import torch

    torch.save(first.state_dict(), folder / PruningCallback.state_file)

    b, n, ga = after
    layout = StepLayout(ROWS, b, n, ga)
    stream = _stream(4)
    resumed = [PruningCallback(_sampler(), dataset=None, collator=None) for _ in range(n)]
    loader = range(-(-ROWS // (b * n)))  # stands for the rank's loader: the callback may read its length
    per_epoch = layout.steps_per_epoch
    assert per_epoch == 8  # ceil(ceil(60 / micro) / ga) for every triple here: the Trainer's count
    epoch, k = divmod(step, per_epoch)
    for cb in resumed:  # every rank has its own sampler and callback; the Trainer's calls, in its order:
        args, state = _args(tmp_path, b, n, ga), TrainerState(global_step=step, max_steps=100)
        cb.on_train_begin(args, state, TrainerControl(), train_dataloader=loader)
        cb.on_epoch_begin(args, state, TrainerControl())
        if n == 1:  # accelerate's set_epoch reaches the sampler through a 1-process skipping loader only
            cb.sampler.set_epoch(epoch)
    parts = [_rank_batches(cb.sampler, b, n, r, skip=k * ga) for r, cb in enumerate(resumed)]
    taken = [i for j in range(len(parts[0])) for r in range(n) for i in parts[r][j]]  # micro-batch by micro-batch
    start = epoch * ROWS + k * b * n * ga
    assert taken == stream[start:(epoch + 1) * ROWS]
    # the positions the sampler stands in for unread (placeholders) are exactly the skipped ones
    assert [cb.sampler.skip_until for cb in resumed] == [start] * n


def test_the_uninterrupted_ranks_take_the_one_process_stream():
    # 2 ranks x 2 rows, micro-batch by micro-batch, are 1 process x 4 rows
    s = [_sampler(), _sampler()]
    parts = [_rank_batches(s[r], 2, 2, r) for r in range(2)]
    assert [i for j in range(15) for r in range(2) for i in parts[r][j]] == _stream(1)


def test_epochs_that_many_processes_would_pad_are_refused():
    StepLayout(60, 2, 2, 2).check()
    with pytest.raises(ConfigError, match="60 samples per epoch, not a multiple of .* = 8: .*; use 56"):
        StepLayout(60, 4, 2, 1).check()
    StepLayout(61, 4, 1, 2).check()  # one process pads nothing


def test_another_global_batch_is_refused_on_resume(tmp_path):
    first = PruningCallback(_sampler(), dataset=None, collator=None)
    first.on_train_begin(_args(tmp_path, 4, 1, 2), TrainerState(global_step=0, max_steps=100), TrainerControl())
    import torch

    (tmp_path / "checkpoint-3").mkdir()
    torch.save(first.state_dict(), tmp_path / "checkpoint-3" / PruningCallback.state_file)
    with pytest.raises(ConfigError, match="global batch of 8 rows, this run has 12"):
        PruningCallback(_sampler(), dataset=None, collator=None).on_train_begin(
            _args(tmp_path, 2, 2, 3), TrainerState(global_step=3, max_steps=100), TrainerControl())
