"""Performance metrics of a trading strategy, computed from its per-bar simple returns.

Everything here is pure torch, so it runs on any device and on batches of paths at once:
a ``(T,)`` series gives 0-d results, a ``(P, T)`` batch gives ``(P,)`` results, one per path.
Computation is done in float64 whatever the input dtype, and every result is float64.

Units
-----
* All returns, drawdowns and volatilities are **fractions**, never percent (0.05 means 5 %).
* ``returns`` and ``risk_free`` are **per bar**. Annualised figures use ``periods_per_year``
  (bars per year: 252 for daily bars, ``252 * 26`` for 15-minute bars of a 6.5-hour session).

Conventions (identical to the ``empyrical`` package, ``empyrical-reloaded``)
---------------------------------------------------------------------------
* ``total_return`` = ``prod(1 + r) - 1`` (``empyrical.cum_returns_final``).
* ``annual_return`` = CAGR = ``(1 + total_return) ** (periods_per_year / T) - 1``.
* ``annual_volatility`` = sample standard deviation (``ddof=1``) times ``sqrt(periods_per_year)``.
* ``sharpe`` = ``mean(r - rf) / std(r - rf, ddof=1) * sqrt(periods_per_year)``.
* ``sortino`` = ``mean(r - rf) * periods_per_year / downside_risk`` with
  ``downside_risk = sqrt(mean(min(r - rf, 0) ** 2)) * sqrt(periods_per_year)``.
* ``max_drawdown`` = the most negative ``(equity - running_peak) / running_peak``, where the
  equity curve starts at 1 *before* the first bar (so a loss on bar 1 is a drawdown).
* ``calmar`` = ``annual_return / |max_drawdown|``.

Edge cases follow empyrical: fewer than two bars gives NaN ``annual_volatility``, ``sharpe``
and ``sortino``; a series whose values are all equal has zero dispersion, so ``sharpe`` is
``+inf``/``-inf`` (or NaN when the excess return is exactly 0); ``sortino`` is ``+inf`` without
any return below ``risk_free`` (NaN when all excess returns are 0); ``calmar`` is NaN when
``max_drawdown == 0`` or when the ratio would be infinite; an empty series (``T == 0``) gives NaN
for every return-based metric.

Deliberate differences from empyrical
-------------------------------------
* NaN returns are **not** skipped (empyrical treats them as missing bars): a NaN return makes
  the return-based metrics of its path NaN, because a NaN return from a simulator is a bug to
  surface, not missing data.
* ``annual_volatility`` applies the same zero-dispersion rule as ``sharpe`` (empyrical does so
  only for ``sharpe``), so a constant series has a volatility of exactly 0 rather than a ~1e-18
  rounding residue.
"""

from __future__ import annotations

import math

import torch

__all__ = ["REPORTED", "compute_metrics", "core_metrics", "metrics_to_floats"]

REPORTED = (  # the metrics a run's test table shows, in this order (see compute_metrics)
    "sharpe",
    "sortino",
    "annual_return",
    "total_return",
    "max_drawdown",
    "annual_volatility",
    "calmar",
    "win_rate",
    "annual_turnover",
    "exposure",
    "num_trades",
)

_DTYPE = torch.float64


