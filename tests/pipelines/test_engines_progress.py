"""Progress bars on every engine: local and Ray report per item; Beam, which blocks in one
pipeline, gets its bars from ``progress.MarkerProgress`` polling the stages' markers.

The CLI shows bars only when stderr is a terminal, so the runs get a pseudo-terminal as stderr.
"""
from __future__ import annotations

import fcntl
import io
import json
import os
import re
import struct
import subprocess
import sys
import termios
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipelines import progress
from tests.pipelines.test_engines_equivalence import (job_config, loopback_env, make_corpus,
                                                      write_config)

BAR_DONE = r"{}: 100%\|[^|]*\| *([\d.]+\s?\w*)/\1 "  # a closed bar at its total: n/n


def run_cli(config: Path, *args: str, env=None) -> tuple[int, str, str]:
    """``fewtrunc run config args...`` with a 160-column pseudo-terminal as stderr:
    (exit status, stdout, stderr with the bars' carriage returns)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 1 << 16)
            except OSError:  # EIO: every writer is gone
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", str(config), *args],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
                              env=env, text=True, timeout=240)
    finally:
        os.close(slave)
    reader.join(10)
    os.close(master)
    return proc.returncode, proc.stdout, b"".join(chunks).decode("utf-8", "replace")


def shard_count(out: Path) -> int:
    return len(json.loads((out / "manifest.json").read_text())["shards"])


def run_engine(tmp_path: Path, engine: str, *overrides: str, env=None) -> tuple[str, Path]:
    out = tmp_path / engine
    config = write_config(tmp_path / f"{engine}.yaml", job_config(make_corpus(tmp_path), out))
    rc, stdout, stderr = run_cli(config, f"engine={engine}", *overrides, env=env)
    assert rc == 0, (stdout + stderr)[-3000:]
    assert "complete" in stdout
    return stderr, out


@pytest.mark.slow
def test_beam_run_shows_tokenize_bar_to_its_total_and_a_write_bar(tmp_path):
    stderr, out = run_engine(tmp_path, "beam", "beam.num_workers=2")
    assert re.search(BAR_DONE.format("tokenize"), stderr), stderr[-3000:]
    done = re.search(BAR_DONE.format("write"), stderr)
    assert done, stderr[-3000:]
    assert float(done.group(1)) == shard_count(out)  # every shard, counted from its marker
    assert re.search(BAR_DONE.format("pack"), stderr), stderr[-3000:]
    # Beam's start-up logs (INFO from every worker process) go to a scratch log, not the bars
    assert not re.search(r"^(INFO|WARNING):", stderr, re.M), stderr[-3000:]


def test_a_failed_beam_run_prints_what_beam_logged(tmp_path, capfd):
    """Beam's logs are kept from the terminal, and shown when a run fails otherwise than with
    one of fewtrunc's own errors (those are one line)."""
    import os

    from pipelines.engines.beam_engine import quiet_stderr
    from pipelines.infra.errors import ConfigError

    with pytest.raises(RuntimeError), quiet_stderr() as bars:
        os.write(2, b"INFO:worker:started\n")
        bars.write("a bar\n")
        raise RuntimeError("the runner failed")
    err = capfd.readouterr().err
    assert "a bar" in err and "(the last lines Beam logged)\nINFO:worker:started" in err
    with pytest.raises(ConfigError), quiet_stderr():
        os.write(2, b"INFO:worker:started\n")
        raise ConfigError("a config error")
    assert "INFO" not in capfd.readouterr().err


@pytest.mark.parametrize("engine, overrides", [
    ("local", ()),
    pytest.param("ray", ("ray.num_cpus=2",), marks=pytest.mark.slow),
])
def test_local_and_ray_runs_show_their_bars(tmp_path, engine, overrides):
    """Per item (Ray) or per batch (local: the bytes read, counted against each unit's size on
    disk, so a compressed input ends at the bar's total, not past it)."""
    stderr, out = run_engine(tmp_path, engine, *overrides,
                             env=loopback_env() if engine == "ray" else None)
    assert "pack: 100%" in stderr, stderr[-3000:]
    assert re.search(BAR_DONE.format("tokenize"), stderr), stderr[-3000:]
    done = re.search(BAR_DONE.format("write"), stderr)
    assert done and float(done.group(1)) == shard_count(out), stderr[-3000:]


