"""Tests of envs.metrics: equality with empyrical, batching, and hand-computed cases."""

from __future__ import annotations

import json
import math

import empyrical
import numpy as np
import pytest
import torch

from envs.metrics import REPORTED, compute_metrics, loggable, metrics_to_floats

ATOL = 1e-9
DAILY = 252.0
INTRADAY_15MIN = 252.0 * 26

BASE_KEYS = {
    "total_return",
    "annual_return",
    "annual_volatility",
    "sharpe",
    "sortino",
    "calmar",
    "max_drawdown",
    "max_drawdown_duration",
    "win_rate",
    "profit_factor",
    "periods_per_year",
}


def _normal(seed: int = 0, n: int = 750) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0005, 0.01, n)


def _fat_tailed(seed: int = 1, n: int = 1000) -> np.ndarray:
    return 0.005 * np.random.default_rng(seed).standard_t(3, n)


def _with_crash(seed: int = 2, n: int = 600) -> np.ndarray:
    r = np.random.default_rng(seed).normal(0.0008, 0.012, n)
    r[200] = -0.35
    r[201:210] = -0.02
    return r


def _intraday(seed: int = 3, n: int = 3000) -> np.ndarray:
    return np.random.default_rng(seed).normal(2e-5, 1e-3, n)


def _monthly(seed: int = 4, n: int = 60) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.008, 0.04, n)


RANDOM_CASES = [
    pytest.param(_normal(), DAILY, id="normal-daily"),
    pytest.param(_fat_tailed(), DAILY, id="fat-tailed-daily"),
    pytest.param(_with_crash(), DAILY, id="crash-daily"),
    pytest.param(_intraday(), INTRADAY_15MIN, id="normal-15min"),
    pytest.param(_fat_tailed(seed=5, n=2000) / 5, INTRADAY_15MIN, id="fat-tailed-15min"),
    pytest.param(_monthly(), 12.0, id="normal-monthly"),
]

EDGE_CASES = [
    pytest.param(np.full(10, 0.01), DAILY, id="constant-gain"),
    pytest.param(np.full(10, -0.01), DAILY, id="constant-loss"),
    pytest.param(np.zeros(10), DAILY, id="all-zero"),
    pytest.param(np.array([0.01, 0.02, 0.0, 0.03]), DAILY, id="no-losses"),
    pytest.param(np.array([-0.01, -0.02, -0.005]), DAILY, id="only-losses"),
    pytest.param(np.array([0.02]), DAILY, id="one-bar"),
    pytest.param(np.array([-0.03]), DAILY, id="one-losing-bar"),
    pytest.param(np.array([0.02, -0.01]), DAILY, id="two-bars"),
    pytest.param(np.array([]), DAILY, id="empty"),
]


def _empyrical(r: np.ndarray, ppy: float, risk_free: float = 0.0) -> dict[str, float]:
    return {
        "total_return": empyrical.cum_returns_final(r),
        "annual_return": empyrical.annual_return(r, annualization=ppy),
        "annual_volatility": empyrical.annual_volatility(r, annualization=ppy),
        "sharpe": empyrical.sharpe_ratio(r, risk_free, annualization=ppy),
        "sortino": empyrical.sortino_ratio(r, required_return=risk_free, annualization=ppy),
        "calmar": empyrical.calmar_ratio(r, annualization=ppy),
        "max_drawdown": empyrical.max_drawdown(r),
    }


def _assert_metrics_equal_empyrical(r: np.ndarray, ppy: float, risk_free: float = 0.0) -> None:
    got = compute_metrics(torch.tensor(r, dtype=torch.float64), ppy, risk_free=risk_free)
    for key, expected in _empyrical(r, ppy, risk_free).items():
        assert got[key].shape == ()
        np.testing.assert_allclose(
            got[key].numpy(), expected, rtol=0, atol=ATOL, err_msg=f"{key} differs"
        )


def _m(returns: list[float], **kwargs) -> dict[str, float]:
    ppy = kwargs.pop("periods_per_year", DAILY)
    return metrics_to_floats(
        compute_metrics(torch.tensor(returns, dtype=torch.float64), ppy, **kwargs)
    )


# --- equality with empyrical ------------------------------------------------------------------


