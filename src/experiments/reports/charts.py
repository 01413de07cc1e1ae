"""The charts of the reports, drawn by matplotlib and embedded as SVG: equity and drawdown,
rolling Sharpe ratio, monthly returns heatmap, the distribution of per-bar returns and the
learning curves. Inputs are per-bar simple returns (fractions) keyed by series name, with
their timestamps (numpy ``datetime64``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from experiments.reports.page import figure_svg, new_figure, thin

COLORS = {"buy and hold": "#7f8c9a", "flat": "#b8c0cc", "random": "#d9a35f"}
STRATEGY_COLOR = "#2f62b8"


def _color(name: str, first: bool) -> str:
    return STRATEGY_COLOR if first else COLORS.get(name, "#8e6bbf")


def equity_and_drawdown(times: np.ndarray, returns: Mapping[str, np.ndarray]) -> str:
    """Growth of 1 (top) and drawdown from the running peak (bottom, fraction) per series."""
    fig, (top, bottom) = new_figure(7.2, 4.6, rows=2, sharex=True, height_ratios=(3, 1.3))
    for i, (name, r) in enumerate(returns.items()):
        equity = np.cumprod(1.0 + np.nan_to_num(r))
        drawdown = equity / np.maximum.accumulate(equity) - 1.0
        t, e, d = thin(times, equity, drawdown)
        width = 1.6 if i == 0 else 1.0
        top.plot(t, e, label=name, color=_color(name, i == 0), linewidth=width)
        bottom.plot(t, d, color=_color(name, i == 0), linewidth=width)
    top.set_ylabel("growth of 1")
    top.legend(loc="upper left", fontsize=8)
    bottom.set_ylabel("drawdown")
    bottom.yaxis.set_major_formatter(_percent())
    fig.autofmt_xdate()
    return figure_svg(fig, "equity", "Equity (growth of 1) and drawdown, test split")


def rolling_window(bars: int, periods_per_year: float) -> int:
    """Bars of the rolling Sharpe window: about a week of bars, within a quarter of the span
    and at least 5."""
    week = int(round(periods_per_year / 52)) if periods_per_year > 0 else 20
    return max(5, min(week, max(bars // 4, 5)))


def rolling_moments(x: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample standard deviation of every ``window`` consecutive values, from
    running sums (memory linear in ``len(x)``, whatever the window)."""
    x = np.asarray(x, dtype=np.float64)
    c1 = np.concatenate([[0.0], np.cumsum(x)])
    c2 = np.concatenate([[0.0], np.cumsum(x * x)])
    s1, s2 = c1[window:] - c1[:-window], c2[window:] - c2[:-window]
    var = np.maximum(s2 - s1 * s1 / window, 0.0) / (window - 1)
    return s1 / window, np.sqrt(var)


def rolling_sharpe(
    times: np.ndarray, returns: Mapping[str, np.ndarray], periods_per_year: float
) -> str:
    """Annualised Sharpe ratio over a rolling window (see :func:`rolling_window`)."""
    n = len(times)
    window = rolling_window(n, periods_per_year)
    fig, (ax,) = new_figure()
    for i, (name, r) in enumerate(returns.items()):
        if n < window or not np.nanstd(r) > 0:
            continue
        mean, sd = rolling_moments(np.nan_to_num(r), window)
        with np.errstate(divide="ignore", invalid="ignore"):
            sharpe = np.where(sd > 0, mean / sd, np.nan) * math.sqrt(periods_per_year)
        t, s = thin(times[window - 1 :], sharpe)
        ax.plot(t, s, label=name, color=_color(name, i == 0), linewidth=1.4 if i == 0 else 0.9)
    ax.axhline(0.0, color="#444", linewidth=0.6)
    ax.set_ylabel("annualised Sharpe")
    ax.legend(loc="upper left", fontsize=8)
    fig.autofmt_xdate()
    return figure_svg(fig, "rolling_sharpe", f"Rolling Sharpe ratio over {window} bars, annualised")


def monthly_returns(times: np.ndarray, r: np.ndarray, name: str) -> str:
    """Compounded return of each calendar month (rows: years, columns: months), percent."""
    months = times.astype("datetime64[M]")
    keys = np.unique(months)
    table: dict[tuple[int, int], float] = {}
    for m in keys:
        ret = float(np.prod(1.0 + np.nan_to_num(r[months == m])) - 1.0)
        year, month = int(str(m)[:4]), int(str(m)[5:7])
        table[(year, month)] = ret
    years = sorted({y for y, _ in table})
    grid = np.full((len(years), 12), np.nan)
    for (y, m), v in table.items():
        grid[years.index(y), m - 1] = v * 100
    fig, (ax,) = new_figure(7.2, 0.9 + 0.45 * len(years))
    ax.grid(False)
    limit = np.nanmax(np.abs(grid)) if np.isfinite(grid).any() else 1.0
    image = ax.imshow(grid, cmap="RdYlGn", vmin=-limit, vmax=limit, aspect="auto")
    for (y, m), v in table.items():
        ax.text(m - 1, years.index(y), f"{v * 100:+.2f}%", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(12), ["J", "F", "M", "A", "M", "J", "J", "A", "S", "O", "N", "D"])
    ax.set_yticks(range(len(years)), [str(y) for y in years])
    fig.colorbar(image, ax=ax, label="%", shrink=0.9)
    return figure_svg(fig, "monthly_returns", f"Monthly returns of {name}, test split (percent)")


def return_distribution(returns: Mapping[str, np.ndarray]) -> str:
    """Histogram of per-bar returns in basis points, the strategy over buy-and-hold."""
    fig, (ax,) = new_figure()
    shown = [(n, np.nan_to_num(r) * 1e4) for n, r in returns.items() if np.nanstd(r) > 0][:2]
    if shown:
        values = np.concatenate([v for _, v in shown])
        edges = np.histogram_bin_edges(values, bins=min(60, max(10, len(values) // 10)))
        for i, (name, v) in enumerate(shown):
            ax.hist(v, bins=edges, alpha=0.55, label=name, color=_color(name, i == 0))
        ax.legend(fontsize=8)
    ax.set_xlabel("per-bar return (bps)")
    ax.set_ylabel("bars")
    return figure_svg(fig, "return_distribution", "Distribution of per-bar returns, test split")


def learning_curves(frames: np.ndarray, curves: Mapping[str, np.ndarray]) -> str:
    """One panel per curve (training episode return, validation score, ...) over frames."""
    names: Sequence[str] = list(curves)
    fig, axes = new_figure(7.2, 1.9 * len(names) + 0.6, rows=len(names), sharex=True)
    for ax, name in zip(axes, names, strict=True):
        y = curves[name]
        keep = np.isfinite(y)
        ax.plot(frames[keep], y[keep], marker="o" if keep.sum() < 40 else None, markersize=3)
        ax.set_ylabel(name, fontsize=8)
    axes[-1].set_xlabel("frames")
    return figure_svg(fig, "learning_curves", "Learning curves (learning_curves.csv)")


def _percent():
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(1.0, decimals=1)
