"""What the size of a sweep does to its winner: the Deflated Sharpe Ratio of the best
configuration, the Probability of Backtest Overfitting of the selection, and Hansen's SPA test
of the best against buy-and-hold, from the per-bar returns the runs kept.

Every configuration is one trial, whatever searched it (a grid, Optuna, the phases of a
curriculum); its series is the mean of its seeds' per-bar returns over the bars every trial
shares. Sharpe ratios are annualised where reported, per bar inside the formulas.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from envs.statistics.multiple import SuperiorAbility, superior_ability
from envs.statistics.overfitting import Overfitting, probability_of_overfitting
from envs.statistics.sharpe import Deflated, deflated_sharpe, per_bar_sharpe, sharpe_moments
from experiments.compare.cpcv import Paths, is_cpcv, paths_of
from experiments.compare.returns import Trials, trials
from experiments.compare.table import RunRecord, config_filter, config_labels

MIN_BARS = 32  # fewer shared bars than this: no statistic is computed


@dataclass(frozen=True)
class Selection:
    """The sweep's statistics (each None where it could not be computed, with the reason in
    ``notes``): ``deflated`` (the best configuration's DSR on ``split``), ``overfitting`` (PBO
    on the validation returns), ``spa`` (best vs buy-and-hold on ``split``); ``sharpes``:
    each configuration's annualised Sharpe ratio of its series on ``split`` (by table row),
    ``periods_per_year`` its annualisation."""

    split: str
    trials: int
    best_row: int | None
    best_label: str
    periods_per_year: float
    deflated: Deflated | None
    overfitting: Overfitting | None
    spa: SuperiorAbility | None
    sharpes: dict[int, float]
    notes: list[str]

    def lines(self) -> list[str]:
        """The results in words, for the terminal and comparison.md."""
        out = []
        ann = math.sqrt(self.periods_per_year)
        d = self.deflated
        if d is not None and d.trials == 1:
            out.append(
                f"Probabilistic Sharpe ratio of the only configuration on the {self.split} "
                f"split: {d.dsr:.3f}, the probability that its true Sharpe ratio is above 0 "
                f"(its Sharpe {d.sharpe * ann:.2f}, {d.bars} bars; one configuration: no "
                "selection to deflate for)."
            )
        elif d is not None:
            out.append(
                f"Deflated Sharpe ratio of the best configuration (#{self.best_row + 1}"
                f"{_label(self.best_label)}) on the {self.split} split: {d.dsr:.3f}, the "
                f"probability that its true Sharpe ratio is above 0 after {d.trials} trials "
                f"(its Sharpe {d.sharpe * ann:.2f} against the {d.threshold * ann:.2f} the best "
                f"of {d.trials} trials without skill reaches on average; variance of the "
                f"trials' Sharpe ratios {d.variance * self.periods_per_year:.3g}, annualised; "
                f"{d.bars} bars)."
            )
        o = self.overfitting
        if o is not None:
            out.append(
                f"Probability of backtest overfitting: {o.pbo:.3f} (CSCV on the validation "
                f"returns of {o.trials} configurations, {o.blocks} blocks of {o.block_bars} bars,"
                f" {o.splits:,} in/out-of-sample splits; above 0.5, picking the best "
                "validation configuration does no better than picking one at random)."
            )
        s = self.spa
        if s is not None:
            verdict = (
                "some configuration beats buy-and-hold at 95%"
                if s.rejects()
                else "no configuration beats buy-and-hold at 95%"
            )
            out.append(
                f"SPA test (Hansen) of {_plural(s.models, 'configuration')} against buy-and-hold on the "
                f"{self.split} split: p = {s.consistent:.3f} ({s.reps} stationary-bootstrap "
                f"resamples, mean block {s.block} bars, seed {s.seed}): {verdict}."
            )
        return out + self.notes

    def as_rows(self) -> list[dict]:
        """selection.csv: one row per statistic (name, value, and how it was computed)."""
        rows = [{"statistic": "trials", "value": float(self.trials), "detail": self.split}]
        if self.deflated is not None:
            d, ann = self.deflated, math.sqrt(self.periods_per_year)
            rows += [
                {"statistic": "deflated_sharpe_ratio", "value": d.dsr, "detail": self.split},
                {"statistic": "best_sharpe", "value": d.sharpe * ann, "detail": "annualised"},
                {"statistic": "expected_max_sharpe", "value": d.threshold * ann, "detail": ""},
            ]
        if self.overfitting is not None:
            o = self.overfitting
            rows.append(
                {
                    "statistic": "probability_of_backtest_overfitting",
                    "value": o.pbo,
                    "detail": f"CSCV, {o.blocks} blocks, {o.splits} splits, validation",
                }
            )
        if self.spa is not None:
            rows.append(
                {
                    "statistic": "spa_p_value",
                    "value": self.spa.consistent,
                    "detail": f"vs buy-and-hold, {self.split}",
                }
            )
        return rows


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _label(label: str) -> str:
    return f" [{label}]" if label and len(label) <= 60 else ""


def split_of(metric: str) -> str:
    """The split a metric belongs to: ``val`` for ``val/...``, else ``test``."""
    return "val" if metric.startswith("val/") else "test"


def periods_per_year(records: Sequence[RunRecord]) -> float | None:
    """The runs' bars per year (from their summaries or metrics), None if none says."""
    for r in records:
        for key in ("test/periods_per_year", "val/periods_per_year"):
            value = r.summary.get(key)
            if isinstance(value, (int, float)) and value > 0:
                return float(value)
    return None


