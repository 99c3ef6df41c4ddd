"""Report step: ``stats.json`` (+ manifest totals) -> ``report.html`` with its charts inline (SVG),
and PNG plots on request.

Figures: document length histogram; truncated documents by length, chosen algorithm vs concat
(the paper's Figure 4); fill distribution of the rows; rows over the lower bound. A run writes
the HTML alone (no plotting library: a small run's fixed cost stays well under a second);
``fewtrunc report DIR --png`` rebuilds it from the files and adds the same figures as PNGs.
"""
from __future__ import annotations

import html
from pathlib import Path

from pipelines.infra.atomic import write_text
from pipelines.infra.plotting import figure, save_png

PLOTS = ("lengths.png", "truncation.png", "fill.png", "overhead.png")


_BINS = (0.08, 0.3, 0.98, 0.91)  # room for rotated length-bin labels
_PLAIN = (0.13, 0.15, 0.97, 0.89)


def _labels(edges: list) -> list[str]:
    return [f"{a:,}–{b - 1:,}" if b - a > 1 else f"{a:,}" for a, b in zip(edges, edges[1:])]


def _plots(out: Path, stats: dict) -> None:
    import numpy as np

    algo, L = stats["algorithm"], stats["seq_len"]
    h = stats["length_histogram"]
    x = np.arange(len(h["counts"]))
    fig, ax = figure(8, 3.6, _BINS)
    ax.bar(x, h["counts"], color="#4c72b0")
    ax.set_xticks(x, _labels(h["edges"]), rotation=60, fontsize=7)
    ax.set(xlabel="document length (tokens)", ylabel="documents", title="Document lengths")
    save_png(fig, out / PLOTS[0])

    t = stats["truncation_by_length"]
    docs = np.maximum(np.asarray(t["documents"], float), 1)
    fig, ax = figure(8, 3.6, _BINS)
    ax.bar(x - 0.2, 100 * np.asarray(t["truncated_concat"]) / docs, 0.4, label="concat",
           color="#c44e52")
    ax.bar(x + 0.2, 100 * np.asarray(t["truncated"]) / docs, 0.4, label=algo, color="#55a868")
    ax.set_xticks(x, _labels(t["edges"]), rotation=60, fontsize=7)
    ax.set(xlabel="document length (tokens)", ylabel="% of documents truncated",
           title=f"Truncated documents by length, L={L}: {algo} vs concat")
    ax.legend()
    save_png(fig, out / PLOTS[1])

    f = stats["fill_histogram"]
    fig, ax = figure(6, 3.4, _PLAIN)
    ax.bar(np.asarray(f["edges"][:-1]) * 100, f["counts"], width=4.5, align="edge",
           color="#8172b2")
    ax.set(xlabel="row fill (% of seq_len)", ylabel="rows", yscale="log",
           title="Fill distribution of the rows")
    save_png(fig, out / PLOTS[2])

    fig, ax = figure(6, 3.4, _PLAIN)
    names = ["lower bound", algo, "concat"] if algo != "concat" else ["lower bound", "concat"]
    values = [stats["lower_bound"], stats["rows"], stats["concat"]["rows"]][: len(names)]
    ax.bar(names, values, color=["#999999", "#55a868", "#c44e52"][: len(names)])
    for i, v in enumerate(values):
        extra = v / stats["lower_bound"] - 1 if stats["lower_bound"] else 0.0
        ax.annotate(f"{v:,}\n(+{extra:.4%})", (i, v), ha="center", va="bottom", fontsize=8)
    ax.set(ylabel="rows", title="Rows over the lower bound ceil(tokens/L)")
    ax.margins(y=0.2)
    save_png(fig, out / PLOTS[3])