def _as_float64(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    return x.to(device=device, dtype=_DTYPE)


def _check_same_shape(name: str, x: torch.Tensor, returns: torch.Tensor) -> None:
    if x.shape != returns.shape:
        raise ValueError(
            f"{name} must have the shape of returns {tuple(returns.shape)}, got {tuple(x.shape)}"
        )


def _sample_std(x: torch.Tensor) -> torch.Tensor:
    """Sample standard deviation (ddof=1) over the last axis, 0 for a constant series.

    Two-pass (mean first, then squared deviations), like bottleneck/numpy. Where every value of
    a path is identical the result is set to exactly 0 (empyrical's ``_zero_dispersion_std``):
    the floating-point mean can differ from the values in the last bit, and dividing by that
    residue would turn an infinite Sharpe ratio into an arbitrary number near 1e15.
    """
    n = x.shape[-1]
    mean = x.mean(dim=-1, keepdim=True)
    var = (x - mean).square().sum(dim=-1) / (n - 1)
    std = var.sqrt()
    constant = x.amax(dim=-1) == x.amin(dim=-1)
    return torch.where(constant, torch.zeros_like(std), std)


def _equity_and_peak(returns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The equity curve anchored at 1 before the first bar, (P, T + 1), and its running peak."""
    p = returns.shape[0]
    anchor = torch.ones((p, 1), dtype=_DTYPE, device=returns.device)
    equity = torch.cat([anchor, torch.cumprod(1.0 + returns, dim=-1)], dim=-1)
    return equity, torch.cummax(equity, dim=-1).values


def _max_drawdown(equity: torch.Tensor, peak: torch.Tensor) -> torch.Tensor:
    """The most negative ``(equity - peak) / peak`` after the anchor, per path (fraction)."""
    return ((equity - peak) / peak)[:, 1:].amin(dim=-1)


def _drawdown_duration(equity: torch.Tensor, peak: torch.Tensor) -> torch.Tensor:
    """Longest drawdown duration (bars) per path, from ``equity`` (P, T + 1) and its peak."""
    p, t1 = equity.shape
    # Bar t is underwater when equity is strictly below the running peak. last_peak[t] is the
    # index of the most recent bar <= t at a peak (bar 0, the anchor, always is one).
    underwater = equity < peak
    idx = torch.arange(t1, device=equity.device).expand(p, t1)
    last_peak = torch.cummax(torch.where(underwater, torch.zeros_like(idx), idx), dim=-1).values
    # For bar t >= 1, t - last_peak[t - 1] is the number of bars since the peak the drawdown
    # started from. It is a drawdown span when bar t is underwater (still in the drawdown; at
    # t == T this is the span of a drawdown that never recovers) or bar t - 1 was (bar t is
    # the recovery bar). Elsewhere (new highs after new highs) there is no drawdown: 0.
    in_drawdown = underwater[:, 1:] | underwater[:, :-1]
    span = idx[:, 1:] - last_peak[:, :-1]
    duration = torch.where(in_drawdown, span, torch.zeros_like(span)).amax(dim=-1)
    return duration.to(_DTYPE)


def _core(r: torch.Tensor, ann: float, risk_free: float) -> dict[str, torch.Tensor]:
    """``total_return``, ``annual_return``, ``annual_volatility``, ``sharpe``, ``sortino`` and
    ``max_drawdown`` of ``r`` (P, T) float64, plus the equity curve and its peak (``_equity``,
    ``_peak``) for the drawdown duration; see the module docstring for the definitions."""
    p, t = r.shape
    nan = torch.full((p,), math.nan, dtype=_DTYPE, device=r.device)
    if t == 0:
        keys = ("total_return", "annual_return", "annual_volatility", "sharpe", "sortino")
        return {**dict.fromkeys(keys, nan), "max_drawdown": nan}
    growth = torch.prod(1.0 + r, dim=-1)
    # Same expression as empyrical: ending_value ** (1 / num_years) - 1.
    out = {"total_return": growth - 1.0, "annual_return": torch.pow(growth, 1.0 / (t / ann)) - 1.0}
    equity, peak = _equity_and_peak(r)
    out["max_drawdown"] = _max_drawdown(equity, peak)
    out["_equity"], out["_peak"] = equity, peak
    if t < 2:
        out["annual_volatility"] = out["sharpe"] = out["sortino"] = nan
        return out
    out["annual_volatility"] = _sample_std(r) * math.sqrt(ann)
    excess = r - risk_free
    mean_excess = excess.mean(dim=-1)
    out["sharpe"] = mean_excess / _sample_std(excess) * math.sqrt(ann)
    downside = excess.clamp(max=0.0).square().mean(dim=-1).sqrt() * math.sqrt(ann)
    out["sortino"] = mean_excess * ann / downside
    return out


def core_metrics(
    returns: torch.Tensor, periods_per_year: float, risk_free: float = 0.0
) -> dict[str, torch.Tensor]:
    """The return and risk metrics alone, for many paths fast (a bootstrap's resamples):
    ``total_return``, ``annual_return``, ``annual_volatility``, ``sharpe``, ``sortino`` and
    ``max_drawdown`` of ``returns`` (P, T), each (P,) float64, exactly as
    :func:`compute_metrics` gives them."""
    if returns.dim() != 2:
        raise ValueError(f"returns must have shape (P, T), got {tuple(returns.shape)}")
    out = _core(_as_float64(returns, returns.device), float(periods_per_year), risk_free)
    out.pop("_equity", None)
    out.pop("_peak", None)
    return out


def compute_metrics(
    returns: torch.Tensor,
    periods_per_year: float,
    positions: torch.Tensor | None = None,
    turnover: torch.Tensor | None = None,
    trades: torch.Tensor | None = None,
    risk_free: float = 0.0,
) -> dict[str, torch.Tensor]:
    """Performance metrics of one return series ``(T,)`` or of a batch of paths ``(P, T)``.

    Vectorised over time and paths (no Python loop, no host synchronisation), on the device of
    ``returns``; computed and returned in float64. See the module docstring for the exact
    definitions, which equal empyrical's, and the few deliberate differences.

    Args:
        returns: per-bar simple returns of the equity, as fractions (0.01 = +1 %), shape
            ``(T,)`` or ``(P, T)``.
        periods_per_year: bars per year, used to annualise (252 for daily bars,
            ``252 * 26`` for 15-minute bars).
        positions: position weights held over each bar, signed fractions of equity, shape
            ``(T, A)`` or ``(P, T, A)``. Adds ``exposure``.
        turnover: traded notional divided by equity on each bar, shape of ``returns``. Adds
            ``mean_turnover`` and ``annual_turnover``.
        trades: number of fills (asset position changes) on each bar, shape of ``returns``.
            Adds ``num_trades``.
        risk_free: risk-free return **per bar** (fraction), subtracted for ``sharpe`` and used
            as the required return of ``sortino``.

    Returns:
        A dict of float64 tensors, each of shape ``()`` for a ``(T,)`` input or ``(P,)`` for a
        ``(P, T)`` input:

        * ``total_return``: compounded return over the whole series, fraction.
        * ``annual_return``: compound annual growth rate (CAGR), fraction per year.
        * ``annual_volatility``: annualised sample standard deviation of returns (ddof=1).
        * ``sharpe``: annualised Sharpe ratio of the returns in excess of ``risk_free``.
        * ``sortino``: annualised Sortino ratio with ``risk_free`` as required return.
        * ``calmar``: ``annual_return / |max_drawdown|``; NaN when there is no drawdown.
        * ``max_drawdown``: largest peak-to-trough fall of equity, a negative fraction
          (-0.25 = a 25 % fall), 0 without any drawdown.
        * ``max_drawdown_duration``: longest span, in bars, from a peak of equity until the bar
          on which equity is back at or above that peak, or until the last bar when it never
          recovers; 0 without any drawdown.
        * ``win_rate``: share of bars with a return > 0 among bars with a return != 0 (raw
          returns, ``risk_free`` not subtracted); NaN when every return is 0.
        * ``profit_factor``: sum of positive returns / |sum of negative returns| (raw returns);
          ``inf`` with gains and no losses, NaN with neither.
        * ``periods_per_year``: the ``periods_per_year`` argument, broadcast to the result shape.
        * ``mean_turnover`` (with ``turnover``): mean traded notional / equity per bar.
        * ``annual_turnover`` (with ``turnover``): ``mean_turnover * periods_per_year``.
        * ``exposure`` (with ``positions``): mean over bars of the gross exposure
          ``sum over assets of |position|``, a fraction of equity (1.0 = fully invested).
        * ``num_trades`` (with ``trades``): total number of fills.

    Raises:
        ValueError: on a ``returns`` tensor that is not 1-D or 2-D, on optional inputs whose
            shape does not match ``returns``, or on a non-positive ``periods_per_year``.
    """
    if returns.dim() not in (1, 2):
        raise ValueError(f"returns must have shape (T,) or (P, T), got {tuple(returns.shape)}")
    if not (math.isfinite(periods_per_year) and periods_per_year > 0):
        raise ValueError(f"periods_per_year must be a positive number, got {periods_per_year}")
    if positions is not None and (
        positions.dim() != returns.dim() + 1 or positions.shape[:-1] != returns.shape
    ):
        raise ValueError(
            f"positions must have shape {tuple(returns.shape)} + (A,), got {tuple(positions.shape)}"
        )
    if turnover is not None:
        _check_same_shape("turnover", turnover, returns)
    if trades is not None:
        _check_same_shape("trades", trades, returns)

    single = returns.dim() == 1
    device = returns.device
    r = _as_float64(returns, device)
    if single:
        r = r.unsqueeze(0)
    p, t = r.shape
    ann = float(periods_per_year)
    nan = torch.full((p,), math.nan, dtype=_DTYPE, device=device)
    has_nan = torch.isnan(r).any(dim=-1)

    core = _core(r, ann, risk_free)
    equity, peak = core.pop("_equity", None), core.pop("_peak", None)
    max_drawdown = core["max_drawdown"]
    if equity is None:
        calmar = max_drawdown_duration = nan
    else:
        max_drawdown_duration = torch.where(has_nan, nan, _drawdown_duration(equity, peak))
        calmar = torch.where(max_drawdown < 0, core["annual_return"] / max_drawdown.abs(), nan)
        calmar = torch.where(torch.isinf(calmar), nan, calmar)

    wins = (r > 0).sum(dim=-1).to(_DTYPE)
    nonzero = (r != 0).sum(dim=-1).to(_DTYPE)
    win_rate = torch.where(has_nan, nan, wins / nonzero)
    gains = r.clamp(min=0.0).sum(dim=-1)
    losses = r.clamp(max=0.0).sum(dim=-1).abs()
    profit_factor = gains / losses

    out: dict[str, torch.Tensor] = {
        "total_return": core["total_return"],
        "annual_return": core["annual_return"],
        "annual_volatility": core["annual_volatility"],
        "sharpe": core["sharpe"],
        "sortino": core["sortino"],
        "calmar": calmar,
        "max_drawdown": max_drawdown,
        "max_drawdown_duration": max_drawdown_duration,
        "win_rate": win_rate,
        "profit_factor": profit_factor,
        "periods_per_year": torch.full((p,), ann, dtype=_DTYPE, device=device),
    }
    if turnover is not None:
        tv = _as_float64(turnover, device).reshape(p, t)
        mean_turnover = tv.mean(dim=-1) if t > 0 else nan
        out["mean_turnover"] = mean_turnover
        out["annual_turnover"] = mean_turnover * ann
    if positions is not None:
        pos = _as_float64(positions, device).reshape(p, t, positions.shape[-1])
        out["exposure"] = pos.abs().sum(dim=-1).mean(dim=-1) if t > 0 else nan
    if trades is not None:
        out["num_trades"] = _as_float64(trades, device).reshape(p, t).sum(dim=-1)

    if single:
        out = {k: v.squeeze(0) for k, v in out.items()}
    return out


def metrics_to_floats(m: dict[str, torch.Tensor]) -> dict[str, float]:
    """Convert 0-d metric tensors (from ``compute_metrics`` on a ``(T,)`` series) to floats.

    Units are unchanged (fractions, per bar or annualised as documented in
    :func:`compute_metrics`). NaN and ``inf`` stay ``float('nan')`` / ``float('inf')``.

    Raises:
        ValueError: if a value is not 0-d (e.g. the ``(P,)`` results of a batch).
    """
    floats: dict[str, float] = {}
    for key, value in m.items():
        if value.dim() != 0:
            raise ValueError(
                f"metric {key!r} has shape {tuple(value.shape)}, expected a 0-d tensor"
            )
        floats[key] = float(value.item())
    return floats


def loggable(
    values: dict[str, float], device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """``values`` for Lightning's ``self.log``: NaN and infinities as 0.0 (a Sharpe ratio of a
    flat equity curve is undefined; logged, it is 0; ``metrics.json`` keeps them as null), each
    a float64 0-d tensor. Lightning turns a Python float into a float32 tensor (seven digits)
    but keeps a tensor's dtype, so the callback metrics a sweeper's objective reads hold the
    same double as the summary and ``metrics.json``. ``device``: the module's (a synced
    value is reduced across processes there)."""
    return {
        k: torch.tensor(v if math.isfinite(v) else 0.0, dtype=torch.float64, device=device)
        for k, v in values.items()
    }