def selection(
    records: Sequence[RunRecord],
    runs: pl.DataFrame,
    table: pl.DataFrame,
    keys: Sequence[str],
    metric: str,
    reps: int = 1000,
    seed: int = 0,
) -> Selection:
    """The sweep statistics of the configurations in ``table`` (sorted best first)."""
    split = split_of(metric)
    labels = config_labels(table, keys)
    notes: list[str] = []
    ppy = periods_per_year(records)
    chosen = trials(records, runs, table, keys, split)
    empty = Selection(split, 0, None, "", ppy or 1.0, None, None, None, {}, notes)
    if ppy is None or chosen is None:
        notes.append(
            f"No run kept its per-bar {split} returns (returns_{split}.csv): no deflated Sharpe "
            "ratio, overfitting probability or SPA test."
        )
        return empty
    if chosen.missing:
        notes.append(
            "Left out of the sweep statistics (no per-bar returns kept): configuration(s) "
            + ", ".join(f"#{i + 1}" for i in chosen.missing)
            + "."
        )
    if chosen.dropped:
        notes.append(
            f"The configurations share {len(chosen.timestamps)} {split} bars; {chosen.dropped} "
            "bars that not every configuration traded were left out of the sweep statistics."
        )
    sharpes = dict(zip(chosen.rows, per_bar_sharpe(chosen.returns) * math.sqrt(ppy), strict=True))
    best = chosen.rows[0]
    result = dict(
        split=split,
        trials=chosen.count,
        best_row=best,
        best_label=labels[best],
        periods_per_year=ppy,
        sharpes=sharpes,
        notes=notes,
    )
    if len(chosen.timestamps) < MIN_BARS:
        notes.append(
            f"Only {len(chosen.timestamps)} {split} bars are shared by every configuration "
            f"(fewer than {MIN_BARS}): no sweep statistics."
        )
        return Selection(**result, deflated=None, overfitting=None, spa=None)
    return Selection(
        **result,
        deflated=_deflated(chosen),
        overfitting=_overfitting(records, runs, table, keys, chosen, notes),
        spa=_spa(chosen, reps, seed, notes),
    )


def _deflated(chosen: Trials) -> Deflated:
    per_bar = per_bar_sharpe(chosen.returns)
    finite = per_bar[np.isfinite(per_bar)]
    variance = float(finite.var(ddof=1)) if finite.size > 1 else 0.0
    return deflated_sharpe(sharpe_moments(chosen.returns[:, 0]), chosen.count, variance)


