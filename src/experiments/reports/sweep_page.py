"""``comparison.html`` of a sweep, from what ``python -m experiments.compare`` computed and
wrote: the table of configurations (comparison.csv), the best-two sentence and the sweep
statistics in words (deflated Sharpe ratio, probability of backtest overfitting, SPA test,
CPCV paths: :class:`experiments.compare.selection.SweepReport`), their numbers
(selection.csv, cpcv_paths.csv) and the comparison's PNG plots, embedded.

Number cells carry ``data-key="comparison.ROW.COLUMN"`` (``selection.ROW.value``), ROW
counting from 0 in the CSV, so a test can check the page against the files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from experiments.reports.page import (
    cell,
    esc,
    figure_png,
    page,
    section,
    table,
    write_page,
)

COMPARISON_FILE = "comparison.html"


def frame_table(frame, name: str) -> str:
    """A polars frame as a table; numeric cells keyed ``NAME.ROW.COLUMN``."""
    numeric = {c for c, t in frame.schema.items() if t.is_numeric()}
    rows = []
    for i, row in enumerate(frame.iter_rows(named=True)):
        cells = [
            cell(v, f"{name}.{i}.{c}")
            if c in numeric
            else f"<td>{esc('' if v is None else v)}</td>"
            for c, v in row.items()
        ]
        rows.append(cells)
    return table(list(frame.columns), rows, name=name)


def comparison_page(
    out: Path,
    title: str,
    table_frame,
    lines: Sequence[str],
    notes: Sequence[str],
    plots: Sequence[Path],
) -> str:
    import polars as pl

    sections = [
        section("Configurations", frame_table(table_frame, "comparison")),
        section("What the sweep says", *(f"<p>{esc(line)}</p>" for line in lines)),
    ]
    selection = out / "selection.csv"
    if selection.is_file():
        frame = pl.read_csv(selection)
        sections.append(
            section("Sweep statistics (selection.csv)", frame_table(frame, "selection"))
        )
    paths = out / "cpcv_paths.csv"
    if paths.is_file():
        frame = pl.read_csv(paths)
        sections.append(
            section(
                "CPCV paths (cpcv_paths.csv)",
                "<details><summary>every path's Sharpe ratio</summary>",
                frame_table(frame, "cpcv_paths"),
                "</details>",
            )
        )
    charts = [figure_png(p, p.stem, p.name) for p in plots if Path(p).is_file()]
    if charts:
        sections.append(section("Plots", "<div class='grid'>", *charts, "</div>"))
    if notes:
        sections.append(section("Notes", *(f"<p class='note'>{esc(n)}</p>" for n in notes)))
    return page("Comparison", title, sections)


def write_comparison_html(
    out: Path,
    title: str,
    table_frame,
    lines: Sequence[str],
    notes: Sequence[str],
    plots: Sequence[Path],
) -> Path:
    """Write ``comparison.html`` into ``out``; return its path."""
    out = Path(out)
    text = comparison_page(out, title, table_frame, lines, notes, plots)
    return write_page(out / COMPARISON_FILE, text)