@pytest.mark.parametrize(("returns", "ppy"), RANDOM_CASES)
def test_metrics_equal_empyrical_on_random_series(returns: np.ndarray, ppy: float) -> None:
    _assert_metrics_equal_empyrical(returns, ppy)


@pytest.mark.parametrize(("returns", "ppy"), EDGE_CASES)
def test_metrics_equal_empyrical_on_edge_cases(returns: np.ndarray, ppy: float) -> None:
    _assert_metrics_equal_empyrical(returns, ppy)


@pytest.mark.parametrize(("returns", "ppy"), RANDOM_CASES[:4])
def test_sharpe_and_sortino_equal_empyrical_with_a_risk_free_rate(
    returns: np.ndarray, ppy: float
) -> None:
    _assert_metrics_equal_empyrical(returns, ppy, risk_free=1e-4)


@pytest.mark.parametrize(("returns", "ppy"), RANDOM_CASES)
def test_sharpe_equals_empyrical(returns: np.ndarray, ppy: float) -> None:
    got = compute_metrics(torch.tensor(returns), ppy)["sharpe"].item()
    assert got == pytest.approx(empyrical.sharpe_ratio(returns, annualization=ppy), abs=ATOL)


def test_sharpe_is_nan_when_returns_equal_the_risk_free_rate() -> None:
    m = _m([0.001] * 5, risk_free=0.001)
    assert math.isnan(m["sharpe"])
    assert math.isnan(m["sortino"])
    assert math.isnan(empyrical.sharpe_ratio(np.full(5, 0.001), 0.001))


def test_sortino_is_inf_without_returns_below_the_required_return() -> None:
    m = _m([0.01, 0.0, 0.02])
    assert m["sortino"] == math.inf
    assert math.isfinite(m["sharpe"])


def test_calmar_is_nan_without_drawdown() -> None:
    m = _m([0.01, 0.0, 0.02])
    assert m["max_drawdown"] == 0.0
    assert math.isnan(m["calmar"])


def test_annual_return_compounds_the_total_return_per_year() -> None:
    # 126 daily bars = half a year: CAGR = (1 + total) ** 2 - 1.
    m = _m([0.001] * 126)
    assert m["annual_return"] == pytest.approx((1.001**126) ** 2 - 1, abs=1e-12)


def test_float32_returns_are_computed_in_float64() -> None:
    r = _normal(seed=7, n=300)
    got = compute_metrics(torch.tensor(r, dtype=torch.float32), DAILY)
    assert all(v.dtype == torch.float64 for v in got.values())
    r32 = r.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(
        got["sharpe"].numpy(), empyrical.sharpe_ratio(r32, annualization=DAILY), atol=ATOL
    )


# --- batches ------------------------------------------------------------------------------------


def _batch_inputs(p: int = 5, t: int = 400, a: int = 3):
    g = torch.Generator().manual_seed(11)
    returns = 0.01 * torch.randn(p, t, generator=g, dtype=torch.float64) + 3e-4
    returns[1, 100] = -0.3  # a crash on one path
    returns[2] = returns[2].abs()  # a path without losses
    returns[3] = 0.0  # a flat path
    positions = torch.randn(p, t, a, generator=g, dtype=torch.float64)
    turnover = torch.rand(p, t, generator=g, dtype=torch.float64)
    trades = torch.randint(0, 4, (p, t), generator=g)
    return returns, positions, turnover, trades


def test_metrics_of_a_batch_equal_metrics_of_each_path() -> None:
    returns, positions, turnover, trades = _batch_inputs()
    kwargs = {"risk_free": 1e-5}
    batch = compute_metrics(returns, DAILY, positions, turnover, trades, **kwargs)
    assert set(batch) == BASE_KEYS | {"mean_turnover", "annual_turnover", "exposure", "num_trades"}
    for i in range(returns.shape[0]):
        single = compute_metrics(returns[i], DAILY, positions[i], turnover[i], trades[i], **kwargs)
        for key, value in single.items():
            assert batch[key].shape == (returns.shape[0],)
            torch.testing.assert_close(
                batch[key][i], value, rtol=1e-12, atol=1e-12, equal_nan=True, msg=key
            )


