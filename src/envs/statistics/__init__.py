"""What a backtest's numbers mean: their uncertainty, and what a search does to its winner.

* :mod:`~envs.statistics.sharpe`: per-bar Sharpe ratio and moments, the Probabilistic Sharpe
  Ratio (Bailey & López de Prado 2012), the expected maximum Sharpe ratio of N trials and the
  Deflated Sharpe Ratio (Bailey & López de Prado 2014). numpy and scipy only.
* :mod:`~envs.statistics.bootstrap`: stationary-bootstrap (Politis & Romano 1994) intervals of
  a run's metrics, block length by Politis & White (2004), through ``arch``; one set of
  resamples per split shared by the strategy and its baselines, so differences are paired.
* :mod:`~envs.statistics.verdict`: a split's intervals, PSRs and the verdict against
  buy-and-hold and flat, as JSON and as logged scalars.
* :mod:`~envs.statistics.overfitting`: the Probability of Backtest Overfitting by
  combinatorially symmetric cross-validation (Bailey, Borwein, López de Prado & Zhu 2017).
* :mod:`~envs.statistics.multiple`: Hansen's (2005) test for Superior Predictive Ability of the
  best of many configurations over a benchmark, through ``arch``.

Units: returns are per-bar simple returns as fractions; Sharpe ratios are per bar inside the
formulas and annualised (times ``sqrt(periods_per_year)``) wherever they are reported.
"""
