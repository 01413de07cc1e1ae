"""The per-bar returns each run kept (``returns_<split>.csv`` in its folder; the
``<split>/returns`` table of its W&B run online), so a sweep is re-analysed without re-running
it, and the configurations' series aligned on the bars they share."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from experiments.compare.table import RunRecord, config_filter


def run_returns(record: RunRecord, split: str) -> pl.DataFrame | None:
    """``timestamp`` and one column per series (``strategy``, ``buy_and_hold``...) of one run's
    ``split``, or None when the run kept none (a run of an older version, a crashed run)."""
    if record.folder is not None:
        path = Path(record.folder) / f"returns_{split}.csv"
        if path.exists():
            return pl.read_csv(path, try_parse_dates=True)
    ref = record.summary.get(f"{split}/returns")
    if record.fetch_file is not None and isinstance(ref, dict) and ref.get("path"):
        local = record.fetch_file(str(ref["path"]))
        if local is not None and Path(local).exists():
            table = json.loads(Path(local).read_text())
            frame = pl.DataFrame(table["data"], schema=table["columns"], orient="row")
            return frame.with_columns(pl.col("timestamp").str.to_datetime(strict=False))
    return None


@dataclass(frozen=True)
class Trials:
    """Per-bar returns of each configuration on one split, over the bars all of them share:
    ``returns`` (T, N), one column per configuration (the mean over its seeds' series, an
    equal-weight mix of them; over the folds that tested a bar, for CPCV), ``rows`` the configurations' row numbers in the comparison
    table (0-based), ``benchmark`` buy-and-hold's returns over the same bars (None if no run
    kept it), ``timestamps`` (T,), ``missing`` the rows left out (no returns kept) and
    ``dropped`` the bars some configuration lacked."""

    split: str
    returns: np.ndarray
    rows: list[int]
    benchmark: np.ndarray | None
    timestamps: np.ndarray
    missing: list[int]
    dropped: int

    @property
    def count(self) -> int:
        return len(self.rows)


def trials(
    records: Sequence[RunRecord],
    runs: pl.DataFrame,
    table: pl.DataFrame,
    keys: Sequence[str],
    split: str,
) -> Trials | None:
    """Each configuration (row of ``table``) as one trial of ``split``; None when no run kept
    its returns."""
    by_id = {r.run_id: r for r in records}
    series: dict[int, pl.DataFrame] = {}
    held: list[pl.DataFrame] = []  # buy-and-hold's returns, the same bar by bar in every run
    missing = []
    for i, row in enumerate(table.iter_rows(named=True)):
        ids = runs.filter(config_filter(row, keys))["run_id"].to_list()
        frames = [f for f in (run_returns(by_id[r], split) for r in ids) if f is not None]
        frames = [f for f in frames if "strategy" in f.columns]
        if not frames:
            missing.append(i)
            continue
        # Seeds share every bar; CPCV folds each test some groups, so a bar is kept where as
        # many of the configuration's runs traded it as trade any bar.
        joined = pl.concat([f.select("timestamp", "strategy") for f in frames])
        counted = joined.group_by("timestamp").agg(pl.col("strategy").mean(), pl.len().alias("_n"))
        series[i] = counted.filter(pl.col("_n") == pl.col("_n").max()).drop("_n")
        held += [f.select("timestamp", "buy_and_hold") for f in frames if "buy_and_hold" in f]
    if not series:
        return None
    common = None
    for frame in series.values():
        stamps = frame.select("timestamp")
        common = stamps if common is None else common.join(stamps, on="timestamp", how="inner")
    common = common.sort("timestamp")
    longest = max(f.height for f in series.values())
    columns = [
        common.join(f, on="timestamp", how="left")["strategy"].to_numpy() for f in series.values()
    ]
    bench = None
    if held:
        benchmark = pl.concat(held).group_by("timestamp").agg(pl.col("buy_and_hold").first())
        bench = common.join(benchmark, on="timestamp", how="left")["buy_and_hold"].to_numpy()
        bench = None if np.isnan(bench).any() else bench
    return Trials(
        split=split,
        returns=np.column_stack(columns) if columns else np.empty((0, 0)),
        rows=list(series),
        benchmark=bench,
        timestamps=common["timestamp"].to_numpy(),
        missing=missing,
        dropped=longest - common.height,
    )
