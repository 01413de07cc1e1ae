"""The parts every HTML report is made of: one self-contained page (inline CSS, charts as
inline SVG or PNG data URIs, no script, no network), tables whose number cells carry the key
of the ``metrics.json`` (or CSV) value they show, and matplotlib figures as SVG.

A number cell is ``<td data-key="test.strategy.sharpe">1.8312</td>``: the browser test reads
every ``data-key`` and checks the text against the file it came from.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

MAX_POINTS = 2000  # points per drawn line; longer series are thinned by a fixed stride

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;
max-width:1180px;padding:0 16px;color:#1d2430;background:#fff}
h1{font-size:1.45rem;margin:0 0 4px}h2{font-size:1.1rem;margin:28px 0 8px;
border-bottom:1px solid #dde2ea;padding-bottom:4px}
.sub{color:#5a6472;margin:0 0 12px}.verdict{background:#f3f6fa;border-left:4px solid #4a78c2;
padding:10px 14px;margin:12px 0}.verdict.pass{border-color:#2f9a5b}.verdict.fail{border-color:#c8553d}
table{border-collapse:collapse;font-size:.86rem;margin:6px 0 12px}
th,td{border:1px solid #dde2ea;padding:3px 8px;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}thead th{background:#f3f6fa}
td .iv{color:#5a6472;font-size:.78rem;margin-left:4px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:14px}
figure.chart{margin:0;border:1px solid #eef1f5;padding:6px}figure.chart svg,
figure.chart img{width:100%;height:auto;display:block}
figcaption{font-size:.8rem;color:#5a6472;margin-top:4px}
pre{background:#f6f8fa;padding:8px;font-size:.8rem;overflow:auto;max-height:420px}
.ok{color:#2f9a5b;font-weight:600}.bad{color:#c8553d;font-weight:600}.note{color:#5a6472}
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def number(value: object, digits: int = 4) -> str:
    """``value`` with ``digits`` decimals; ``-`` when missing or not finite."""
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, int):  # counts stay counts
        return str(value)
    try:
        v = float(value)
    except (TypeError, ValueError):
        return esc(value)
    return f"{v:.{digits}f}" if math.isfinite(v) else "-"


def cell(value: object, key: str | None = None, extra: str = "") -> str:
    """A number cell; ``key`` (dotted path into the source file) goes in ``data-key``."""
    attr = f' data-key="{esc(key)}"' if key and _finite(value) else ""
    return f"<td><span{attr}>{number(value)}</span>{extra}</td>"


def _finite(value: object) -> bool:
    try:
        return not isinstance(value, bool) and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def interval(low: object, high: object, key: str) -> str:
    """`` [low, high]`` of an interval, each end keyed (``KEY.low``, ``KEY.high``)."""
    if not (_finite(low) and _finite(high)):
        return ""
    lo = f'<span data-key="{esc(key)}.low">{number(low)}</span>'
    hi = f'<span data-key="{esc(key)}.high">{number(high)}</span>'
    return f'<span class="iv">[{lo}, {hi}]</span>'


def table(header: Sequence[str], rows: Iterable[Sequence[str]], name: str = "") -> str:
    """A table from header labels and rows of already rendered ``<td>`` cells (the first
    cell of each row may be plain text: it becomes the row label)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        first, *rest = row
        label = first if first.startswith("<td") else f"<td>{esc(first)}</td>"
        body.append(f"<tr>{label}{''.join(rest)}</tr>")
    attr = f' data-table="{esc(name)}"' if name else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def figure_svg(fig, name: str, caption: str = "") -> str:
    """A matplotlib ``Figure`` as an inline SVG chart (text kept as text; ids salted with
    ``name`` so the charts of one page never share one)."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": name}):
        # No bbox_inches="tight": new_figure's constrained layout already fits the labels
        # inside the figure, and a tight box draws each chart twice (a fifth of its time).
        fig.savefig(buf, format="svg")
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]
    return chart(svg, name, caption)


def figure_png(path: Path, name: str, caption: str = "") -> str:
    """A PNG file as an inline (data URI) chart."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    img = f'<img alt="{esc(name)}" src="data:image/png;base64,{data}">'
    return chart(img, name, caption)


def chart(body: str, name: str, caption: str) -> str:
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure class="chart" data-chart="{esc(name)}">{body}{cap}</figure>'


def new_figure(width: float = 7.0, height: float = 3.4, rows: int = 1, columns: int = 1, **kwargs):
    """A matplotlib Figure of ``width`` x ``height`` inches (no pyplot: no GUI backend,
    nothing global; the constrained layout fits the labels) and its axes, row by row."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False, **kwargs).ravel()
    for ax in axes:
        ax.grid(alpha=0.3)
    return fig, list(axes)


def thin(*arrays):
    """Every ``k``-th point of each array so that at most :data:`MAX_POINTS` remain."""
    n = len(arrays[0])
    step = max(1, math.ceil(n / MAX_POINTS))
    return tuple(a[::step] for a in arrays) if step > 1 else arrays


def page(title: str, subtitle: str, sections: Sequence[str]) -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{esc(title)}</h1><p class='sub'>{esc(subtitle)}</p>"
        f"{''.join(sections)}</body></html>"
    )


def section(title: str, *body: str) -> str:
    return f"<section><h2>{esc(title)}</h2>{''.join(body)}</section>"


def write_page(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (a report being viewed is never half written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
