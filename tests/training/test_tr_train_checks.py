"""`fewtrunc train` and `score` check the model's configuration against the shards before any step:
rows longer than model.seq_len and ids outside the vocabulary are one ConfigError line each, and
nothing is written."""
from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pytest

from pipelines.cli import main as cli

ROOT = Path(__file__).resolve().parents[2]


def _ids(directory):
    """The input_ids column of every shard, read with Arrow alone."""
    return [ipc.open_file(str(p)).read_all().column("input_ids") for p in sorted(Path(directory).glob("shard-*.arrow"))]


def _longest(directory) -> int:
    return max(pc.max(pc.list_value_length(c)).as_py() for c in _ids(directory))


def _max_id(directory) -> int:
    return max(pc.max(pc.list_flatten(c)).as_py() for c in _ids(directory))


@pytest.fixture(scope="module")
def run128(tmp_path_factory):
    """A real `fewtrunc run` packed to 128 tokens: its manifest records pack.seq_len=128."""
    out = tmp_path_factory.mktemp("run128") / "out"
    assert cli(["run", str(ROOT / "configs" / "jsonl.yaml"), "input.max_documents=4", "pack.seq_len=128",
                f"output.dir={out}"]) == 0
    return out


def _refused(capsys, argv) -> str:
    assert cli(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def _nothing_written(out: Path) -> None:
    assert not (out / "metrics.jsonl").exists() and not (out / "checkpoints").exists()


def test_rows_longer_than_the_model_are_refused_before_training(demo_config, shard_dir, tmp_path, tiny, capsys):
    longest = _longest(shard_dir)
    line = _refused(capsys, ["train", demo_config, f"data.dir={shard_dir}", f"output.dir={tmp_path}", *tiny,
                             f"model.seq_len={longest - 8}"])
    assert line == (f"fewtrunc train: error: model.seq_len={longest - 8} but the shards in {str(shard_dir)!r} hold "
                    f"rows of {longest} tokens (their longest row): set model.seq_len={longest} or more")
    _nothing_written(tmp_path)


def test_the_manifests_seq_len_decides_when_there_is_one(demo_config, run128, tmp_path, tiny, capsys):
    assert _longest(run128) <= 128
    line = _refused(capsys, ["train", demo_config, f"data.dir={run128}", f"output.dir={tmp_path}", *tiny,
                             "model.seq_len=100"])
    assert "model.seq_len=100 but the shards" in line
    assert "rows of 128 tokens (pack.seq_len=128 in manifest.json): set model.seq_len=128 or more" in line
    _nothing_written(tmp_path)


@pytest.mark.parametrize("overrides, message", [
    (["data.vocab_limit=0", "model.vocab_size=1000"], "outside the model's vocabulary (model.vocab_size=1000)"),
    (["data.vocab_limit=256", "model.vocab_size=100"],
     "the token map (data.vocab_limit) gives ids up to 255, outside the model's vocabulary (model.vocab_size=100)"),
])
def test_ids_outside_the_vocabulary_are_refused(demo_config, shard_dir, tmp_path, tiny, capsys, overrides, message):
    top = _max_id(shard_dir)
    line = _refused(capsys, ["train", demo_config, f"data.dir={shard_dir}", f"output.dir={tmp_path}", *tiny,
                             *overrides])
    assert message in line, line
    if "vocab_size=1000" in message:
        assert f"hold token id {top}" in line
    _nothing_written(tmp_path)


def test_a_tokenizer_smaller_than_the_ids_is_refused(demo_config, shard_dir, tmp_path, tiny, capsys):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    small = tmp_path / "tokenizer.json"
    Tokenizer(WordLevel({"[UNK]": 0, "a": 1, "b": 2}, unk_token="[UNK]")).save(str(small))
    line = _refused(capsys, ["train", demo_config, f"data.dir={shard_dir}", f"output.dir={tmp_path / 'o'}", *tiny,
                             f"data.tokenizer={small}"])
    assert f"but data.tokenizer ({small}) has 3 ids: use the tokenizer the shards were built with" in line
    _nothing_written(tmp_path / "o")


def test_score_refuses_shards_longer_than_the_checkpoints_model(demo_config, shard_dir, run128, tmp_path, tiny,
                                                                capsys):
    common = [demo_config, f"data.dir={shard_dir}", f"output.dir={tmp_path}", *tiny]
    assert cli(["train", *common, "train.max_steps=1"]) == 0
    line = _refused(capsys, ["score", *common, f"score.data_dir={run128}"])
    assert "model.seq_len=64 but the shards" in line and "rows of 128 tokens" in line
    assert line.endswith("the model of step-00000001.pt takes rows of at most 64 tokens; score shards packed to "
                         "that length or less")
    assert not (tmp_path / "scores.arrow").exists()
