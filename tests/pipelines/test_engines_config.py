"""The ``ray:`` / ``beam:`` config sections, Beam's option pass-through and runner choice, and the
command line's split of overrides from Beam flags. Fast: no cluster, no pipeline run."""
from __future__ import annotations

import subprocess
import sys

import pytest

from pipelines.cli import main as cli_main
from pipelines.config import load_run_config
from pipelines.infra.errors import ConfigError

pytest.importorskip("apache_beam")


def test_engine_sections_parse_and_validate():
    cfg = load_run_config(None, ["engine=ray", "ray.address=auto", "ray.concurrency=3",
                                 "ray.cpus_per_actor=0.5", "beam.num_workers=4"])
    assert (cfg.engine, cfg.ray.address, cfg.ray.concurrency) == ("ray", "auto", 3)
    assert cfg.ray.cpus_per_actor == 0.5 and cfg.beam.num_workers == 4
    with pytest.raises(ConfigError, match="ray.adress"):
        load_run_config(None, ["ray.adress=auto"])
    with pytest.raises(ConfigError, match="engine 'spark'"):
        load_run_config(None, ["engine=spark"])
    with pytest.raises(ConfigError, match="beam.num_workers"):
        load_run_config(None, ["beam.num_workers=0"])


def test_unknown_flags_reach_pipeline_options():
    from pipelines.engines.beam_engine import make_runner, pipeline_options

    cfg = load_run_config(None, ["engine=beam", "beam.options=--job_name=nightly"])
    opts = pipeline_options(cfg.beam, ["--runner", "DataflowRunner", "--project", "P",
                                       "--region", "R", "--temp_location", "gs://b/tmp",
                                       "--setup_file", "./setup.py"]).get_all_options()
    assert (opts["runner"], opts["project"], opts["region"]) == ("DataflowRunner", "P", "R")
    assert opts["temp_location"] == "gs://b/tmp" and opts["setup_file"] == "./setup.py"
    assert opts["job_name"] == "nightly"
    assert opts["direct_num_workers"] == 1  # DirectRunner settings only for the DirectRunner

    direct = pipeline_options(cfg.beam)
    d = direct.get_all_options()
    assert (d["direct_num_workers"], d["direct_running_mode"]) == (2, "multi_processing")
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    assert isinstance(make_runner(direct), FnApiRunner)  # never the Prism download


def test_prism_without_binary_fails_clearly():
    from pipelines.engines.beam_engine import make_runner, pipeline_options

    cfg = load_run_config(None, ["engine=beam"])
    opts = pipeline_options(cfg.beam, ["--runner=PrismRunner", "--prism_location=/nonexistent"])
    with pytest.raises(ConfigError, match="PrismRunner needs its binary"):
        make_runner(opts)


def test_cli_splits_overrides_from_engine_flags(monkeypatch):
    import pipelines.api

    seen = {}

    def fake_run(config, overrides, progress=False, engine_args=()):
        seen.update(config=config, overrides=list(overrides), flags=list(engine_args))
        return {"status": "complete", "out": "x", "manifest": {
            "totals": dict.fromkeys(["documents_read", "documents_accepted",
                                     "documents_rejected", "documents_truncated", "chunks",
                                     "tokens_in", "tokens_out", "sequences", "lower_bound",
                                     "overhead"], 0),
            "shards": [], "checks": {"token_conservation": True}}}

    monkeypatch.setattr(pipelines.api, "run", fake_run)
    rc = cli_main(["run", "c.yaml", "engine=beam", "--runner", "DataflowRunner", "--project",
                   "P", "pack.seq_len=512", "--quiet", "--region=R"])
    assert rc == 0
    assert seen["overrides"] == ["engine=beam", "pack.seq_len=512"]
    assert seen["flags"] == ["--runner", "DataflowRunner", "--project", "P", "--region=R"]


