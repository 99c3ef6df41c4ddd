"""An engine that starts early (Ray joining a running cluster, Beam importing itself) is started
while the driver plans the run, and stopped whatever happens: the run's bytes are the same, a run
refused while planning and a run already complete stop it too, and an engine that fails to start
leaves no output directory or lock (nothing is written before both are done)."""
from __future__ import annotations

import pytest

from pipelines import driver
from pipelines.config import load_run_config
from pipelines.engines.local import LocalEngine
from pipelines.infra.errors import ConfigError
from tests.pipelines.conftest import english_records, file_bytes, write_jsonl


class EarlyLocal(LocalEngine):
    """The local engine, started early, saying when it started and stopped."""

    start_early = True

    def __init__(self):
        super().__init__(2)
        self.events = []

    def __enter__(self):
        self.events.append("start")
        return self

    def __exit__(self, *exc):
        self.events.append("stop")


def _run(cfg, engine):
    return driver.run(cfg, engine)  # it releases the output lock however it ends


def test_an_engine_started_early_runs_the_same_job_and_is_always_stopped(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", english_records(40))
    cfg = lambda out: load_run_config(None, [f"input.paths={src}", f"output.dir={out}",  # noqa: E731
                                             "output.report=false"])
    early = EarlyLocal()
    assert _run(cfg(tmp_path / "early"), early)["status"] == "complete"
    assert early.events == ["start", "stop"]
    _run(cfg(tmp_path / "plain"), LocalEngine(2))
    skip = ("timings.json", "manifest.json", "config.yaml")
    assert file_bytes(tmp_path / "early", skip) == file_bytes(tmp_path / "plain", skip)

    again = EarlyLocal()  # already complete: started while preparing, stopped
    assert _run(cfg(tmp_path / "early"), again)["status"] == "already complete"
    assert again.events == ["start", "stop"]

    refused = EarlyLocal()  # the inputs are missing: the run stops, and so does the engine
    bad = load_run_config(None, [f"input.paths={tmp_path / 'missing.jsonl'}",
                                 f"output.dir={tmp_path / 'bad'}"])
    with pytest.raises(ConfigError, match="missing.jsonl"):
        _run(bad, refused)
    assert refused.events == ["start", "stop"]
    assert not (tmp_path / "bad").exists()


class FailsToStart(EarlyLocal):
    """An early engine whose start fails (as Beam does on a bad runner flag)."""

    def __enter__(self):
        self.events.append("start")
        raise ConfigError("bad engine flag")


def test_an_engine_that_fails_to_start_leaves_nothing_and_its_error_wins(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", english_records(5))
    out = tmp_path / "deep" / "o"
    good = load_run_config(None, [f"input.paths={src}", f"output.dir={out}"])
    with pytest.raises(ConfigError, match="bad engine flag"):
        _run(good, FailsToStart())
    assert not (tmp_path / "deep").exists()  # the plan was made; nothing was written
    # the plan fails too (a missing input): the engine's error is the one reported
    bad = load_run_config(None, [f"input.paths={tmp_path / 'missing.jsonl'}",
                                 f"output.dir={out}"])
    with pytest.raises(ConfigError, match="bad engine flag"):
        _run(bad, FailsToStart())
    assert _run(good, LocalEngine(2))["status"] == "complete"  # no lock was left behind
