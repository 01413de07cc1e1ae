"""Equity-curve plot: strategy vs buy-and-hold, drawdown below."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def equity_plot(
    path: Path, timestamps: np.ndarray, curves: dict[str, np.ndarray], title: str
) -> Path:
    """Write a PNG of equity curves (currency) over time with their drawdowns (fraction) below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True, height_ratios=(3, 1))
    for name, equity in curves.items():
        top.plot(timestamps, equity, label=name, linewidth=1.0)
        peak = np.maximum.accumulate(equity)
        bottom.plot(timestamps, equity / peak - 1.0, label=name, linewidth=0.8)
    top.set_ylabel("equity")
    top.set_title(title)
    top.legend(loc="upper left")
    top.grid(alpha=0.3)
    bottom.set_ylabel("drawdown")
    bottom.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
