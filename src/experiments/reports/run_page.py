"""``report.html`` of one run, built from the files the run left in its folder (nothing is
recomputed): ``metrics.json`` (metrics of the strategy and its baselines, bootstrap intervals,
verdict, trade summary, risk-rule triggers), ``returns_test.csv`` (per-bar returns per series),
``learning_curves.csv`` (agents), ``.hydra/overrides.yaml`` and ``resolved_config.yaml``, and
the deployment gate in the newest ``export*/metadata.json`` when the run was exported (the
export rewrites the page once it has measured the gate).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from experiments.reports import charts
from experiments.reports.page import cell, esc, interval, number, page, section, table, write_page

REPORT_FILE = "report.html"
CURVES_FILE = "learning_curves.csv"
# Curves drawn from learning_curves.csv when present, in this order.
CURVES = ("train/episode_return", "train/reward", "val/score", "val/sharpe")


def series_label(series: str, model: str) -> str:
    return model if series == "strategy" else series.replace("_", " ")


def read_returns(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """Timestamps and per-bar returns per series of a ``returns_*.csv``; None if absent."""
    if not path.is_file():
        return None
    import polars as pl

    frame = pl.read_csv(path, try_parse_dates=True)
    if frame.height == 0 or "timestamp" not in frame.columns:
        return None
    times = frame["timestamp"].cast(pl.Datetime("us")).to_numpy()
    # CPCV folds add the group each bar was tested in: a label, not a series.
    cols = [c for c in frame.columns if c not in ("timestamp", "group")]
    return times, {c: frame[c].cast(pl.Float64).to_numpy() for c in cols}


def metrics_table(metrics: dict, split: str) -> str:
    """Metric rows x series columns of ``metrics.json[split]``, each value with its bootstrap
    interval where ``statistics[split].intervals`` has one; the PSR row from
    ``statistics[split].psr_vs_zero``."""
    by_series: dict = metrics.get(split) or {}
    stats = (metrics.get("statistics") or {}).get(split) or {}
    intervals = stats.get("intervals") or {}
    names = list(by_series)
    keys: list[str] = []
    for values in by_series.values():
        keys += [k for k in values if k not in keys]
    model = str(metrics.get("model", "strategy"))
    rows = []
    for key in keys:
        row = [key]
        for series in names:
            iv = (intervals.get(series) or {}).get(key) or {}
            base = f"statistics.{split}.intervals.{series}.{key}"
            extra = interval(iv.get("low"), iv.get("high"), base) if iv else ""
            row.append(cell(by_series[series].get(key), f"{split}.{series}.{key}", extra))
        rows.append(row)
    psr = stats.get("psr_vs_zero") or {}
    if psr and "psr" not in keys:
        rows.append(
            ["psr (vs 0)"]
            + [cell(psr.get(s), f"statistics.{split}.psr_vs_zero.{s}") for s in names]
        )
    header = ["metric", *(series_label(s, model) for s in names)]
    return table(header, rows, name=f"metrics_{split}")


def verdict(metrics: dict, split: str = "test") -> str:
    stats = (metrics.get("statistics") or {}).get(split) or {}
    sentence = stats.get("verdict")
    if not sentence:
        return ""
    beats = stats.get("beats_buy_and_hold") and stats.get("beats_flat")
    level = "pass" if beats else "fail"
    extra = []
    if stats.get("psr_vs_buy_and_hold") is not None:
        key = f"statistics.{split}.psr_vs_buy_and_hold"
        value = number(stats["psr_vs_buy_and_hold"])
        extra.append(
            f"PSR of the Sharpe difference vs buy-and-hold: <span data-key='{key}'>{value}</span>."
        )
    method = stats.get("method")
    if method:
        extra.append(f"<span class='note'>Method: {esc(method)}.</span>")
    return f"<div class='verdict {level}'>{esc(sentence)}<br>{' '.join(extra)}</div>"


def key_value_table(values: dict, prefix: str, name: str) -> str:
    rows = [[k, cell(v, f"{prefix}.{k}")] for k, v in values.items()]
    return table(["", "value"], rows, name=name)


def learning_section(folder: Path) -> str:
    path = folder / CURVES_FILE
    if not path.is_file():
        return section(
            "Learning curves",
            "<p class='note'>This run kept no learning_curves.csv (agents keep one; a "
            "forecaster's curves are in its logger's history).</p>",
        )
    import polars as pl

    frame = pl.read_csv(path, infer_schema_length=None)
    curves = {
        c: frame[c].cast(pl.Float64).fill_null(math.nan).to_numpy()
        for c in CURVES
        if c in frame.columns and frame[c].drop_nulls().len()
    }
    if not curves or frame.height == 0:
        return section("Learning curves", "<p class='note'>learning_curves.csv has no rows.</p>")
    frames = frame["frames"].cast(pl.Float64).to_numpy()
    last = {c: v[np.isfinite(v)][-1] for c, v in curves.items()}
    rows = [[c, cell(v)] for c, v in last.items()]
    return section(
        "Learning curves",
        "<div class='grid'>",
        charts.learning_curves(frames, curves),
        "<div>",
        f"<p>{frame.height} iterations, {number(frames[-1], 0)} frames.</p>",
        table(["last value", ""], rows, name="learning_last"),
        "</div></div>",
    )


def newest_export(folder: Path) -> tuple[str, dict] | None:
    """The name and ``metadata.json`` of the newest ``export*/`` folder of the run (an
    ``export-failed-sla*`` folder included), if any."""
    found = sorted(
        (p for p in folder.glob("export*/metadata.json") if p.is_file()),
        key=lambda p: p.stat().st_mtime,
    )
    if not found:
        return None
    try:
        return found[-1].parent.name, json.loads(found[-1].read_text())
    except (OSError, ValueError):
        return None


def gate_section(folder: Path) -> str:
    newest = newest_export(folder)
    if newest is None:
        return section("Deployment gate", "<p class='note'>The run was not exported.</p>")
    where, meta = newest
    sla = meta.get("sla")
    if not sla:
        return section(
            "Deployment gate", "<p class='note'>The export holds no SLA measurement.</p>"
        )
    rows = []
    for line in sla.get("checks", []):
        passed = line.get("passed")
        mark = "-" if passed is None else ("pass" if passed else "FAIL")
        klass = "note" if passed is None else ("ok" if passed else "bad")
        rows.append(
            [
                line["name"],
                cell(line.get("value"), f"sla.{line['name']}.value"),
                f"<td>{esc(line.get('rule', ''))}</td>",
                f"<td class='{klass}'>{mark}</td>",
            ]
        )
    state = "passed" if sla.get("passed") else "failed"
    enforce = "enforced" if sla.get("enforce") else "not enforced (export.sla.enforce=false)"
    return section(
        "Deployment gate",
        f"<p>{esc(where)}/: export.sla {state}; {esc(enforce)}.</p>",
        table(["check", "measured", "threshold", ""], rows, name="sla"),
    )


def config_section(folder: Path) -> str:
    overrides: list[str] = []
    path = folder / ".hydra" / "overrides.yaml"
    if path.is_file():
        import yaml

        overrides = [str(o) for o in (yaml.safe_load(path.read_text()) or [])]
    listed = "".join(f"<li><code>{esc(o)}</code></li>" for o in overrides)
    body = [f"<ul data-table='overrides'>{listed}</ul>" if listed else "<p>No overrides.</p>"]
    resolved = folder / "resolved_config.yaml"
    if resolved.is_file():
        body.append(
            f"<details><summary>resolved_config.yaml</summary><pre>"
            f"{esc(resolved.read_text())}</pre></details>"
        )
    return section("Config overrides", *body)


def run_report(folder: Path) -> str:
    """The report page of the run in ``folder`` (see the module docstring)."""
    folder = Path(folder)
    metrics = json.loads((folder / "metrics.json").read_text())
    model = str(metrics.get("model", "strategy"))
    tickers = ", ".join(metrics.get("tickers") or [])
    title = f"{model} on {tickers}"
    split = metrics.get("split") or {}
    source = "synthetic data" if metrics.get("synthetic") else "market data"
    subtitle = (
        f"Run {folder.name} · {source} · test bars {split.get('test')} · "
        f"{number(metrics.get('periods_per_year'), 0)} bars a year"
    )
    sections = [verdict(metrics), section("Metrics, test split", metrics_table(metrics, "test"))]
    read = read_returns(folder / "returns_test.csv")
    if read is not None:
        times, returns = read
        labelled = {series_label(s, model): r for s, r in returns.items()}
        ppy = float(metrics.get("periods_per_year") or 252)
        strategy = returns.get("strategy", next(iter(returns.values())))
        sections.append(
            section(
                "Charts, test split",
                "<div class='grid'>",
                charts.equity_and_drawdown(times, labelled),
                charts.rolling_sharpe(times, labelled, ppy),
                charts.monthly_returns(times, strategy, model),
                charts.return_distribution(
                    {k: v for k, v in labelled.items() if k in (model, "buy and hold")}
                ),
                "</div>",
            )
        )
    else:
        sections.append(section("Charts", "<p class='note'>No returns_test.csv.</p>"))
    trades = metrics.get("trades") or {}
    if trades:
        body = [
            f"<div><h3>{esc(s)}</h3>{key_value_table(v, f'trades.{s}', f'trades_{s}')}</div>"
            for s, v in trades.items()
        ]
        sections.append(section("Trade journal", "<div class='grid'>", *body, "</div>"))
    else:
        sections.append(section("Trade journal", "<p class='note'>No trade journal.</p>"))
    risk = metrics.get("risk_triggers_test")
    if risk:
        sections.append(
            section(
                "Risk-rule triggers, test split",
                key_value_table(risk, "risk_triggers_test", "risk"),
            )
        )
    else:
        sections.append(section("Risk-rule triggers", "<p class='note'>None recorded.</p>"))
    sections.append(learning_section(folder))
    if metrics.get("val"):
        sections.append(section("Metrics, validation split", metrics_table(metrics, "val")))
    sections.append(gate_section(folder))
    sections.append(config_section(folder))
    return page(title, subtitle, sections)


def write_run_report(folder: Path, logger=None) -> Path:
    """Write ``report.html`` into the run ``folder`` and, with a ``logger`` (a
    :class:`experiments.run.tracking.RunLogger`), log it as an HTML page; return its path."""
    folder = Path(folder)
    path = write_page(folder / REPORT_FILE, run_report(folder))
    if logger is not None:
        from experiments.run.tracking import log_html

        log_html(logger, "report", path)
    return path
