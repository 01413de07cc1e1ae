"""What a run reports at its end: the test table beside the baselines, ``metrics.json``, the
equity plot and ``equity_test.csv``, and the logger's summary.

Every family leaves ``module.reports["test"]``: ``strategy`` (the model) and each of its
baselines (buy-and-hold; agents also flat and random) as a test-split ``BacktestResult``,
all priced by the same simulator, and ``module.risk_totals``.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from omegaconf import DictConfig

from datamodules.pipeline import MarketData
from envs.metrics import REPORTED, metrics_to_floats
from experiments.run.console import metrics_table
from experiments.run.plots import equity_plot

log = logging.getLogger(__name__)


def finite(values: dict[str, float]) -> dict[str, float | None]:
    """``values`` with NaN and infinities as None (JSON and W&B summaries have no NaN)."""
    return {k: (v if math.isfinite(v) else None) for k, v in values.items()}


def report(
    cfg: DictConfig,
    module,
    data: MarketData,
    out: Path,
    logger,
    results: dict[str, float],
) -> dict[str, float]:
    """Print the test metrics beside the baselines; write metrics.json, the equity plot and
    equity_test.csv (timestamp, then the equity of the model and of each baseline); send the
    same numbers to the logger's summary. Returns ``results`` (the logged scalars)."""
    test = module.reports["test"]
    scored = {
        name: metrics_to_floats({k: v[0] for k, v in res.metrics.items()})
        for name, res in test.items()
    }
    ours = scored["strategy"]
    market = data.market
    name = str(module.name)
    title = (
        f"{name} on {', '.join(market.tickers)} ({market.source}, {cfg.data.bar_size}) - test split"
    )
    columns = {name if k == "strategy" else k: v for k, v in scored.items()}
    if not cfg.get("quiet"):
        metrics_table(title, columns, [k for k in (*REPORTED, "periods_per_year") if k in ours])
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
    summary = {
        "model": name,
        "tickers": list(market.tickers),
        "synthetic": market.synthetic,
        "test": {k: finite(v) for k, v in scored.items()},
        "logged": finite(results),
        "periods_per_year": market.periods_per_year,
        "split": {"train": data.split.train, "val": data.split.val, "test": data.split.test},
    }
    if module.risk_totals:
        summary["risk_triggers_test"] = dict(module.risk_totals)
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    if logger is not None:
        from PIL import Image

        logger.log_image(key="test/equity_curve", images=[Image.open(plot)])
        values = {}
        for k, metrics in scored.items():
            prefix = "test/" if k == "strategy" else f"test/{k}_"
            values.update({f"{prefix}{m}": v for m, v in finite(metrics).items()})
        logger.log_summary(values)
    log.info("run folder: %s", out)
    return results
