"""The comparison's plots: learning curves from the runs' W&B history and test equity curves
from their equity_test.csv, one colour per configuration (seeds thin, their mean thick)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from experiments.compare import table as cmp
from experiments.compare.table import RunRecord
from experiments.reports.page import new_figure

# Training curves, first found wins: agents' episode return (once episodes end) or mean reward
# per step, then forecasters' training loss.
TRAIN_CURVES = (
    "train/episode_return",
    "train/reward",
    "train/loss_step",
    "train/loss_epoch",
    "train/loss",
)


def _groups(records: Sequence[RunRecord], table: pl.DataFrame, keys: Sequence[str]):
    """(label, colour, runs) per configuration, in table order (best first)."""
    import matplotlib

    colours = matplotlib.colormaps["tab10"].colors
    labels = cmp.config_labels(table, keys)
    for i, row in enumerate(table.iter_rows(named=True)):
        members = [
            r for r in records if all(cmp.value_text(r.config.get(k)) == row[k] for k in keys)
        ]
        label = labels[i] if len(labels[i]) <= 60 else labels[i][:59] + "…"
        yield f"#{i + 1} {label}", colours[i % len(colours)], members


def _draw(ax, curves: list[tuple], label: str, colour) -> None:
    """Each run thin in the configuration's colour; their mean thick where they align."""
    for x, y in curves:
        marker = "o" if len(x) <= 20 else None
        ax.plot(x, y, color=colour, linewidth=0.8, alpha=0.6, marker=marker, markersize=3)
    same = len(curves) > 1 and all(
        len(x) == len(curves[0][0]) and (x == curves[0][0]).all() for x, _ in curves
    )
    if same:
        x = curves[0][0]
        mean = np.mean([y for _, y in curves], axis=0)
        marker = "o" if len(x) <= 20 else None
        label = f"{label} (mean of {len(curves)})"
        ax.plot(x, mean, color=colour, linewidth=2.0, marker=marker, markersize=5, label=label)
    elif curves:
        ax.plot([], [], color=colour, linewidth=2.0, label=label)


def learning_curves(
    path: Path,
    records: Sequence[RunRecord],
    table: pl.DataFrame,
    keys: Sequence[str],
    metric: str,
) -> Path | None:
    """The metric's validation counterpart (``test/x`` -> ``val/x``) and a training curve over
    the trainer's global step, one colour per configuration; None when no run logged either."""
    logged = {k for r in records for row in r.history for k in row}
    wanted = [f"val/{metric[5:]}" if metric.startswith("test/") else metric]
    wanted = [k for k in wanted if k in logged]
    train = [k for k in TRAIN_CURVES if k in logged][:1]
    panels = wanted + train
    if not panels:
        return None
    fig, axes = new_figure(6 * len(panels), 4, columns=len(panels))
    for ax, key in zip(axes, panels, strict=True):
        for label, colour, members in _groups(records, table, keys):
            curves = []
            for r in members:
                rows = [row for row in r.history if cmp.number(row.get(key)) is not None]
                xkey = (
                    "trainer/global_step"
                    if all("trainer/global_step" in w for w in rows)
                    else "_step"
                )
                x = np.array([float(w.get(xkey, i)) for i, w in enumerate(rows)])
                y = np.array([float(w[key]) for w in rows])
                if len(x):
                    curves.append((x, y))
            _draw(ax, curves, label, colour)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.legend(loc="upper left", fontsize=8)  # as equity_curves places its legend
    fig.savefig(path, dpi=100)
    return path


def equity_curves(
    path: Path, records: Sequence[RunRecord], table: pl.DataFrame, keys: Sequence[str]
) -> Path | None:
    """Each run's test equity (equity_test.csv in its folder) in its configuration's colour,
    the baselines in grey (one line per distinct curve); None when no run left the file."""
    frames = {
        r.run_id: pl.read_csv(r.folder / "equity_test.csv", try_parse_dates=True)
        for r in records
        if r.folder is not None and (r.folder / "equity_test.csv").exists()
    }
    if not frames:
        return None
    fig, (ax,) = new_figure(10, 5)
    baselines: dict[str, list[np.ndarray]] = {}
    for label, colour, members in _groups(records, table, keys):
        curves = []
        for r in members:
            frame = frames.get(r.run_id)
            if frame is None:
                continue
            x = frame["timestamp"].to_numpy()
            curves.append((x, frame["strategy"].to_numpy()))
            for name in frame.columns[2:]:
                y = frame[name].to_numpy()
                seen = baselines.setdefault(name, [])
                if not any(len(s) == len(y) and np.allclose(s, y) for s in seen):
                    seen.append(y)
                    style = ("--", ":", "-.")[list(baselines).index(name) % 3]
                    first = len(seen) == 1
                    ax.plot(
                        x,
                        y,
                        color="grey",
                        linestyle=style,
                        linewidth=0.8,
                        alpha=0.7,
                        label=name.replace("_", " ") if first else None,
                    )
        _draw(ax, curves, label, colour)
    ax.set_title("test equity (currency): model by configuration, baselines in grey")
    ax.set_ylabel("equity")
    # A fixed corner, as the run reports' charts: "best" tests every vertex of every line
    # (with 50 runs' 2,300-bar curves and baselines, about 0.8 s of the command).
    ax.legend(loc="upper left", fontsize=8)
    fig.autofmt_xdate()
    fig.savefig(path, dpi=100)
    return path


def overfitting_logits(path: Path, logits: np.ndarray, pbo: float, splits: int) -> Path:
    """The distribution of the CSCV logits (one per in/out-of-sample split): the share at or
    below 0 is the probability of backtest overfitting."""
    fig, (ax,) = new_figure(7, 4)
    finite = logits[np.isfinite(logits)]
    ax.hist(finite, bins=min(50, max(10, int(np.sqrt(finite.size)))), color="tab:blue", alpha=0.8)
    ax.axvline(0.0, color="black", linewidth=1.0, linestyle="--")
    ax.set_title(f"CSCV logits of the validation winner's out-of-sample rank: PBO = {pbo:.3f}")
    ax.set_xlabel("logit of the relative out-of-sample rank (<= 0: below the median)")
    ax.set_ylabel(f"splits (of {splits:,})")
    fig.savefig(path, dpi=100)
    return path


def path_sharpes(path: Path, sharpes: dict[str, np.ndarray]) -> Path:
    """The distribution of the CPCV backtest paths' annualised Sharpe ratios, one strip of
    points per configuration, its median marked."""
    fig, (ax,) = new_figure(max(6, 1.5 * len(sharpes)), 4)
    for i, values in enumerate(sharpes.values()):
        x = np.full(len(values), i, dtype=float) + np.linspace(-0.15, 0.15, len(values))
        ax.scatter(x, values, s=18, alpha=0.8)
        if len(values):
            ax.hlines(np.median(values), i - 0.3, i + 0.3, color="black", linewidth=2)
    ax.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xticks(
        range(len(sharpes)), [lbl if len(lbl) <= 30 else lbl[:29] + "…" for lbl in sharpes]
    )
    ax.set_ylabel("annualised Sharpe ratio of a path")
    ax.set_title("CPCV backtest paths (median in black)")
    fig.savefig(path, dpi=100)
    return path
