"""The one accounting engine: target weights -> fills at the next open -> marked at its close.

Every PnL in the project comes from :func:`fill_and_mark`: the vectorised backtest of a
forecaster's signal loops it over time, the RL envs call it once per step. Timing: a target
decided at the close of bar t is filled at the open of bar t+1 and marked at the close of
bar t+1. Shares are sized from the equity at that open, so no price after the decision is
used to choose the order, and the bar's own close is only used to mark it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from envs.frictions import Frictions

COST_COMPONENTS = ("commission", "spread", "slippage", "impact")
DEFAULT_CAPITAL = 100_000.0  # the one default starting equity, in currency (envs, backtests)


@dataclass
class Account:
    """State of a batch of accounts, all tensors, batch shape ``B`` and ``A`` assets.

    ``cash`` and ``equity`` are in currency (equity = cash + shares x last close);
    ``shares`` signed share counts; ``target`` the last target weights (fraction of equity,
    signed) that were traded to. A new target equal to the last one is not traded again, so
    positions drift with prices, as a held position does.
    """

    cash: torch.Tensor  # (*B,)
    shares: torch.Tensor  # (*B, A)
    target: torch.Tensor  # (*B, A)
    equity: torch.Tensor  # (*B,)
    mark: torch.Tensor  # (*B, A) price each asset was last marked at (close)


@dataclass
class BarOutcome:
    """What one bar did to a batch of accounts; currency unless said otherwise."""

    pnl: torch.Tensor  # (*B,) equity change over the bar, after costs
    bar_return: torch.Tensor  # (*B,) pnl / equity at the previous close (fraction)
    costs: dict[str, torch.Tensor]  # component -> (*B,) currency paid at the fill
    total_cost: torch.Tensor  # (*B,)
    traded_notional: torch.Tensor  # (*B,) sum over assets of |shares traded| x open
    turnover: torch.Tensor  # (*B,) traded notional / equity at the open (fraction)
    fills: torch.Tensor  # (*B,) number of assets whose position changed
    weights: torch.Tensor  # (*B, A) position value / equity at the close (signed fraction)
    asset_pnl: torch.Tensor  # (*B, A) each asset's share of pnl, after its costs (sums to pnl)
    asset_cost: torch.Tensor  # (*B, A) costs paid per asset
    asset_costs: dict[str, torch.Tensor]  # component -> (*B, A) currency paid per asset


def open_account(
    capital: float,
    batch_shape: tuple[int, ...],
    num_assets: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
) -> Account:
    """Flat accounts holding ``capital`` in cash."""
    return Account(
        cash=torch.full(batch_shape, float(capital), device=device, dtype=dtype),
        shares=torch.zeros((*batch_shape, num_assets), device=device, dtype=dtype),
        target=torch.zeros((*batch_shape, num_assets), device=device, dtype=dtype),
        equity=torch.full(batch_shape, float(capital), device=device, dtype=dtype),
        mark=torch.ones((*batch_shape, num_assets), device=device, dtype=dtype),
    )


def fill_and_mark(
    account: Account,
    target: torch.Tensor,
    open_next: torch.Tensor,
    close_next: torch.Tensor,
    sigma: torch.Tensor,
    adv: torch.Tensor,
    frictions: Frictions,
) -> tuple[Account, BarOutcome]:
    """Trade ``account`` to ``target`` weights at ``open_next`` and mark it at ``close_next``.

    ``target`` (*B, A): weights decided at the close of bar t (fraction of equity, signed).
    ``open_next``/``close_next`` (*B, A) or broadcastable: prices of bar t+1.
    ``sigma``/``adv`` (*B, A): trailing volatility and volume known at bar t (for impact).
    Pure tensor code: no host syncs, no Python branches on data.
    """
    equity_open = account.cash + (account.shares * open_next).sum(-1)
    changed = target != account.target
    wanted = target * equity_open.unsqueeze(-1) / open_next
    new_shares = torch.where(changed, wanted, account.shares)
    traded = new_shares - account.shares
    per_asset = frictions.costs(traded, open_next, sigma, adv)
    costs = {name: per_asset[name].sum(-1) for name in COST_COMPONENTS}
    asset_cost = (
        per_asset["commission"] + per_asset["spread"] + per_asset["slippage"] + per_asset["impact"]
    )
    total_cost = asset_cost.sum(-1)
    cash = account.cash - (traded * open_next).sum(-1) - total_cost
    position_value = new_shares * close_next
    equity = cash + position_value.sum(-1)
    pnl = equity - account.equity
    asset_pnl = position_value - account.shares * account.mark - traded * open_next - asset_cost
    traded_notional = (traded.abs() * open_next).sum(-1)
    outcome = BarOutcome(
        pnl=pnl,
        bar_return=pnl / account.equity,
        costs=costs,
        total_cost=total_cost,
        traded_notional=traded_notional,
        turnover=traded_notional / equity_open,
        fills=(traded != 0).sum(-1),
        weights=position_value / equity.unsqueeze(-1),
        asset_pnl=asset_pnl,
        asset_cost=asset_cost,
        asset_costs=per_asset,
    )
    new_target = torch.where(changed, target, account.target)
    mark = close_next.expand_as(new_shares)
    return Account(
        cash=cash, shares=new_shares, target=new_target, equity=equity, mark=mark
    ), outcome


def replay_outcomes(
    start: Account,
    cash: torch.Tensor,
    shares: torch.Tensor,
    equity: torch.Tensor,
    open_next: torch.Tensor,
    close_next: torch.Tensor,
    sigma: torch.Tensor,
    adv: torch.Tensor,
    frictions: Frictions,
) -> dict[str, torch.Tensor]:
    """What :func:`fill_and_mark` reported bar by bar over T bars, from the states it left.

    ``start``: the account before the first bar (batch ``B``); ``cash``, ``equity`` (*B, T)
    and ``shares`` (*B, T, A): after each bar's fill and mark; the prices and the impact
    inputs (T, A) of each bar, as :func:`fill_and_mark` took them. Returns by name: returns,
    turnover, fills, weights (its :class:`BarOutcome` fields), shares, the costs per component
    (*B, T) and per asset (``asset_<component>``, *B, T, A): fill_and_mark's own formulas,
    over every bar at once, so a loop over the bars needs to carry and keep only the account.
    """
    before_shares = torch.cat([start.shares.unsqueeze(-2), shares[..., :-1, :]], dim=-2)
    before_cash = torch.cat([start.cash.unsqueeze(-1), cash[..., :-1]], dim=-1)
    before_equity = torch.cat([start.equity.unsqueeze(-1), equity[..., :-1]], dim=-1)
    traded = shares - before_shares
    per_asset = frictions.costs(traded, open_next, sigma, adv)
    equity_open = before_cash + _sum_assets(before_shares * open_next)
    traded_notional = _sum_assets(traded.abs() * open_next)
    return {
        "returns": (equity - before_equity) / before_equity,
        "turnover": traded_notional / equity_open,
        "fills": (traded != 0).sum(-1),
        "weights": shares * close_next / equity.unsqueeze(-1),
        "shares": shares,
        **{name: _sum_assets(per_asset[name]) for name in COST_COMPONENTS},
        **{f"asset_{name}": per_asset[name] for name in COST_COMPONENTS},
    }


def _sum_assets(x: torch.Tensor) -> torch.Tensor:
    """``x.sum(-1)``; with one asset the column itself (the same numbers, without a reduction
    over a length-1 axis, which costs torch a full pass)."""
    return x[..., 0] if x.shape[-1] == 1 else x.sum(-1)