def test_metrics_of_a_batch_equal_empyrical_per_path() -> None:
    returns, *_ = _batch_inputs()
    batch = compute_metrics(returns, DAILY)
    for i, path in enumerate(returns.numpy()):
        for key, expected in _empyrical(path, DAILY).items():
            np.testing.assert_allclose(batch[key][i].numpy(), expected, rtol=0, atol=ATOL)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_metrics_on_cuda_equal_metrics_on_cpu_without_host_sync() -> None:
    returns, positions, turnover, trades = _batch_inputs()
    cpu = compute_metrics(returns, DAILY, positions, turnover, trades)
    cuda_inputs = [x.cuda() for x in (returns, positions, turnover, trades)]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        gpu = compute_metrics(cuda_inputs[0], DAILY, *cuda_inputs[1:])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for key, value in cpu.items():
        assert gpu[key].device.type == "cuda"
        torch.testing.assert_close(gpu[key].cpu(), value, rtol=1e-10, atol=1e-10, equal_nan=True)


# --- max drawdown and its duration ----------------------------------------------------------


def test_max_drawdown_is_a_negative_fraction() -> None:
    assert _m([0.1, -0.5, 0.2])["max_drawdown"] == pytest.approx(-0.5, abs=1e-12)


def test_max_drawdown_counts_a_loss_on_the_first_bar() -> None:
    m = _m([-0.2, 0.1])
    assert m["max_drawdown"] == pytest.approx(-0.2, abs=1e-12)
    assert m["max_drawdown_duration"] == 2


def test_max_drawdown_duration_counts_bars_until_recovery() -> None:
    # Equity 1, 1.1, 0.99, 1.188: peak on bar 1, back above it on bar 3.
    assert _m([0.1, -0.1, 0.2])["max_drawdown_duration"] == 2


def test_max_drawdown_duration_counts_bars_until_the_end_without_recovery() -> None:
    # Equity 1, 1.1, 0.99, 1.0395, 1.04: peak on bar 1, never regained by the last bar 4.
    assert _m([0.1, -0.1, 0.05, 0.0005])["max_drawdown_duration"] == 3


def test_max_drawdown_duration_ends_when_equity_is_back_exactly_at_the_peak() -> None:
    # Equity 1, 0.5, 1.0 (exactly the peak), 0.5: spans of 2 then 1 bars.
    assert _m([-0.5, 1.0, -0.5])["max_drawdown_duration"] == 2


def test_max_drawdown_duration_is_the_longest_drawdown() -> None:
    # First drawdown: peak bar 0, recovered bar 2 (2 bars). Second: peak bar 2 (1.08),
    # underwater on bars 3-5, recovered on bar 6 (1.2037): 4 bars. Then a new high.
    m = _m([-0.1, 0.2, -0.05, -0.05, -0.05, 0.3, 0.01])
    assert m["max_drawdown_duration"] == 4


def test_max_drawdown_duration_is_zero_without_drawdown() -> None:
    assert _m([0.01, 0.0, 0.02, 0.0])["max_drawdown_duration"] == 0
    assert _m([0.0, 0.0])["max_drawdown_duration"] == 0


# --- win rate and profit factor -----------------------------------------------------------------


def test_win_rate_ignores_flat_bars() -> None:
    assert _m([0.01, -0.02, 0.0, 0.03, 0.0])["win_rate"] == pytest.approx(2 / 3)


def test_win_rate_is_nan_when_every_bar_is_flat() -> None:
    assert math.isnan(_m([0.0, 0.0, 0.0])["win_rate"])


def test_profit_factor_is_gains_over_losses() -> None:
    assert _m([0.01, -0.02, 0.03, 0.0])["profit_factor"] == pytest.approx(2.0)


def test_profit_factor_is_inf_without_losses() -> None:
    assert _m([0.01, 0.0, 0.02])["profit_factor"] == math.inf


def test_profit_factor_is_zero_without_gains_and_nan_without_either() -> None:
    assert _m([-0.01, 0.0, -0.02])["profit_factor"] == 0.0
    assert math.isnan(_m([0.0, 0.0])["profit_factor"])


# --- exposure, turnover, trades -----------------------------------------------------------------


