"""The run plan carries the tokenizer: a worker process that unpickles a stage builds the driver's
tokenizer from the plan, with ``tokenizer.path`` gone (a file only the driver had), and encodes
exactly as the driver does. The multi-node test does the same across mount namespaces."""
from __future__ import annotations

import pickle
import subprocess
import sys

from pipelines.config import load_run_config
from pipelines.run_plan import build_run_plan
from pipelines.stages import TokenizeUnits
from tests.pipelines.conftest import english_records, write_jsonl

_WORKER = """
import pickle, sys
from pipelines.steps.tokenize import Tokenize
stage = pickle.load(sys.stdin.buffer)
tok = Tokenize(stage.plan.cfg.tokenizer)
print(tok.tokenizer.encode(sys.argv[1]).ids)
"""


def test_a_worker_builds_the_tokenizer_from_the_plan(tmp_path, tokenizer):
    local = tmp_path / "driver-only" / "tokenizer.json"
    local.parent.mkdir()
    local.write_text(tokenizer.to_str(), encoding="utf-8")
    data = write_jsonl(tmp_path / "a.jsonl", english_records(5))
    cfg = load_run_config({"input": {"paths": [str(data)]}, "tokenizer": {"path": str(local)},
                           "output": {"dir": str(tmp_path / "out")}})
    plan, driver = build_run_plan(cfg)
    assert plan.tokenizer_json == tokenizer.to_str()
    blob = pickle.dumps(TokenizeUnits(plan))
    local.unlink()  # only the driver ever had it
    text = "def f(x):\n    return x  # Zürich <|endoftext|>"
    proc = subprocess.run([sys.executable, "-c", _WORKER, text], input=blob,
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert proc.stdout.decode().strip() == str(driver.tokenizer.encode(text).ids)
