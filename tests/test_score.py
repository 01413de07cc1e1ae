"""Tests of envs.score.composite_score: Sharpe minus 10 x |max drawdown|, with a flat (NaN)
Sharpe counted as 0."""

from __future__ import annotations

import math

import pytest
import torch

from envs.backtest import backtest
from envs.frictions import Frictions
from envs.metrics import compute_metrics, metrics_to_floats
from envs.score import DRAWDOWN_WEIGHT, composite_score


def test_drawdown_weight_is_ten() -> None:
    assert DRAWDOWN_WEIGHT == 10.0


@pytest.mark.parametrize(
    "sharpe, drawdown, expected",
    [
        (1.5, -0.10, 0.5),  # a 10 % drawdown costs one Sharpe point
        (2.0, 0.0, 2.0),
        (-0.5, -0.02, -0.7),
        (1.0, 0.05, 0.5),  # the drawdown's sign does not matter
        (0.0, -0.25, -2.5),
    ],
)
def test_score_is_sharpe_minus_ten_times_abs_drawdown(sharpe, drawdown, expected) -> None:
    score = composite_score({"sharpe": sharpe, "max_drawdown": drawdown, "sortino": 9.0})
    assert score == pytest.approx(expected)
    assert score == pytest.approx(sharpe - DRAWDOWN_WEIGHT * abs(drawdown))


@pytest.mark.parametrize("sharpe", [math.nan, math.inf, -math.inf])
def test_a_sharpe_that_is_not_finite_counts_as_zero(sharpe) -> None:
    assert composite_score({"sharpe": sharpe, "max_drawdown": -0.03}) == pytest.approx(-0.3)


def test_a_drawdown_that_is_not_finite_counts_as_zero() -> None:
    assert composite_score({"sharpe": 1.2, "max_drawdown": math.nan}) == pytest.approx(1.2)


def test_accepts_tensor_scalars() -> None:
    metrics = {"sharpe": torch.tensor(1.0), "max_drawdown": torch.tensor(-0.01)}
    assert composite_score(metrics) == pytest.approx(0.9)


def test_flat_equity_scores_zero() -> None:
    """A path that never moves has a NaN Sharpe and no drawdown: its score is 0, not NaN."""
    metrics = metrics_to_floats(
        {k: v[0] for k, v in compute_metrics(torch.zeros(1, 50, dtype=torch.float64), 252).items()}
    )
    assert math.isnan(metrics["sharpe"]) and metrics["max_drawdown"] == 0.0
    assert composite_score(metrics) == 0.0


def test_flat_backtest_scores_zero(synthetic) -> None:
    flat = torch.zeros(40, synthetic.num_assets, dtype=torch.float64)
    result = backtest(synthetic, flat, 10, Frictions())
    metrics = metrics_to_floats({k: v[0] for k, v in result.metrics.items()})
    assert composite_score(metrics) == 0.0


def test_score_of_a_real_path_matches_the_formula() -> None:
    returns = torch.tensor([[0.01, -0.02, 0.015, -0.005, 0.02, -0.03, 0.01]], dtype=torch.float64)
    metrics = metrics_to_floats({k: v[0] for k, v in compute_metrics(returns, 252).items()})
    assert metrics["max_drawdown"] < 0 and math.isfinite(metrics["sharpe"])
    assert composite_score(metrics) == pytest.approx(
        metrics["sharpe"] - 10.0 * abs(metrics["max_drawdown"])
    )