def _overfitting(records, runs, table, keys, chosen: Trials, notes: list[str]):
    val = chosen if chosen.split == "val" else trials(records, runs, table, keys, "val")
    if val is None or val.count < 2:
        notes.append(
            "The probability of backtest overfitting needs the validation returns of at least "
            "2 configurations" + (" (none kept any)." if val is None else ".")
        )
        return None
    if len(val.timestamps) < 2 * 4:
        notes.append("Too few shared validation bars for the overfitting probability.")
        return None
    if not np.isfinite(val.returns).all():
        notes.append("A configuration's validation returns are not finite: no overfitting PBO.")
        return None
    return probability_of_overfitting(val.returns)


def _spa(chosen: Trials, reps: int, seed: int, notes: list[str]) -> SuperiorAbility | None:
    if chosen.benchmark is None:
        notes.append("No run kept buy-and-hold's per-bar returns: no SPA test.")
        return None
    return superior_ability(chosen.benchmark, chosen.returns, reps=reps, seed=seed)


@dataclass(frozen=True)
class SweepReport:
    """What the sweep statistics add to a comparison: ``lines`` to print and put in
    comparison.md, and the ``files`` written (CSVs and plots) beside it."""

    lines: list[str]
    files: list[Path]

    @property
    def plots(self) -> list[Path]:
        return [f for f in self.files if f.suffix == ".png"]


def sweep_report(
    out: Path,
    records: Sequence[RunRecord],
    runs: pl.DataFrame,
    table: pl.DataFrame,
    keys: Sequence[str],
    metric: str,
) -> SweepReport:
    """The deflated Sharpe ratio, PBO and SPA test of the sweep (selection.csv, the PBO logit
    plot) and, for configurations run as CPCV folds, their backtest paths (cpcv_paths.csv,
    the path-Sharpe plot)."""
    from experiments.compare.plots import overfitting_logits, path_sharpes

    chosen = selection(records, runs, table, keys, metric)
    lines, files = chosen.lines(), []
    pl.DataFrame(chosen.as_rows()).write_csv(out / SELECTION_CSV)
    files.append(out / SELECTION_CSV)
    if chosen.overfitting is not None:
        o = chosen.overfitting
        files.append(overfitting_logits(out / PBO_PNG, o.logits, o.pbo, o.splits))
    paths = cpcv_paths(records, runs, table, keys, chosen.periods_per_year)
    if paths:
        lines += [p.line() for p in paths]
        rows = [
            {"configuration": p.label, "path": j, "sharpe": float(s)}
            for p in paths
            for j, s in enumerate(p.sharpes)
        ]
        schema = {"configuration": pl.String, "path": pl.Int64, "sharpe": pl.Float64}
        pl.DataFrame(rows, schema=schema).write_csv(out / PATHS_CSV)
        files.append(out / PATHS_CSV)
        complete = {p.label: p.sharpes for p in paths if not p.missing}
        if complete:
            files.append(path_sharpes(out / PATHS_PNG, complete))
    return SweepReport(lines, files)


SELECTION_CSV, PBO_PNG = "selection.csv", "comparison_pbo_logits.png"
PATHS_CSV, PATHS_PNG = "cpcv_paths.csv", "comparison_cpcv_paths.png"


def cpcv_paths(
    records: Sequence[RunRecord],
    runs: pl.DataFrame,
    table: pl.DataFrame,
    keys: Sequence[str],
    periods: float,
) -> list[Paths]:
    """The CPCV paths of every configuration whose runs are CPCV folds."""
    by_id = {r.run_id: r for r in records}
    labels = config_labels(table, keys)
    out = []
    for i, row in enumerate(table.iter_rows(named=True)):
        members = [by_id[r] for r in runs.filter(config_filter(row, keys))["run_id"].to_list()]
        members = [r for r in members if is_cpcv(r)]
        if members:
            out.append(paths_of(members, f"#{i + 1} {labels[i]}", periods))
    return out
