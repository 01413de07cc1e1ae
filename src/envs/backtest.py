"""Score a path of target positions on a market with the accounting engine.

Forecasters' signals and agents' evaluation passes both end here, so they are priced the
same way and their metrics sit side by side in one table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from datamodules.errors import ConfigError
from datamodules.market import Market
from envs.accounting import COST_COMPONENTS, DEFAULT_CAPITAL, fill_and_mark, open_account
from envs.frictions import Frictions
from envs.metrics import compute_metrics


@dataclass
class BacktestResult:
    """Per-bar record of P paths over T decisions; currency unless said otherwise.

    ``equity[:, 0]`` is the capital at the close of the first decision bar; ``equity[:, i+1]``
    the equity at the close of bar ``start + i + 1``, after the fill of decision ``i``.
    """

    timestamps: np.ndarray  # (T+1,) bar start times of the decision bar and the T bars traded
    equity: torch.Tensor  # (P, T+1)
    returns: torch.Tensor  # (P, T) per-bar simple returns (fraction)
    targets: torch.Tensor  # (P, T, A) target weights decided
    weights: torch.Tensor  # (P, T, A) weights held at each bar's close
    costs: dict[str, torch.Tensor]  # component -> (P, T)
    turnover: torch.Tensor  # (P, T) traded notional / equity (fraction)
    fills: torch.Tensor  # (P, T)
    metrics: dict[str, torch.Tensor]  # name -> (P,)


def backtest(
    market: Market,
    targets: torch.Tensor,
    start: int,
    frictions: Frictions,
    capital: float = DEFAULT_CAPITAL,
) -> BacktestResult:
    """Trade ``targets`` (P, T, A) or (T, A), decided at the closes of bars ``start..start+T-1``.

    Decision ``i`` is filled at the open of bar ``start+i+1`` and marked at its close.
    """
    if targets.dim() == 2:
        targets = targets.unsqueeze(0)
    paths, steps, assets = targets.shape
    if assets != market.num_assets:
        raise ConfigError(
            f"backtest got targets for {assets} assets but the market has "
            f"{market.num_assets} ({', '.join(market.tickers)})."
        )
    if steps < 1:
        raise ConfigError("backtest needs at least one decision (targets with T >= 1 rows).")
    if start < 0 or start + steps >= market.num_bars:
        raise ConfigError(
            f"backtest needs bars {start}..{start + steps} but the market has "
            f"{market.num_bars}; the last decision needs one more bar to be filled."
        )
    dtype = torch.float64
    targets = targets.to(dtype)
    fills_at = slice(start + 1, start + steps + 1)
    decided_at = slice(start, start + steps)
    opens = torch.as_tensor(market.open[fills_at], dtype=dtype)
    closes = torch.as_tensor(market.close[fills_at], dtype=dtype)
    sigma = torch.as_tensor(market.sigma[decided_at], dtype=dtype)
    adv = torch.as_tensor(market.adv[decided_at], dtype=dtype)

    account = open_account(capital, (paths,), assets, dtype=dtype)
    equity = [account.equity]
    returns, weights, turnover, fills = [], [], [], []
    costs = {name: [] for name in COST_COMPONENTS}
    for i in range(steps):
        account, bar = fill_and_mark(
            account, targets[:, i], opens[i], closes[i], sigma[i], adv[i], frictions
        )
        equity.append(account.equity)
        returns.append(bar.bar_return)
        weights.append(bar.weights)
        turnover.append(bar.turnover)
        fills.append(bar.fills)
        for name in COST_COMPONENTS:
            costs[name].append(bar.costs[name])

    returns_t = torch.stack(returns, dim=1)
    weights_t = torch.stack(weights, dim=1)
    turnover_t = torch.stack(turnover, dim=1)
    fills_t = torch.stack(fills, dim=1)
    metrics = compute_metrics(
        returns_t,
        market.periods_per_year,
        positions=weights_t,
        turnover=turnover_t,
        trades=fills_t,
    )
    return BacktestResult(
        timestamps=market.timestamps[start : start + steps + 1],
        equity=torch.stack(equity, dim=1),
        returns=returns_t,
        targets=targets,
        weights=weights_t,
        costs={name: torch.stack(v, dim=1) for name, v in costs.items()},
        turnover=turnover_t,
        fills=fills_t,
        metrics=metrics,
    )


def buy_and_hold_targets(steps: int, num_assets: int) -> torch.Tensor:
    """Equal weights in every asset from the first decision on: (T, A) of 1/A."""
    return torch.full((steps, num_assets), 1.0 / num_assets, dtype=torch.float64)
