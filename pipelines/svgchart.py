"""Bar charts as inline SVG for the run report: no plotting library to import (matplotlib's import
and four figures were most of a small run's time), crisp at any zoom, one self-contained HTML."""
from __future__ import annotations

import math
from html import escape

FONT = "font-family='sans-serif'"


def _ticks(top: float, log: bool) -> list[float]:
    if top <= 0:
        return [0.0]
    if log:
        return [10.0**k for k in range(0, int(math.floor(math.log10(top))) + 1)]
    base = 10 ** (math.floor(math.log10(top)) - 1)
    step = next(base * m for m in (1, 2, 5, 10, 20, 50, 100) if top / (base * m) <= 6)
    return [step * k for k in range(int(top // step) + 1)]


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 1 or v == 0 else f"{v:.2g}"


def bar_chart(labels: list[str], series: list[tuple[str, list[float], object]], *, title: str,
              xlabel: str, ylabel: str, log: bool = False, notes: list[str] | None = None,
              width: int = 760, height: int = 330) -> str:
    """Grouped bars: one group per label, one bar per (name, values, colour) series.

    ``log`` puts the y axis on a log scale from 0.5 (a count of 1 still shows; zeros are drawn
    empty); ``notes`` are texts over the groups (e.g. the value and its excess over a bound); a
    colour may be a list, one per group. A legend appears for 2+ series.
    """
    rotate = len(labels) > 8 and max(map(len, labels), default=0) > 3
    left, right, top, bottom = 64, 12, 44, 86 if rotate else 44
    pw, ph = width - left - right, height - top - bottom
    values = [v for _, vals, _ in series for v in vals]
    vmax = max(values, default=0) or 1
    hi = 10 ** math.ceil(math.log10(vmax)) if log else vmax * (1.18 if notes else 1.05)

    def y(v: float) -> float:
        if log:
            frac = math.log10(2 * v) / math.log10(2 * hi) if v >= 0.5 else 0.0
        else:
            frac = v / hi
        return top + ph * (1 - frac)

    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
           f"viewBox='0 0 {width} {height}' role='img' aria-label='{escape(title)}'>",
           f"<rect width='{width}' height='{height}' fill='white'/>",
           f"<text x='{width / 2}' y='18' text-anchor='middle' {FONT} font-size='14'>"
           f"{escape(title)}</text>"]
    for t in _ticks(hi, log):
        ty = y(t)
        out.append(f"<line x1='{left}' x2='{left + pw}' y1='{ty:.1f}' y2='{ty:.1f}' "
                   "stroke='#e5e5e5'/>")
        out.append(f"<text x='{left - 6}' y='{ty + 4:.1f}' text-anchor='end' {FONT} "
                   f"font-size='10'>{_fmt(t)}</text>")
    group = pw / max(len(labels), 1)
    bar = group * 0.8 / max(len(series), 1)
    for i, label in enumerate(labels):
        x0 = left + group * i + group * 0.1
        for k, (name, vals, colour) in enumerate(series):
            v = vals[i]
            if v <= 0 or (log and v < 0.5):
                continue
            fill = colour[i] if isinstance(colour, (list, tuple)) else colour
            by = y(v)
            out.append(f"<rect x='{x0 + k * bar:.1f}' y='{by:.1f}' width='{bar:.1f}' "
                       f"height='{top + ph - by:.1f}' fill='{fill}'>"
                       f"<title>{escape(name)}, {escape(label)}: {_fmt(v)}</title></rect>")
        cx = x0 + group * 0.4
        if notes:
            ny = y(max(vals[i] for _, vals, _ in series)) - 6
            for j, line in enumerate(reversed(notes[i].split("\n"))):
                out.append(f"<text x='{cx:.1f}' y='{ny - 12 * j:.1f}' text-anchor='middle' "
                           f"{FONT} font-size='10'>{escape(line)}</text>")
        ly = top + ph + 12
        if rotate:
            out.append(f"<text transform='translate({cx:.1f},{ly}) rotate(-50)' "
                       f"text-anchor='end' {FONT} font-size='9'>{escape(label)}</text>")
        else:
            out.append(f"<text x='{cx:.1f}' y='{ly + 2}' text-anchor='middle' {FONT} "
                       f"font-size='10'>{escape(label)}</text>")
    out.append(f"<line x1='{left}' x2='{left + pw}' y1='{top + ph}' y2='{top + ph}' "
               "stroke='#333'/>")
    out.append(f"<text x='{left + pw / 2}' y='{height - 6}' text-anchor='middle' {FONT} "
               f"font-size='11'>{escape(xlabel)}</text>")
    out.append(f"<text transform='translate(14,{top + ph / 2}) rotate(-90)' "
               f"text-anchor='middle' {FONT} font-size='11'>{escape(ylabel)}</text>")
    if len(series) > 1:
        for k, (name, _, colour) in enumerate(series):
            lx = left + 10 + 110 * k
            out.append(f"<rect x='{lx}' y='{top - 17}' width='12' height='10' fill='{colour}'/>")
            out.append(f"<text x='{lx + 16}' y='{top - 8}' {FONT} font-size='11'>"
                       f"{escape(name)}</text>")
    out.append("</svg>")
    return "\n".join(out)
