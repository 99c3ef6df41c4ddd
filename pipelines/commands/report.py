"""``fewtrunc report DIR``: (re)build report.html and its plots from stats.json."""
from __future__ import annotations

HELP = "(re)build report.html (and, with --png, PNG plots) of a finished run"
DESCRIPTION = """\
Reads stats.json and manifest.json of DIR and writes report.html with four charts: document
lengths, truncated documents by length (chosen algorithm vs concat, the paper's Figure 4), the
fill distribution of the rows, and rows over the lower bound. The charts are inline SVG; --png
also writes them as lengths.png, truncation.png, fill.png and overhead.png (matplotlib).

examples:
  fewtrunc report out/demo && xdg-open out/demo/report.html
  fewtrunc report out/demo --png     # PNG files too, for slides and papers
"""


def add_arguments(parser) -> None:
    parser.add_argument("dir", help="an output directory of `fewtrunc run`")
    parser.add_argument("--png", action="store_true", help="also write the figures as PNG files")


def main(args) -> int:
    import json
    from pipelines.infra.errors import InputError
    from pipelines.infra.storage.paths import as_path
    from pipelines.steps.report import write_report
    from pipelines.infra.storage.redact import redact_text

    out = as_path(args.dir)
    if not (out / "stats.json").is_file():
        raise InputError(str(out), "no stats.json: not a finished fewtrunc run")
    stats = json.loads((out / "stats.json").read_text())
    mpath = out / "manifest.json"
    manifest = json.loads(mpath.read_text()) if mpath.is_file() else None
    print(redact_text(str(write_report(out, stats, manifest, png=args.png))))
    return 0