def _charts(stats: dict) -> list[str]:
    """The four figures as inline SVG, from the same numbers as the PNGs."""
    from pipelines.svgchart import bar_chart

    algo, L = stats["algorithm"], stats["seq_len"]
    h, t, f = stats["length_histogram"], stats["truncation_by_length"], stats["fill_histogram"]
    docs = [max(d, 1) for d in t["documents"]]
    pct = lambda xs: [100 * x / d for x, d in zip(xs, docs)]  # noqa: E731
    names = ["lower bound", algo, "concat"] if algo != "concat" else ["lower bound", "concat"]
    values = [stats["lower_bound"], stats["rows"], stats["concat"]["rows"]][: len(names)]
    bound = stats["lower_bound"] or 1
    notes = [f"{v:,}\n(+{v / bound - 1:.4%})" for v in values]
    fill_labels = [f"{100 * a:.0f}" for a in f["edges"][:-1]]
    return [
        bar_chart(_labels(h["edges"]), [("documents", h["counts"], "#4c72b0")],
                  title="Document lengths", xlabel="document length (tokens)",
                  ylabel="documents"),
        bar_chart(_labels(t["edges"]), [("concat", pct(t["truncated_concat"]), "#c44e52"),
                                        (algo, pct(t["truncated"]), "#55a868")],
                  title=f"Truncated documents by length, L={L}: {algo} vs concat",
                  xlabel="document length (tokens)", ylabel="% of documents truncated"),
        bar_chart(fill_labels, [("rows", f["counts"], "#8172b2")], log=True,
                  title="Fill distribution of the rows", xlabel="row fill (% of seq_len, bin start)",
                  ylabel="rows (log)"),
        bar_chart(names, [("rows", values, ["#999999", "#55a868", "#c44e52"][: len(names)])],
                  notes=notes, width=560,
                  title="Rows over the lower bound ceil(tokens/L)", xlabel="", ylabel="rows"),
    ]


def _n(value, spec: str = ",") -> str:
    """A number for the HTML (``format(value, spec)``); anything else (stats.json and
    manifest.json are files a user can edit) as escaped text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, spec)
    return html.escape(str(value))


def render_html(stats: dict, manifest: dict | None, png: bool = False) -> str:
    """The page; every value from stats.json or the manifest goes in through ``html.escape``
    (``_n``), the SVG charts escape theirs (``svgchart``)."""
    totals = (manifest or {}).get("totals", {})
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td>"
                   f"<td>{_n(v, ',' if isinstance(v, int) else '.6g')}</td></tr>"
                   for k, v in totals.items())
    c = stats["concat"]
    summary = (f"{_n(stats['documents'])} documents, {_n(stats['tokens'])} tokens, L = "
               f"{_n(stats['seq_len'])}. <b>{html.escape(str(stats['algorithm']))}</b>: "
               f"{_n(stats['rows'])} rows (overhead {_n(stats['overhead'], '.4%')} over the "
               f"lower bound {_n(stats['lower_bound'])}), {_n(stats['documents_truncated'])} "
               f"documents truncated. concat: {_n(c['rows'])} rows, "
               f"{_n(c['documents_truncated'])} documents truncated.")
    imgs = "".join(f"<p>{svg}</p>" for svg in _charts(stats))
    if png:
        imgs += "<h2>PNG</h2>" + "".join(f'<p><img src="{p}" alt="{p}"></p>' for p in PLOTS)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>fewtrunc report</title>"
        "<style>body{font-family:sans-serif;max-width:900px;margin:2em auto}"
        "td{padding:2px 12px;border-bottom:1px solid #ddd}</style></head><body>"
        f"<h1>fewtrunc run report</h1><p>{summary}</p><h2>Totals</h2><table>{rows}</table>"
        f"<h2>Figures</h2>{imgs}</body></html>\n"
    )


def write_report(out, stats: dict, manifest: dict | None = None, png: bool = False) -> Path:
    """``report.html`` (charts inline); with ``png``, the four figures as PNG files as well."""
    from pipelines.infra.storage.paths import as_path

    out = as_path(out)
    if png:
        _plots(out, stats)
    path = out / "report.html"
    write_text(path, render_html(stats, manifest, png))
    return path
