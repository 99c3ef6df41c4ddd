"""A new input format and a new packing algorithm are plug-ins: registered from here, without an
edit to any shipped file, each is a valid config choice, is listed by ``fewtrunc run --help``
and runs a real ``fewtrunc run``; taken back, neither is a choice any more."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from packing.registry import ALGORITHMS, Algorithm
from packing.registry import register as register_algorithm
from packing.registry import unregister as unregister_algorithm
from pipelines.cli import main
from pipelines.config import load_run_config
from pipelines.infra.errors import ConfigError
from pipelines.infra.shard_format import list_shards, open_shard
from pipelines.steps.formats import FORMATS, InputFormat, register, unregister
from pipelines.steps.read import stable_id
from pipelines.steps.sources import Record
from tests.pipelines.conftest import base_overrides, english_records, segments_by_doc, write_jsonl

TEXTS = [" ".join(r["text"].split()) for r in english_records(24)]  # one line each


def toy_records(source, cfg, resumable=None):
    """``.toy``: one document a line, ``ID<TAB>TEXT``; a line without a tab is a reject."""
    with open(source.path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            key, tab, text = line.rstrip("\n").partition("\t")
            yield Record(number, text if tab else None, int(key) if tab else None,
                         len(line.encode()), None if tab else "no tab on the line")


def one_chunk_a_bin(lengths, capacity):
    """The worst packer there is: every chunk in a row of its own."""
    return np.arange(lengths.size, dtype=np.int64), int(lengths.size)


@pytest.fixture()
def toys():
    """The toy format and algorithm, registered for one test and taken back after it."""
    register(InputFormat("toy", "toy lines: ID, a tab, then the text", toy_records, (".toy",)))
    try:
        register_algorithm(Algorithm("one-a-bin", "every chunk in a row of its own",
                                     one_chunk_a_bin))
        try:
            yield
        finally:
            unregister_algorithm("one-a-bin")
    finally:
        unregister("toy")


def _toy_file(path, texts):
    """``texts`` as a toy file whose 3rd line has no tab; document i has id i."""
    lines = [f"{i}\t{t}" for i, t in enumerate(texts)]
    lines.insert(2, "a line without a tab")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _run(capsys, out, *paths, **extra) -> str:
    """``fewtrunc run`` in this process (where the toys are registered); its stdout."""
    assert main(["run", "configs/jsonl.yaml", "--quiet",
                 *base_overrides(out, *paths, **extra)]) == 0
    return capsys.readouterr().out


def test_a_registered_format_and_algorithm_run_end_to_end(tmp_path, capsys, toys):
    texts = TEXTS
    toy = _toy_file(tmp_path / "docs.toy", texts)
    ref = write_jsonl(tmp_path / "docs.jsonl", [{"id": i, "text": t} for i, t in enumerate(texts)])

    # input.format=auto finds the toy format by its suffix; its records' ids and texts reach
    # the shards exactly as the same documents' do from JSON lines
    said = _run(capsys, tmp_path / "toy", str(toy), **{"input.id_field": "id"})
    assert "complete:" in said
    _run(capsys, tmp_path / "ref", str(ref), **{"input.id_field": "id"})
    got, want = segments_by_doc(tmp_path / "toy"), segments_by_doc(tmp_path / "ref")
    assert sorted(got) == list(range(len(texts)))
    for doc in want:
        np.testing.assert_array_equal(got[doc], want[doc], err_msg=f"doc {doc}")
    rejects = (tmp_path / "toy" / "rejects.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in rejects] == [
        {"file": str(toy), "line": 3, "reason": "no tab on the line"}]

    # named explicitly, without ids: a document's id comes from the file and its line number
    _run(capsys, tmp_path / "named", str(toy), **{"input.format": "toy"})
    lines = [n for n in range(1, len(texts) + 2) if n != 3]
    assert set(segments_by_doc(tmp_path / "named")) == {stable_id(str(toy), n) for n in lines}

    # the toy packer: one chunk a row, where BFD fills rows; the same documents either way
    _run(capsys, tmp_path / "worst", str(ref), **{"input.id_field": "id",
                                                   "pack.algorithm": "one-a-bin"})
    rows = [r for s in list_shards(tmp_path / "worst") for r in open_shard(s).to_pylist()]
    stats = json.loads((tmp_path / "worst" / "stats.json").read_text())
    assert stats["algorithm"] == "one-a-bin"
    assert all(len(r["doc_lens"]) == 1 for r in rows)
    best = [r for s in list_shards(tmp_path / "ref") for r in open_shard(s).to_pylist()]
    assert len(rows) == sum(len(r["doc_lens"]) for r in best) > len(best)
    worst = segments_by_doc(tmp_path / "worst")
    for doc in want:
        np.testing.assert_array_equal(worst[doc], want[doc], err_msg=f"doc {doc}")


def test_the_help_and_the_config_choices_come_from_the_registries(capsys, toys):
    cfg = load_run_config(None, ["input.format=toy", "pack.algorithm=one-a-bin"])
    assert (cfg.input.format, cfg.pack.algorithm) == ("toy", "one-a-bin")
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    shown = capsys.readouterr().out
    assert "toy lines: ID, a tab, then the text: .toy" in shown
    assert "every chunk in a row of its own" in shown
    assert "format=auto|jsonl|parquet|files|hf|toy" in shown
    assert "algorithm=bfd|obfd|ffd|optimal|one-a-bin|concat" in shown


@pytest.mark.parametrize("key,name", [("input.format", "toy"), ("pack.algorithm", "one-a-bin")])
def test_a_name_nobody_registered_is_refused_naming_the_choices(key, name):
    assert "toy" not in FORMATS and "one-a-bin" not in ALGORITHMS  # nothing leaked from a test
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}: '{name}' is not one of '"):
        load_run_config(None, [f"{key}={name}"])


def test_a_taken_name_is_refused():
    with pytest.raises(ValueError, match="taken"):
        register(InputFormat("jsonl", "again", toy_records))
    with pytest.raises(ValueError, match="registered already"):
        register_algorithm(Algorithm("bfd", "again", one_chunk_a_bin))