def test_cli_rejects_flags_for_other_engines_and_prism_offline(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"input: {{paths: ['{{stdlib}}/json']}}\noutput: {{dir: '{tmp_path}/o'}}\n")
    run = lambda *a: subprocess.run([sys.executable, "-m", "pipelines.cli", "run", str(cfg), *a],  # noqa: E731
                                    capture_output=True, text=True, timeout=120)
    local = run("--project", "P")
    assert local.returncode == 2 and "only engine=beam" in local.stderr
    prism = run("engine=beam", "--runner=PrismRunner", "--prism_location=/nonexistent")
    assert prism.returncode == 2 and "PrismRunner needs its binary" in prism.stderr
    assert not (tmp_path / "o").exists()  # refused before any work
    with pytest.raises(SystemExit):
        cli_main(["verify", str(tmp_path), "--bogus"])  # other commands keep strict parsing


def test_setup_file_builds_the_package_dataflow_stages(tmp_path):
    """``--setup_file ./setup.py``: Beam's stager builds this source distribution (offline) and
    Dataflow installs it on every worker; it must hold the four packages and the shipped corpus."""
    import tarfile
    from pathlib import Path

    from apache_beam.runners.portability.stager import Stager

    root = Path(__file__).resolve().parents[2]
    sdist = Stager._build_setup_package(str(root / "setup.py"), str(tmp_path))
    names = {n.split("/", 1)[1] for n in tarfile.open(sdist).getnames() if "/" in n}
    for module in ("packing/bfd.py", "pipelines/engines/beam_dofn.py",
                   "pipelines/unit_stream.py", "pruning_data/ent.py", "training/model.py",
                   "setup.py"):
        assert module in names, module
    assert any(n.startswith("pipelines/assets/") and n.endswith(".zst") for n in names)


def test_stages_ship_the_run_plan_and_nothing_live(tmp_path):
    """What an engine sends to its workers is plain data: the run plan (config, units,
    fingerprints) pickles and compares equal after the trip, and holds no tokenizer."""
    import pickle

    from pipelines.partitions import stages as pack_stages
    from pipelines.run_plan import build_run_plan
    from pipelines.stages import TokenizeUnits
    from tests.pipelines.conftest import english_records, write_jsonl

    src = write_jsonl(tmp_path / "in.jsonl", english_records(5))
    plan, tokenize = build_run_plan(load_run_config(None, [f"input.paths={src}",
                                                           f"output.dir={tmp_path / 'o'}"]))
    for stage in (TokenizeUnits(plan), *pack_stages(plan)):
        blob = pickle.dumps(stage)
        assert pickle.loads(blob) == stage
        assert b"pipelines.steps.tokenize" not in blob and len(blob) < 20_000
    assert not (tmp_path / "o").exists()  # planning touches no output


def test_engines_give_several_threads_only_to_stages_that_declare_them(tmp_path):
    """The stages say which of them keep several threads busy; the local engine gives those
    ``local.workers`` threads and every other stage one, whatever the stage is called."""
    from dataclasses import dataclass

    from pipelines.engines.local import LocalEngine
    from pipelines.partitions import stages as pack_stages
    from pipelines.run_plan import build_run_plan
    from pipelines.stages import TokenizeUnits
    from tests.pipelines.conftest import english_records, write_jsonl

    src = write_jsonl(tmp_path / "in.jsonl", english_records(3))
    plan, _ = build_run_plan(load_run_config(None, [f"input.paths={src}",
                                                    f"output.dir={tmp_path / 'o'}"]))
    declared = {s.name: s.threaded for s in (TokenizeUnits(plan), *pack_stages(plan))}
    assert declared == {"tokenize": True, "partition": False, "pack": False, "shards": False,
                        "write": True}

    @dataclass(frozen=True)
    class Probe:  # records the threads the engine sets it up with
        name: str
        threaded: bool
        gather = False

        def setup(self, threads):
            return lambda items, report=None: [threads]

    engine = LocalEngine(workers=3)
    assert engine.map(Probe("tokenize", False), [0]) == [1]
    assert engine.map(Probe("anything", True), [0]) == [3]
