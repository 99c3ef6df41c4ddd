"""Config errors are bounded (issue 21, points 7 and 12): a YAML alias bomb is refused before
it is expanded, a message quotes at most ~200 characters of any value, and every numeric key is
checked (``pack.optimal_time_limit=-5`` used to be accepted)."""
from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.config import load_run_config
from pipelines.infra.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
DEMO = "configs/demo.yaml"


def alias_bomb(levels: int, key: str = "text_field") -> str:
    """``input.<key>``: a list of anchors, each 9 aliases of the one before: 9**levels values
    once expanded, from a text of ~60 bytes per level."""
    lines = ["input:", f"  {key}:", "    - &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"    - &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def _small_memory():  # the child may not grow past 2 GiB of address space (today's: ~3 GB/min)
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def test_a_billion_laughs_config_is_refused_in_one_short_line(tmp_path):
    """9**9 = 387 million values: the error message used to print them all (2.5 GB after 60 s).
    A hang guard, not a timing check: the refusal takes ~0.1 s here."""
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb(9))
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", str(bomb)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, preexec_fn=_small_memory)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1 and len(proc.stderr) < 400, proc.stderr[:2000]
    assert "aliases expand to more than 100,000 values" in proc.stderr


def test_alias_bombs_in_overrides_and_recursive_aliases_are_refused():
    """9**6 = 531,441 values (a 4 MB message before); recursion through an alias is refused
    too (a config is a tree); aliases that stay small keep working."""
    levels = ["&l0 [" + ", ".join(["lol"] * 9) + "]"]
    levels += [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 6)]
    with pytest.raises(ConfigError) as info:
        load_run_config(DEMO, ["input.text_field=[" + ", ".join(levels) + "]"])
    assert "aliases expand to more than 100,000 values" in str(info.value)
    assert len(str(info.value)) < 400
    with pytest.raises(ConfigError, match="refers to a node that contains it"):
        load_run_config(DEMO, ["input.include=&a [x, *a]"])
    small = load_run_config(DEMO, ["input.include=[&g '*.py', *g]"])  # aliases that stay small
    assert small.input.include == ("*.py", "*.py")


LONG = "x" * 100_000


@pytest.mark.parametrize("override,shown", [
    ("pack.algorithm=" + LONG, "100,000 characters"),  # a Literal
    ("pack.seq_len=" + LONG, "100,000 characters"),  # an int
    ("pack.seq_len=" + "7" * 5_000, "5,000 characters"),  # digits past Python's int() limit
    ("input.text_field=[" + ",".join(["abc"] * 20_000) + "]", "'abc', 'abc'"),  # a list
    ("input.paths={" + ",".join(f"k{i}: v" for i in range(20_000)) + "}", "'k0': 'v'"),
    ("input." + "k" * 100_000 + "=1", "input.kkkk"),  # an unknown key's name
])
def test_an_error_quotes_at_most_about_200_characters_of_a_value(override, shown):
    with pytest.raises(ConfigError) as info:
        load_run_config(DEMO, [override])
    text = str(info.value)
    assert shown in text
    assert len(text) < 700, text[:1000]


def test_a_config_file_with_a_huge_integer_is_a_config_error(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("pack:\n  seq_len: " + "9" * 5_000 + "\n")
    with pytest.raises(ConfigError, match="cannot read config") as info:
        load_run_config(str(cfg))
    assert len(str(info.value)) < 700


@pytest.mark.parametrize("override,key", [
    ("pack.optimal_time_limit=-5", "pack.optimal_time_limit"),
    ("pack.optimal_time_limit=0", "pack.optimal_time_limit"),
    ("pack.optimal_time_limit=.nan", "pack.optimal_time_limit"),
    ("pack.optimal_time_limit=.inf", "pack.optimal_time_limit"),
    ("storage.connect_timeout=.nan", "storage.connect_timeout"),
    ("storage.request_timeout=.inf", "storage.request_timeout"),
    ("storage.retry_seconds=.nan", "storage.retry_seconds"),
    ("ray.cpus_per_actor=.nan", "ray.cpus_per_actor"),
    ("ray.max_restarts=-2", "ray.max_restarts"),
    ("ray.max_task_retries=-7", "ray.max_task_retries"),
])
def test_every_numeric_key_is_checked(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_run_config(DEMO, [override])
