"""unit_stream.tokenize_units (the loop every engine runs per unit) and the spill files it leaves:
concurrent attempts of one unit, and a unit that fails half-way."""
from __future__ import annotations

import numpy as np
import pytest

from pipelines.config import load_run_config
from pipelines.unit_stream import tokenize_units
from pipelines.infra.errors import InputError
from pipelines.steps import spill
from pipelines.steps.plan import plan_units
from pipelines.steps.read import Reader
from pipelines.steps.tokenize import Tokenize
from tests.pipelines.conftest import english_records, write_jsonl


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    path = write_jsonl(root / "en.jsonl", english_records(60))
    cfg = load_run_config({"input": {"paths": [str(path)]}, "tokenizer": {"batch_bytes": 20_000},
                           "output": {"dir": str(root / "out")}})
    units = plan_units(cfg.input)
    return cfg, units, Tokenize(cfg.tokenizer), Reader(cfg.input, cfg.tokenizer.batch_bytes)


def _files(work):
    return {p.name: p.read_bytes() for p in sorted(work.iterdir())}


def test_streamed_unit_matches_batch_by_batch_spill(tmp_path, setup):
    cfg, units, tok, reader = setup
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (marker,) = tokenize_units(a, tok, units[:1], reader, workers=2)
    out = spill.UnitSpill(b, units[0].index)
    for batch in reader(units[0]):
        out.add(tok(batch))
    assert out.finish() == marker
    assert _files(a) == _files(b)
    assert marker["tokens"] == int(spill.load_docs(a, 0)[1].sum()) > 0


def test_two_attempts_at_once_publish_identical_files(tmp_path, setup):
    """A retried attempt may run while a presumed-dead one still writes: private temporaries."""
    cfg, units, tok, reader = setup
    batches = [tok(b) for b in reader(units[0])]
    first, second = spill.UnitSpill(tmp_path, 0), spill.UnitSpill(tmp_path, 0)
    for batch in batches:
        first.add(batch)
        second.add(batch)
    assert first.tmp != second.tmp
    m1 = first.finish()
    (ids_file,) = tmp_path.glob("unit-00000.tokens*")
    tokens = ids_file.read_bytes()
    assert second.finish() == m1
    assert ids_file.read_bytes() == tokens
    np.testing.assert_array_equal(np.fromfile(ids_file, first.dtype),
                                  np.concatenate([b.tokens for b in batches]))
    assert not list(tmp_path.glob("*tmp*"))


def test_unit_failing_half_way_leaves_no_marker_and_no_temporary(tmp_path, setup):
    cfg, units, tok, reader = setup

    def failing(unit):
        it = reader(unit)
        yield next(it)
        raise InputError(f"{unit.sources[0].path}:7", "broken on purpose")

    with pytest.raises(InputError, match="broken on purpose"):
        tokenize_units(tmp_path, tok, units[:1], failing, workers=1)
    assert spill.load_marker(tmp_path, 0) is None
    assert list(tmp_path.iterdir()) == []
