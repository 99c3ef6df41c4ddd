"""One config model: YAML + dotted overrides, unknown keys named, validation before work."""
import pytest

from pipelines.cli import main
from pipelines.config import RunConfig, load_run_config
from pipelines.infra.errors import ConfigError

DEMO = "configs/demo.yaml"


def test_demo_config_loads_and_overrides_apply():
    cfg = load_run_config(DEMO, ["pack.seq_len=4096", "output.dir=x",
                                 "input.paths=a.jsonl,b.jsonl.zst", "tokenizer.path=t.json"])
    assert isinstance(cfg, RunConfig)
    assert cfg.pack.seq_len == 4096 and cfg.output.dir == "x"
    assert cfg.input.paths == ("a.jsonl", "b.jsonl.zst") and cfg.tokenizer.path == "t.json"


@pytest.mark.parametrize("override,match", [
    ("pack.seq_lenn=5", "pack.seq_lenn"),
    ("nope=1", "nope"),
    ("pack.algorithm=worst", "worst"),
    ("pack.seq_len=0", "pack.seq_len"),
    ("pack.window_tokens=100", "window_tokens"),
    ("output.compression=gzip", "gzip"),
    ("input.on_error=ignore", "ignore"),
    ("engine=spark", "spark"),
])
def test_bad_keys_and_values_are_named(override, match):
    with pytest.raises(ConfigError, match=match):
        load_run_config(DEMO, [override])


def test_unreadable_config_is_a_clear_error(tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_missing_tokenizer_file_is_a_config_error(tmp_path):
    import pipelines

    with pytest.raises(ConfigError, match="tokenizer.path"):
        pipelines.run(DEMO, [f"tokenizer.path={tmp_path / 'no.json'}",
                             f"output.dir={tmp_path / 'o'}"])


@pytest.mark.parametrize("command", ["run", "verify", "inspect", "report"])
def test_every_command_has_help_with_examples(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "example" in capsys.readouterr().out


def test_example_configs_all_load():
    from pathlib import Path

    for path in sorted(Path("configs").glob("*.yaml")):
        if not path.name.startswith("train_"):
            load_run_config(path)


@pytest.mark.parametrize("key", ["ray.rebalance=never", "beam.rebalance=auto", "ray.io_cpus=1",
                                 "ray.block_mb=8"])
def test_a_removed_key_says_it_was_removed(key):
    with pytest.raises(ConfigError, match=rf"^{key.split('=')[0]} was removed: .*whole units"
                                          r".*; delete it from the config$"):
        load_run_config(None, [key])
