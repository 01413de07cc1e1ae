"""envs.statistics.sharpe: the PSR and DSR of Bailey & López de Prado, on the DSR paper's
numeric example and on hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from envs.statistics.sharpe import (
    SharpeMoments,
    deflated_sharpe,
    expected_max_sharpe,
    per_bar_sharpe,
    probabilistic_sharpe,
    psr_of,
    sharpe_moments,
)

DAYS = 250  # the 2014 paper annualises daily Sharpe ratios with 250 days a year


def test_dsr_reproduces_the_numeric_example_of_the_deflated_sharpe_paper():
    # Bailey & López de Prado (2014), section 5: a strategy with an annualised Sharpe ratio of
    # 2.5 over 5 years of daily returns (T = 1250), skewness -3 and kurtosis 10, selected as
    # the best of N = 100 trials whose annualised Sharpe ratios have variance 1/2.
    # The paper finds SR0 = 0.1132 (daily) and DSR = 0.9004.
    moments = SharpeMoments(sharpe=2.5 / math.sqrt(DAYS), bars=1250, skew=-3.0, kurtosis=10.0)
    deflated = deflated_sharpe(moments, trials=100, variance=0.5 / DAYS)
    assert deflated.threshold == pytest.approx(0.1132, abs=5e-5)
    assert deflated.dsr == pytest.approx(0.9004, abs=5e-5)
    # The DSR is the PSR against SR0: the PSR formula on the same example.
    assert probabilistic_sharpe(moments.sharpe, deflated.threshold, 1250, -3.0, 10.0) == (
        deflated.dsr
    )


def test_psr_by_hand_for_normal_returns():
    # SR = 0.1 per bar over 101 bars, skew 0, kurtosis 3:
    # z = 0.1 * sqrt(100) / sqrt(1 - 0 + (3 - 1) / 4 * 0.01) = 1 / sqrt(1.005) = 0.997509
    z = 1.0 / math.sqrt(1.005)
    assert probabilistic_sharpe(0.1, 0.0, 101) == pytest.approx(stats.norm.cdf(z), rel=1e-12)
    assert stats.norm.cdf(z) == pytest.approx(0.84074, abs=1e-5)


def test_psr_against_its_own_sharpe_is_one_half_and_falls_with_negative_skew_and_fat_tails():
    assert probabilistic_sharpe(0.2, 0.2, 500, -1.0, 8.0) == pytest.approx(0.5)
    normal = probabilistic_sharpe(0.05, 0.0, 500)
    assert probabilistic_sharpe(0.05, 0.0, 500, -2.0, 3.0) < normal
    assert probabilistic_sharpe(0.05, 0.0, 500, 0.0, 12.0) < normal
    assert probabilistic_sharpe(0.05, 0.0, 500, 2.0, 3.0) > normal


def test_psr_of_a_series_uses_its_sample_moments():
    r = np.random.default_rng(3).standard_t(5, size=800) * 0.01 + 0.0008
    m = sharpe_moments(r)
    assert m.sharpe == pytest.approx(r.mean() / r.std(ddof=1))
    assert m.skew == pytest.approx(stats.skew(r))
    assert m.kurtosis == pytest.approx(stats.kurtosis(r) + 3.0)
    assert psr_of(r) == probabilistic_sharpe(m.sharpe, 0.0, 800, m.skew, m.kurtosis)


def test_a_series_that_never_moves_has_no_sharpe_and_no_psr():
    assert math.isnan(sharpe_moments(np.zeros(50)).sharpe)
    assert math.isnan(psr_of(np.zeros(50)))
    assert math.isnan(per_bar_sharpe(np.zeros((50, 2)))[1])


def test_expected_max_sharpe_grows_with_trials_and_is_zero_for_one():
    assert expected_max_sharpe(1, 0.01) == 0.0
    values = [expected_max_sharpe(n, 0.01) for n in (2, 10, 100, 1000)]
    assert values == sorted(values)
    # It is close to the simulated mean maximum of N standard normals (times sqrt(V)).
    draws = np.random.default_rng(0).standard_normal((20_000, 100)).max(axis=1).mean()
    assert expected_max_sharpe(100, 1.0) == pytest.approx(draws, rel=0.01)
