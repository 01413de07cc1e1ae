"""A split's statistics: intervals of every series, PSRs, the Sharpe difference to buy-and-hold
and the verdict, as JSON for ``metrics.json``, as scalars for the logger and as one sentence.

The verdict is a one-sided test at ``level``: the strategy *beats buy-and-hold* when the lower
one-sided bound of its paired-bootstrap Sharpe difference to buy-and-hold is above 0, and
*beats flat* (cash, a Sharpe ratio of 0) when the lower one-sided bound of its own Sharpe
ratio is. At level 0.95 a strategy with nothing to it is called a winner in 5 % of histories.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from envs.statistics.bootstrap import BOOTSTRAPPED, Interval, Resampled, resample
from envs.statistics.sharpe import probabilistic_sharpe, sharpe_moments

STRATEGY, BENCHMARK = "strategy", "buy_and_hold"


@dataclass(frozen=True)
class SplitStatistics:
    """What one split's per-bar returns say, with their uncertainty.

    ``intervals[series][metric]``: the :data:`~envs.statistics.bootstrap.BOOTSTRAPPED` metrics
    (annualised Sharpe and Sortino ratios, annual return and max drawdown as fractions) of
    each series with their intervals; ``psr_zero[series]``: probability that the series' true
    Sharpe ratio is above 0 (PSR); ``psr_benchmark``: the strategy's PSR against buy-and-hold's
    observed Sharpe ratio; ``difference``: the strategy's annualised Sharpe ratio minus
    buy-and-hold's, with its paired interval; ``beats_benchmark`` / ``beats_flat``: the
    one-sided verdicts at ``level``; ``block`` (mean block length, bars), ``reps`` and ``seed``
    say how the resamples were drawn.
    """

    split: str
    bars: int
    level: float
    block: int
    reps: int
    seed: int
    intervals: dict[str, dict[str, Interval]]
    psr_zero: dict[str, float]
    psr_benchmark: float | None
    difference: Interval | None
    beats_benchmark: bool | None
    beats_flat: bool

    def as_json(self, name: str = "The strategy") -> dict:
        """The statistics as plain JSON (NaN as null), for ``metrics.json``; the verdict
        sentence names the strategy ``name``."""

        def clean(v: float | None) -> float | None:
            return v if v is not None and math.isfinite(v) else None

        return {
            "bars": self.bars,
            "level": self.level,
            "one_sided": True,
            "method": "stationary bootstrap (Politis-Romano), Politis-White block length, "
            "percentile intervals; PSR of Bailey & Lopez de Prado (2012)",
            "mean_block_bars": self.block,
            "resamples": self.reps,
            "seed": self.seed,
            "intervals": {
                s: {m: i.as_dict() for m, i in metrics.items()}
                for s, metrics in self.intervals.items()
            },
            "psr_vs_zero": {s: clean(p) for s, p in self.psr_zero.items()},
            "psr_vs_buy_and_hold": clean(self.psr_benchmark),
            "sharpe_difference_vs_buy_and_hold": (
                None if self.difference is None else self.difference.as_dict()
            ),
            "beats_buy_and_hold": self.beats_benchmark,
            "beats_flat": self.beats_flat,
            "verdict": self.sentence(name),
        }

    def scalars(self, prefix: str) -> dict[str, float | None]:
        """Flat numbers for a logger's summary: ``{prefix}sharpe_low`` and ``_high`` for the
        strategy, ``{prefix}{baseline}_sharpe_low``..., the PSRs, the Sharpe difference with its
        interval and the verdicts as 0/1 (``prefix`` is ``test/`` or ``val/``)."""
        out: dict[str, float | None] = {}
        for series, metrics in self.intervals.items():
            head = prefix if series == STRATEGY else f"{prefix}{series}_"
            for metric, iv in metrics.items():
                d = iv.as_dict()
                out[f"{head}{metric}_low"], out[f"{head}{metric}_high"] = d["low"], d["high"]
            out[f"{head}psr"] = _finite(self.psr_zero.get(series))
        out[f"{prefix}psr_vs_buy_and_hold"] = _finite(self.psr_benchmark)
        if self.difference is not None:
            d = self.difference.as_dict()
            out[f"{prefix}sharpe_diff_vs_buy_and_hold"] = d["value"]
            out[f"{prefix}sharpe_diff_vs_buy_and_hold_low"] = d["low"]
            out[f"{prefix}sharpe_diff_vs_buy_and_hold_high"] = d["high"]
        if self.beats_benchmark is not None:
            out[f"{prefix}beats_buy_and_hold"] = float(self.beats_benchmark)
        out[f"{prefix}beats_flat"] = float(self.beats_flat)
        return out

    def sentence(self, name: str = "The strategy") -> str:
        """The verdict in words, e.g. for the terminal: whether ``name`` beats buy-and-hold and
        flat at the level, with the numbers it rests on."""
        pct = f"{self.level:.0%}"
        ours = self.intervals[STRATEGY]["sharpe"]
        parts = []
        if self.difference is not None and self.beats_benchmark is not None:
            d = self.difference
            parts.append(
                f"{'beats' if self.beats_benchmark else 'does not beat'} buy-and-hold "
                f"(Sharpe difference {_num(d.value)}, {pct} interval [{_num(d.low)}, "
                f"{_num(d.high)}], one-sided {pct} bound {_num(d.bound)})"
            )
        parts.append(
            f"{'beats' if self.beats_flat else 'does not beat'} flat (Sharpe {_num(ours.value)}, "
            f"{pct} interval [{_num(ours.low)}, {_num(ours.high)}], one-sided bound "
            f"{_num(ours.bound)})"
        )
        how = (
            f"one-sided at {pct}; stationary bootstrap of the {self.split} split's {self.bars} "
            f"bars, {self.reps} resamples, mean block {self.block} bars, seed {self.seed}"
        )
        return f"{name} {' and '.join(parts)} ({how})."


def split_statistics(
    split: str,
    series: Mapping[str, np.ndarray],
    periods_per_year: float,
    reps: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> SplitStatistics:
    """The statistics of one split from each series' per-bar returns over the same bars:
    ``strategy`` (required), ``buy_and_hold`` (for the difference, the PSR against it and the
    verdict against it) and any other baselines (flat, random)."""
    if STRATEGY not in series:
        raise ValueError(f"series must include {STRATEGY!r}, got {sorted(series)}")
    boot: Resampled = resample(series, periods_per_year, reps, level, seed)
    intervals = {s: {m: boot.interval(s, m) for m in BOOTSTRAPPED} for s in series}
    moments = {s: sharpe_moments(r) for s, r in series.items()}
    psr_zero = {
        s: probabilistic_sharpe(m.sharpe, 0.0, m.bars, m.skew, m.kurtosis)
        for s, m in moments.items()
    }
    psr_benchmark = difference = beats_benchmark = None
    if BENCHMARK in series:
        ours, theirs = moments[STRATEGY], moments[BENCHMARK]
        psr_benchmark = probabilistic_sharpe(
            ours.sharpe, theirs.sharpe, ours.bars, ours.skew, ours.kurtosis
        )
        difference = boot.difference(STRATEGY, BENCHMARK)
        beats_benchmark = difference.excludes_zero_above()
    beats_flat = intervals[STRATEGY]["sharpe"].excludes_zero_above()
    bars = len(series[STRATEGY])
    return SplitStatistics(
        split=split,
        bars=bars,
        level=level,
        block=boot.block,
        reps=reps,
        seed=seed,
        intervals=intervals,
        psr_zero=psr_zero,
        psr_benchmark=psr_benchmark,
        difference=difference,
        beats_benchmark=beats_benchmark,
        beats_flat=beats_flat,
    )


def _finite(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def _num(v: float) -> str:
    return f"{v:+.2f}" if math.isfinite(v) else "n/a"