def test_exposure_is_the_mean_gross_position() -> None:
    positions = torch.tensor([[0.5, -0.5], [1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    m = _m([0.01, 0.0, -0.01], positions=positions)
    assert m["exposure"] == pytest.approx(2 / 3)


def test_turnover_is_reported_per_bar_and_annualised() -> None:
    turnover = torch.tensor([1.0, 0.5, 0.0, 0.5], dtype=torch.float64)
    m = _m([0.01, 0.0, -0.01, 0.0], turnover=turnover, periods_per_year=INTRADAY_15MIN)
    assert m["mean_turnover"] == pytest.approx(0.5)
    assert m["annual_turnover"] == pytest.approx(0.5 * INTRADAY_15MIN)


def test_num_trades_is_the_total_number_of_fills() -> None:
    trades = torch.tensor([2, 0, 1, 3])
    assert _m([0.01, 0.0, -0.01, 0.0], trades=trades)["num_trades"] == 6.0


def test_optional_metrics_appear_only_when_their_inputs_are_given() -> None:
    r = torch.tensor([0.01, -0.01, 0.02], dtype=torch.float64)
    assert set(compute_metrics(r, DAILY)) == BASE_KEYS
    assert set(compute_metrics(r, DAILY, trades=torch.ones(3))) == BASE_KEYS | {"num_trades"}
    m = compute_metrics(r, DAILY, positions=torch.ones(3, 2), turnover=torch.ones(3))
    assert set(m) == BASE_KEYS | {"exposure", "mean_turnover", "annual_turnover"}
    assert m["periods_per_year"].item() == DAILY


# --- invalid and missing input ------------------------------------------------------------------


def test_nan_returns_make_the_return_metrics_of_their_path_nan() -> None:
    returns = torch.tensor([[0.01, math.nan, 0.02], [0.01, -0.01, 0.02]], dtype=torch.float64)
    m = compute_metrics(returns, DAILY)
    for key in BASE_KEYS - {"periods_per_year"}:
        assert math.isnan(m[key][0].item()), key
        assert not math.isnan(m[key][1].item()), key


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"returns": torch.zeros(2, 3, 4)}, id="3d-returns"),
        pytest.param({"positions": torch.zeros(5, 2)}, id="positions-wrong-length"),
        pytest.param({"positions": torch.zeros(4)}, id="positions-without-assets"),
        pytest.param({"turnover": torch.zeros(3)}, id="turnover-wrong-length"),
        pytest.param({"trades": torch.zeros(1, 4)}, id="trades-wrong-shape"),
        pytest.param({"periods_per_year": 0.0}, id="zero-periods-per-year"),
    ],
)
def test_invalid_inputs_raise_value_error(kwargs: dict) -> None:
    args = {"returns": torch.zeros(4), "periods_per_year": DAILY} | kwargs
    with pytest.raises(ValueError):
        compute_metrics(**args)


# --- metrics_to_floats --------------------------------------------------------------------------


def test_metrics_to_floats_gives_json_ready_floats() -> None:
    m = _m([0.01, -0.02, 0.03], trades=torch.tensor([1, 0, 2]))
    assert all(type(v) is float for v in m.values())
    assert json.loads(json.dumps(m)) == pytest.approx(m)


def test_metrics_to_floats_rejects_batched_metrics() -> None:
    batch = compute_metrics(torch.zeros(2, 3, dtype=torch.float64), DAILY)
    with pytest.raises(ValueError):
        metrics_to_floats(batch)


def test_reported_metrics_are_what_a_run_with_positions_computes() -> None:
    assert REPORTED[:4] == ("sharpe", "sortino", "annual_return", "total_return")
    assert len(set(REPORTED)) == len(REPORTED) == 11
    r = torch.as_tensor(_normal(n=50))
    positions = torch.full((50, 2), 0.5, dtype=torch.float64)
    out = compute_metrics(r, DAILY, positions=positions, turnover=r.abs(), trades=r.abs())
    assert set(REPORTED) <= set(out)
    assert not set(REPORTED) <= set(compute_metrics(r, DAILY))  # needs the positions


def test_loggable_values_keep_their_double_and_log_nan_as_zero() -> None:
    value = 2.3982333504013784  # float32 would keep 2.398233413696289
    out = loggable({"val/sharpe": value, "val/sortino": float("nan"), "val/x": float("inf")})
    assert all(v.dtype == torch.float64 and v.dim() == 0 for v in out.values())
    assert float(out["val/sharpe"]) == value
    assert float(out["val/sortino"]) == 0.0 and float(out["val/x"]) == 0.0
