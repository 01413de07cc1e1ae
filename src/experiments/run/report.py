"""What a run reports at its end: the test table beside the baselines with bootstrap intervals,
the verdict against buy-and-hold and flat, the trade summary, ``metrics.json``, the equity plot
and ``equity_test.csv``, per-bar returns and trade journals of validation and test, and the
logger's summary and tables.

Every family leaves ``module.reports[split]`` for ``test`` (and ``val`` when it has one):
``strategy`` (the model) and each of its baselines (buy-and-hold; agents also flat and random)
as a ``BacktestResult``, all priced by the same simulator, and ``module.risk_totals``.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from datamodules.pipeline import MarketData
from datamodules.quality import summary_values
from envs.metrics import REPORTED, metrics_to_floats
from envs.statistics.bootstrap import BOOTSTRAPPED
from experiments.reports.run_page import write_run_report
from experiments.run.console import metrics_table
from experiments.run.evidence import (
    SPLITS,
    SplitEvidence,
    bar_groups,
    split_evidence,
    statistics_settings,
    table_of,
)
from experiments.run.plots import equity_plot

log = logging.getLogger(__name__)


def finite(values: dict[str, float]) -> dict[str, float | None]:
    """``values`` with NaN and infinities as None (JSON and W&B summaries have no NaN)."""
    return {k: (v if math.isfinite(v) else None) for k, v in values.items()}


def scores(results: dict) -> dict[str, dict[str, float]]:
    """The metrics of path 0 of each backtest, as floats."""
    return {
        name: metrics_to_floats({k: v[0] for k, v in res.metrics.items()})
        for name, res in results.items()
    }


def report(
    cfg: DictConfig,
    module,
    data: MarketData,
    out: Path,
    logger,
    results: dict[str, float],
) -> dict[str, float]:
    """Print the test metrics with intervals beside the baselines and the verdict; write
    metrics.json, the equity plot, equity_test.csv and each split's returns and trades; send
    the same numbers to the logger. Returns ``results`` (the logged scalars)."""
    market = data.market
    name = str(module.name)
    settings = statistics_settings(cfg)
    evidence: dict[str, SplitEvidence] = {}
    for split in (s for s in SPLITS if s in module.reports):
        backtests = module.reports[split]
        times = np.asarray(backtests["strategy"].timestamps[1:])
        evidence[split] = split_evidence(
            split,
            backtests,
            list(market.tickers),
            market.periods_per_year,
            settings,
            bar_groups(data.split, split, market.timestamps, times),
        )
    test = module.reports["test"]
    scored = {split: scores(module.reports[split]) for split in evidence}
    title = (
        f"{name} on {', '.join(market.tickers)} ({market.source}, {cfg.data.bar_size}) - test split"
    )
    shown = {name if k == "strategy" else k: v for k, v in scored["test"].items()}
    stats = evidence["test"].statistics
    bounds = {
        (name if series == "strategy" else series): {
            m: (iv.low, iv.high) for m, iv in metrics.items() if m in BOOTSTRAPPED
        }
        for series, metrics in stats.intervals.items()
    }
    for series, p in stats.psr_zero.items():
        shown[name if series == "strategy" else series]["psr"] = p
    ours = scored["test"]["strategy"]
    if not cfg.get("quiet"):
        keys = [k for k in (*REPORTED, "periods_per_year") if k in ours]
        keys.insert(keys.index("sortino") + 1 if "sortino" in keys else 1, "psr")
        metrics_table(title, shown, keys, bounds)
        print(stats.sentence(name))
        if evidence["test"].journal is not None:
            print(trade_line(evidence["test"].journal.summary()))
    equity = {k: res.equity[0].cpu().numpy() for k, res in test.items()}
    plot = equity_plot(
        out / "plots" / "equity_test.png",
        test["strategy"].timestamps,
        {(name if k == "strategy" else k.replace("_", " ")): v for k, v in equity.items()},
        title + (" [synthetic data]" if market.synthetic else ""),
    )
    # The same curves as numbers, for `python -m experiments.compare`: timestamp, strategy, baselines.
    import polars

    polars.DataFrame({"timestamp": test["strategy"].timestamps, **equity}).write_csv(
        out / "equity_test.csv"
    )
    for ev in evidence.values():
        ev.write(out)
    summary = {
        "model": name,
        "tickers": list(market.tickers),
        "synthetic": market.synthetic,
        **{split: {k: finite(v) for k, v in scored[split].items()} for split in evidence},
        "statistics": {split: ev.statistics.as_json(name) for split, ev in evidence.items()},
        "trades": {
            split: finite(ev.journal.summary())
            for split, ev in evidence.items()
            if ev.journal is not None
        },
        "logged": finite(results),
        "periods_per_year": market.periods_per_year,
        "split": {"train": data.split.train, "val": data.split.val, "test": data.split.test},
    }
    if module.risk_totals:
        summary["risk_triggers_test"] = dict(module.risk_totals)
    (out / "metrics.json").write_text(json.dumps(summary, indent=2, default=str))
    write_run_report(out, logger)  # report.html from the files above, logged as an HTML page
    if logger is not None:
        log_everything(logger, plot, scored, evidence)
    log.info("run folder: %s", out)
    return results


def trade_line(s: dict[str, float]) -> str:
    """The trade summary in one line."""

    def num(v: float, fmt: str) -> str:
        return format(v, fmt) if math.isfinite(v) else "n/a"

    return (
        f"Trades (test): {int(s['trades'])} closed, win rate {num(s['win_rate'], '.0%')}, "
        f"average win {num(s['avg_win'], ',.2f')}, average loss {num(s['avg_loss'], ',.2f')}, "
        f"expectancy {num(s['expectancy'], ',.2f')} per trade, profit factor "
        f"{num(s['profit_factor'], '.2f')}, held {num(s['avg_bars_held'], '.1f')} bars "
        f"({num(s['avg_hours_held'], '.1f')} h) on average; {int(s['open_trades'])} open "
        f"(PnL {num(s['open_pnl'], ',.2f')}); costs {num(s['costs'], ',.2f')}."
    )


def log_everything(logger, plot: Path, scored: dict, evidence: dict[str, SplitEvidence]) -> None:
    """The equity plot, every split's metrics and statistics in the summary, the returns and
    trades as tables."""
    from PIL import Image

    logger.log_image(key="test/equity_curve", images=[Image.open(plot)])
    values: dict[str, float | None] = {}
    for split, by_series in scored.items():
        for k, metrics in by_series.items():
            prefix = f"{split}/" if k == "strategy" else f"{split}/{k}_"
            values.update({f"{prefix}{m}": v for m, v in finite(metrics).items()})
    for split, ev in evidence.items():
        values.update(ev.statistics.scalars(f"{split}/"))
        if ev.journal is not None:
            values.update(
                {f"{split}/trades_{k}": v for k, v in finite(ev.journal.summary()).items()}
            )
    logger.log_summary(values)
    for split, ev in evidence.items():
        logger.log_table(f"{split}/returns", *table_of(ev.returns_frame()))
        if ev.journal is not None:
            logger.log_table(f"{split}/trades", *table_of(ev.trades_frame()))


def write_quality(quality: dict | None, out: Path, logger=None) -> None:
    """The data-quality report as ``data_quality.json`` in the run folder, and its numbers
    (``data_quality/<ticker>/<check>``, the statuses) in the logger's summary."""
    if quality is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / "data_quality.json").write_text(json.dumps(quality, indent=2))
    if logger is not None:
        logger.log_summary(summary_values(quality))
