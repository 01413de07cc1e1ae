"""envs.statistics.bootstrap: stationary-bootstrap intervals of a split's metrics, the block
length, shared resamples, and the coverage of the Sharpe interval on AR-GARCH returns."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from envs.metrics import compute_metrics
from envs.statistics.bootstrap import BOOTSTRAPPED, block_length, resample, resample_indices

YEAR = 252


def ar_garch(
    paths: int,
    bars: int,
    rng: np.random.Generator,
    c: float = 4e-4,
    phi: float = 0.05,
    omega: float = 5e-7,
    alpha: float = 0.05,
    beta: float = 0.9,
    burn: int = 500,
) -> tuple[np.ndarray, float]:
    """``paths`` AR(1)-GARCH(1,1) return series ``r_t = c + phi r_{t-1} + e_t``, ``e_t`` with
    conditional variance ``omega + alpha e_{t-1}^2 + beta h_{t-1}``, and their true per-bar
    Sharpe ratio ``(c / (1 - phi)) / sqrt(omega / (1 - alpha - beta) / (1 - phi^2))``."""
    h = np.full(paths, omega / (1 - alpha - beta))
    r_prev = np.full(paths, c / (1 - phi))
    out = np.empty((paths, bars))
    z = rng.standard_normal((paths, bars + burn))
    for t in range(bars + burn):
        e = np.sqrt(h) * z[:, t]
        r_prev = c + phi * r_prev + e
        h = omega + alpha * e * e + beta * h
        if t >= burn:
            out[:, t - burn] = r_prev
    true = (c / (1 - phi)) / math.sqrt(omega / (1 - alpha - beta) / (1 - phi**2))
    return out, true


def test_each_interval_brackets_the_value_printed_beside_it():
    rng = np.random.default_rng(0)
    r = rng.standard_normal(600) * 0.01 + 0.0005
    hold = rng.standard_normal(600) * 0.01
    boot = resample({"strategy": r, "buy_and_hold": hold}, YEAR, reps=500, seed=1)
    observed = compute_metrics(torch.from_numpy(r), YEAR)
    for metric in BOOTSTRAPPED:
        iv = boot.interval("strategy", metric)
        assert iv.value == pytest.approx(float(observed[metric]), rel=1e-12)
        assert iv.low <= iv.value <= iv.high
        assert iv.low <= iv.bound <= iv.high


def test_the_same_seed_gives_the_same_intervals_and_another_seed_others():
    r = np.random.default_rng(1).standard_normal(400) * 0.01
    a = resample({"strategy": r}, YEAR, reps=300, seed=5).interval("strategy", "sharpe")
    b = resample({"strategy": r}, YEAR, reps=300, seed=5).interval("strategy", "sharpe")
    c = resample({"strategy": r}, YEAR, reps=300, seed=6).interval("strategy", "sharpe")
    assert a == b
    assert a != c


def test_series_are_resampled_together_so_a_difference_is_paired():
    r = np.random.default_rng(2).standard_normal(500) * 0.01
    boot = resample({"strategy": r, "copy": r.copy()}, YEAR, reps=300, seed=0)
    diff = boot.difference("strategy", "copy")
    assert (diff.value, diff.low, diff.high) == (0.0, 0.0, 0.0)


def test_block_length_grows_with_dependence():
    rng = np.random.default_rng(3)
    iid = rng.standard_normal(2000)
    ar = np.zeros(2000)
    for t in range(1, 2000):
        ar[t] = 0.8 * ar[t - 1] + iid[t]
    assert block_length([iid]) < block_length([ar])
    assert block_length([np.zeros(100)]) == 1  # nothing moves: no dependence to keep
    assert block_length([ar[:40]]) <= 10  # at most a quarter of the bars


def test_resampled_positions_are_blocks_of_consecutive_bars():
    idx = resample_indices(200, 10, reps=50, seed=0)
    assert idx.shape == (50, 200) and idx.min() >= 0 and idx.max() < 200
    steps = np.diff(idx, axis=1)
    consecutive = ((steps == 1) | (steps == -199)).mean()
    assert 0.85 < consecutive < 0.95  # a new block starts with probability 1/10


def test_a_flat_series_has_undefined_ratio_intervals_and_zero_drawdown():
    boot = resample({"strategy": np.zeros(300)}, YEAR, reps=200, seed=0)
    assert math.isnan(boot.interval("strategy", "sharpe").low)
    dd = boot.interval("strategy", "max_drawdown")
    assert (dd.value, dd.low, dd.high) == (0.0, 0.0, 0.0)


@pytest.mark.slow
def test_the_sharpe_interval_covers_the_true_sharpe_in_95_percent_of_ar_garch_series():
    # 1,000 AR(1)-GARCH(1,1) series of 1,000 bars with a known Sharpe ratio; the 95%
    # stationary-bootstrap interval must cover it in 95% +- 2.5% of them.
    rng = np.random.default_rng(2026)
    series, true = ar_garch(1000, 1000, rng)
    covered = 0
    for i, r in enumerate(series):
        iv = resample({"strategy": r}, YEAR, reps=1000, seed=i).interval("strategy", "sharpe")
        covered += iv.low <= true * math.sqrt(YEAR) <= iv.high
    assert covered / len(series) == pytest.approx(0.95, abs=0.025), covered
