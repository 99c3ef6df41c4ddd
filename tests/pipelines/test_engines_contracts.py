"""The contracts of a run (``pipelines/contracts.py``): every stage the driver runs is a ``Stage``,
every registered engine an ``Engine`` built from the registry with its config class, engines
never import the driver, naming the engines imports none of them, and a new engine is one class
plus one registry line (a toy engine registered here runs the job to the local engine's bytes).
"""
from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from pipelines.config import RunConfig, load_run_config
from pipelines.contracts import Engine, Stage, StageMapper, problems
from pipelines.engines import registry
from pipelines.engines.base import StageByStage
from pipelines.infra.errors import ConfigError
from tests.pipelines.conftest import english_records, file_bytes, write_jsonl

ROOT = Path(__file__).resolve().parents[2]


def _stage_classes() -> dict:
    from pipelines.partitions import stages as pack_stages
    from pipelines.stages import TokenizeUnits

    return {cls.__name__: cls for cls in (TokenizeUnits, *(type(s) for s in pack_stages(None)))}


@pytest.mark.parametrize("name", [
    "TokenizeUnits",
    "PlanPartitions",
    "PackPartitions",
    "NumberShards",
    "WritePartitionShards",
])
def test_every_stage_the_driver_runs_is_a_stage(name):
    classes = _stage_classes()
    assert len(classes) == 5  # a new stage gets a line above
    assert problems(classes[name], Stage) == []


def test_the_contract_check_finds_what_a_stage_lacks():
    class Half:
        name, gather, threaded, marker = "half", "no", False, 3

        def setup(self, threads, extra):
            return None

    assert problems(Half, Stage) == [
        "Half.gather is not a bool", "Half.marker is not str | None",
        "Half.work_size() is missing", "Half.done_size() is missing",
        "Half.setup(self, threads, extra) is not setup(self, threads: 'int') -> "
        "'Callable[..., list]'"]


# a key of each engine's section, and how the built engine shows it took it
SECTION_KEY = {"local": "workers=3", "ray": "concurrency=3", "beam": "num_workers=3"}
SECTION_SEEN = {"local": lambda e: e.threads == 3, "ray": lambda e: e.rcfg.concurrency == 3,
                "beam": lambda e: e.bcfg.num_workers == 3}


@pytest.mark.parametrize("name", registry.names())
def test_each_registered_engine_is_an_engine_built_from_its_section(name):
    engine = registry.engine_class(name)
    assert problems(engine, Engine) == []
    if name != "beam":  # Beam chains the stages in one pipeline: it maps no single stage
        assert problems(engine, StageMapper) == []
    cfg = load_run_config(None, [f"engine={name}", f"{name}.{SECTION_KEY[name]}"])
    assert cfg.engine == name
    built = engine.from_config(cfg)
    assert isinstance(built, Engine) and SECTION_SEEN[name](built)


@pytest.mark.parametrize("name", registry.names())
def test_each_registered_engine_has_its_config_class_as_a_section_of_the_run_config(name):
    section = {f.name: f for f in fields(RunConfig)}[name]  # RunConfig.<name>
    assert type(getattr(RunConfig(), section.name)) is registry.config_class(name)


def test_the_config_refuses_a_name_the_registry_does_not_hold():
    with pytest.raises(ConfigError, match=r"engine 'spark' is not available; choose one of "
                       + repr(registry.names()).replace("(", r"\(").replace(")", r"\)")):
        load_run_config(None, ["engine=spark"])


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return found


def test_engines_and_progress_never_import_the_driver_nor_the_driver_an_engine():
    engines = sorted((ROOT / "pipelines" / "engines").glob("*.py"))
    assert len(engines) > 5
    for path in [*engines, ROOT / "pipelines" / "progress.py",
                 ROOT / "pipelines" / "contracts.py"]:
        assert "pipelines.driver" not in _imports(path), path
    assert not any(m.startswith("pipelines.engines") for m in
                   _imports(ROOT / "pipelines" / "driver.py"))


def test_naming_the_engines_imports_none_of_them():
    code = ("import sys, pipelines.api\n"
            "from pipelines.engines import registry\n"
            "assert registry.names() == ('local', 'ray', 'beam'), registry.names()\n"
            "registry.engine_class('local')\n"
            "heavy = [m for m in ('ray', 'apache_beam', 'pipelines.engines.ray_engine',\n"
            "                     'pipelines.engines.beam_engine') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


class ToyEngine(StageByStage):
    """A new engine in a few lines: every item on its own, one after the other, one thread."""

    maps: list = []

    @classmethod
    def from_config(cls, cfg, engine_args=()):
        return cls()

    def map(self, stage, items: list, report=None) -> list:
        call = stage.setup(1)
        ToyEngine.maps.append((stage.name, len(items)))
        if stage.gather:
            return call(items, report)
        return [out for item in items for out in call([item], report)]


def test_a_toy_engine_registered_here_runs_the_job_to_the_local_bytes(tmp_path, monkeypatch):
    from pipelines import api

    monkeypatch.setattr(registry, "_ENGINES", dict(registry._ENGINES))
    registry.register("toy", lambda: ToyEngine)
    assert registry.names()[-1] == "toy" and registry.engine_class("toy") is ToyEngine
    records = english_records(90)
    paths = [write_jsonl(tmp_path / f"in{i}.jsonl", records[30 * i:30 * (i + 1)])
             for i in range(3)]
    cfg = lambda out: load_run_config(None, [  # noqa: E731
        "input.paths=[" + ",".join(f'"{p}"' for p in paths) + "]", f"output.dir={out}",
        "output.report=false", "input.unit_bytes=1", "output.rows_per_shard=4"])
    ToyEngine.maps = []
    toy = api._run(registry.engine_class("toy"), cfg(tmp_path / "toy"), False, (), "size")
    assert not (tmp_path / "toy" / ".fewtrunc.lock").exists()  # the run released its lock itself
    assert toy["status"] == "complete"
    assert [name for name, _ in ToyEngine.maps] == ["tokenize", "partition", "pack", "shards",
                                                    "write"]
    assert ToyEngine.maps[0][1] >= 3  # every unit (a file or a piece of one), one at a time
    api.run(cfg(tmp_path / "local"))
    skip = ("timings.json", "manifest.json", "config.yaml")
    assert file_bytes(tmp_path / "toy", skip) == file_bytes(tmp_path / "local", skip)
    assert len(list((tmp_path / "toy").glob("shard-*.arrow"))) > 1
