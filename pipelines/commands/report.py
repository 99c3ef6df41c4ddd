"""``fewtrunc report DIR``: (re)build report.html and its plots from stats.json."""
from __future__ import annotations

HELP = "(re)build report.html and the PNG plots of a finished run"
DESCRIPTION = """\
Reads stats.json and manifest.json of DIR and writes report.html with four plots: document
lengths, truncated documents by length (chosen algorithm vs concat, the paper's Figure 4), the
fill distribution of the rows, and rows over the lower bound.

example:
  fewtrunc report out/demo && xdg-open out/demo/report.html
"""


def add_arguments(parser) -> None:
    parser.add_argument("dir", help="an output directory of `fewtrunc run`")


def main(args) -> int:
    import json
    from pathlib import Path

    from pipelines.errors import InputError
    from pipelines.steps.report import write_report

    out = Path(args.dir)
    if not (out / "stats.json").is_file():
        raise InputError(str(out), "no stats.json: not a finished fewtrunc run")
    stats = json.loads((out / "stats.json").read_text())
    mpath = out / "manifest.json"
    manifest = json.loads(mpath.read_text()) if mpath.is_file() else None
    print(write_report(out, stats, manifest))
    return 0
