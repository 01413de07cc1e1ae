"""The Sharpe ratio as a random variable: its moments, the Probabilistic Sharpe Ratio and the
Deflated Sharpe Ratio.

Every Sharpe ratio here is **per bar** (mean over sample standard deviation of per-bar
returns, not annualised), as the formulas need; multiply by ``sqrt(periods_per_year)`` to
report one. Kurtosis is the plain (non-excess) fourth standardised moment: 3 for a normal.

References
----------
* Bailey, D. & López de Prado, M. (2012), "The Sharpe Ratio Efficient Frontier", Journal of
  Risk 15(2): the PSR.
* Bailey, D. & López de Prado, M. (2014), "The Deflated Sharpe Ratio: Correcting for Selection
  Bias, Backtest Overfitting and Non-Normality", Journal of Portfolio Management 40(5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

EULER_GAMMA = 0.5772156649015329  # the Euler-Mascheroni constant


@dataclass(frozen=True)
class SharpeMoments:
    """What the PSR needs from a return series: the per-bar Sharpe ratio ``sharpe``, the
    number of bars ``bars``, the sample ``skew`` and the (non-excess) ``kurtosis`` of the
    returns, both the biased moment estimators the papers use."""

    sharpe: float
    bars: int
    skew: float
    kurtosis: float


def sharpe_moments(returns: np.ndarray) -> SharpeMoments:
    """The per-bar Sharpe ratio (ddof=1, as :func:`envs.metrics.compute_metrics`), skewness and
    kurtosis of ``returns`` (T,); NaN where they are undefined (fewer than 2 bars, no
    dispersion, or a NaN return)."""
    r = np.asarray(returns, dtype=np.float64)
    n = int(r.shape[0])
    if n < 2 or not np.isfinite(r).all() or r.max() == r.min():
        return SharpeMoments(math.nan, n, math.nan, math.nan)
    sd = r.std(ddof=1)
    return SharpeMoments(
        sharpe=float(r.mean() / sd),
        bars=n,
        skew=float(stats.skew(r)),
        kurtosis=float(stats.kurtosis(r, fisher=False)),
    )


def per_bar_sharpe(returns: np.ndarray) -> np.ndarray:
    """Per-bar Sharpe ratio (ddof=1) of each column of ``returns`` (T, N), or of a (T,) series;
    NaN for a column without dispersion."""
    r = np.asarray(returns, dtype=np.float64)
    sd = r.std(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = r.mean(axis=0) / sd
    return np.where(sd > 0, out, np.nan)


def probabilistic_sharpe(
    sharpe: float, benchmark: float, bars: int, skew: float = 0.0, kurtosis: float = 3.0
) -> float:
    """PSR: the probability that the true per-bar Sharpe ratio exceeds ``benchmark``, given
    the observed per-bar ``sharpe`` over ``bars`` returns of that ``skew`` and ``kurtosis``.

    ``PSR = Phi((SR - SR*) sqrt(T - 1) / sqrt(1 - skew SR + (kurtosis - 1) / 4 SR^2))``
    (Bailey & López de Prado 2012, eq. 10). NaN when an input is NaN or the variance term is
    not positive.
    """
    values = (sharpe, benchmark, skew, kurtosis)
    if bars < 2 or not all(math.isfinite(v) for v in values):
        return math.nan
    variance = 1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe**2
    if not variance > 0:
        return math.nan
    z = (sharpe - benchmark) * math.sqrt(bars - 1) / math.sqrt(variance)
    return float(stats.norm.cdf(z))


def psr_of(returns: np.ndarray, benchmark: float = 0.0) -> float:
    """:func:`probabilistic_sharpe` of a return series (T,) against a per-bar ``benchmark``."""
    m = sharpe_moments(returns)
    return probabilistic_sharpe(m.sharpe, benchmark, m.bars, m.skew, m.kurtosis)


def expected_max_sharpe(trials: int, variance: float) -> float:
    """``SR0``: the expected largest of ``trials`` per-bar Sharpe ratios when every true Sharpe
    ratio is 0 and their estimates vary with ``variance`` (Bailey & López de Prado 2014,
    eq. 2, the False Strategy theorem):
    ``sqrt(V) ((1 - g) Phi^-1(1 - 1/N) + g Phi^-1(1 - 1/(N e)))``, ``g`` Euler's constant.
    0 for a single trial (nothing was selected)."""
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    if trials == 1 or not variance > 0:
        return 0.0
    ppf = stats.norm.ppf
    z = (1.0 - EULER_GAMMA) * ppf(1.0 - 1.0 / trials) + EULER_GAMMA * ppf(
        1.0 - 1.0 / (trials * math.e)
    )
    return float(math.sqrt(variance) * z)


@dataclass(frozen=True)
class Deflated:
    """The Deflated Sharpe Ratio of the selected trial. ``dsr`` is a probability (that its true
    Sharpe ratio is above 0 once the selection among ``trials`` is accounted for);
    ``threshold`` is ``SR0``, per bar; ``sharpe`` the selected trial's per-bar Sharpe ratio;
    ``variance`` the variance of the trials' per-bar Sharpe ratios."""

    dsr: float
    threshold: float
    sharpe: float
    trials: int
    variance: float
    bars: int


def deflated_sharpe(moments: SharpeMoments, trials: int, variance: float) -> Deflated:
    """DSR = PSR(SR0): the selected trial's PSR against the expected maximum Sharpe ratio of
    ``trials`` trials whose per-bar Sharpe ratios have ``variance`` (eq. 2 and 3 of the 2014
    paper). ``moments`` are the selected trial's."""
    threshold = expected_max_sharpe(trials, variance)
    dsr = probabilistic_sharpe(
        moments.sharpe, threshold, moments.bars, moments.skew, moments.kurtosis
    )
    return Deflated(dsr, threshold, moments.sharpe, trials, variance, moments.bars)
