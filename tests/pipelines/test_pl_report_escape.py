"""``fewtrunc report`` escapes every value it puts into report.html (issue 21, point 12):
stats.json and manifest.json are files anyone can edit, and the page opens in a browser."""
from __future__ import annotations

import json

import pipelines
from pipelines.cli import main
from tests.pipelines.conftest import base_overrides, english_records, write_jsonl

SCRIPT = "<script>alert('x')</script>"


def test_strings_from_stats_and_manifest_are_escaped(tmp_path, capsys):
    src = write_jsonl(tmp_path / "d.jsonl", english_records(8))
    out = tmp_path / "out"
    pipelines.run("configs/demo.yaml", base_overrides(out, str(src)))
    stats = json.loads((out / "stats.json").read_text())
    stats["algorithm"] = SCRIPT
    (out / "stats.json").write_text(json.dumps(stats))
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["totals"][SCRIPT] = SCRIPT  # a key and a value that are not numbers
    manifest["totals"]["overhead"] = "<img src=x onerror=alert(1)>"
    (out / "manifest.json").write_text(json.dumps(manifest))

    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "<script" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page  # shown, as text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert f"{stats['rows']:,} rows" in page  # numbers are formatted as before