def test_no_progress_starts_no_poller(tmp_path):
    """``progress`` false (the CLI's ``--quiet``, or stderr not a terminal): no poller, no bar."""
    @dataclass(frozen=True)
    class Probe:
        name, gather = "tokenize", False

        def work_size(self, items):
            return len(items), "unit"

        def done_size(self, items, names):
            raise AssertionError("polled")

    with progress.MarkerProgress([Probe()], [1, 2], False) as watcher:
        pass
    assert watcher.thread is None


@dataclass(frozen=True)
class Markers:
    """A stage whose work is ``<name>-*.done.json`` files in ``work``; the first one's items
    are the marker numbers it waits for."""

    work: str
    name: str
    gather: bool = False

    def work_size(self, items):
        return (len(items), "item") if self.name != "gather" else (0, None)

    def done_size(self, items, names):
        found = names(self.work, f"{self.name}-*.done.json")
        return len(found) if items is None else sum(f"{self.name}-{i}.done.json" in found
                                                    for i in items)


def test_marker_progress_opens_each_stage_bar_as_it_starts(tmp_path, monkeypatch):
    """The first bar opens at once with the items' total; a later one when its first marker
    shows, with no total until the end, when it ends at 100%; a stage after a gather stage
    starting ends the bars before it."""
    monkeypatch.setattr(progress.MarkerProgress, "LOCAL_S", 0.02)
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    work = str(tmp_path)
    stages = [Markers(work, "unit"), Markers(work, "gather", True), Markers(work, "part"),
              Markers(work, "gather", True), Markers(work, "shard")]

    def until(check) -> None:
        deadline = time.monotonic() + 10
        while not check():
            assert time.monotonic() < deadline, "the poller never got there"
            time.sleep(0.01)

    def touch(*names) -> None:
        for name in names:
            (tmp_path / name).write_text("{}")

    with progress.MarkerProgress(stages, [0, 1], True) as watcher:
        units, parts, shards = watcher.watched
        until(lambda: units["bar"] is not None)
        assert units["bar"].bar.total == 2
        touch("unit-0.done.json", "unit-7.done.json")  # unit 7: not one of the items
        until(lambda: units["bar"].bar.n == 1)
        time.sleep(0.1)  # a few more polls
        assert parts["bar"] is None and not units["done"]
        touch("unit-1.done.json")
        until(lambda: units["done"])
        touch("part-0.done.json", "part-1.done.json")
        until(lambda: parts["bar"] is not None and parts["bar"].bar.n == 2)
        assert parts["bar"].bar.total is None and not parts["done"]
        touch("shard-0.done.json")
        until(lambda: parts["done"])  # the write stage started: packing is over
        assert parts["bar"].bar.total == 2
        touch("shard-1.done.json", "shard-2.done.json")
        until(lambda: shards["bar"].bar.n == 3)
        assert shards["bar"].bar.total is None and not shards["done"]
    assert shards["done"] and shards["bar"].bar.total == 3
    text = err.getvalue()
    assert all(re.search(BAR_DONE.format(name), text) for name in ("unit", "part", "shard"))


def test_marker_progress_closes_its_bars_on_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with pytest.raises(RuntimeError):
        with progress.MarkerProgress([Markers(str(tmp_path), "unit")], [0], True) as watcher:
            time.sleep(0.1)
            raise RuntimeError("the pipeline failed")
    assert not watcher.thread.is_alive()
    bar = watcher.watched[0]["bar"].bar
    assert bar.disable and bar.n == 0  # closed where it stood, not pushed to its total
