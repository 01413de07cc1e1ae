"""Evaluation mode: a deterministic pass of a policy over a whole split, from its first bar.

Returns the same :class:`~envs.backtest.BacktestResult` as a forecaster's backtest (equity
curve, weights, targets, costs (the total per bar, under ``"total"``), turnover, fills and the
simulator's metrics), so agents and forecasters are scored by the same code.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from envs.backtest import BacktestResult
from envs.metrics import compute_metrics
from envs.protocol import TradingEnvLike

Policy = Callable[[torch.Tensor], torch.Tensor]  # observations (P, D) -> actions (P,)


def evaluate_policy(
    policy: Policy,
    make_env: Callable[..., TradingEnvLike],
    span: tuple[int, int],
    paths: int = 1,
    device: str | torch.device = "cpu",
) -> tuple[BacktestResult, dict[str, int]]:
    """Run ``policy`` on ``paths`` identical envs over ``span``; return the record and the
    risk-rule counts (keyed by the env's ``rule_names``).

    ``make_env`` (usually an :class:`~envs.factory.EnvFactory`) is called as
    ``make_env(span, num_envs=paths, device=device, evaluation=True)``: the evaluation env has
    no random starts, one episode to the end of the split and float64 accounting. An episode
    ended early by a loss cut or a profit lock stays flat (in cash) afterwards.
    """
    trading = make_env(span, num_envs=paths, device=device, evaluation=True)
    market = trading.market
    device = trading.device
    rules = trading.rule_names
    td = trading.reset()
    obs = td["observation"]
    capital = trading.capital
    equity = [torch.full((paths,), capital, dtype=torch.float64, device=device)]
    returns, weights, targets, turnover, fills = [], [], [], [], []
    costs: list[torch.Tensor] = []
    alive = torch.ones(paths, dtype=torch.bool, device=device)
    fired = torch.zeros((paths, len(rules)), dtype=torch.float64, device=device)
    start = trading.first
    for _ in range(trading.length):
        with torch.no_grad():
            action = policy(obs).reshape(paths).long()
        state, obs, _, info, terminated, truncated = trading.transition(trading.state, action)
        trading.state = state
        after = trading.account
        last = equity[-1]
        eq = torch.where(alive, after.equity, last)
        returns.append(torch.where(alive, eq / last - 1.0, torch.zeros_like(last)))
        equity.append(eq)
        held = after.shares * after.mark / after.equity.unsqueeze(-1)
        weights.append(torch.where(alive.unsqueeze(-1), held, torch.zeros_like(held)))
        targets.append(
            torch.where(alive.unsqueeze(-1), after.target, torch.zeros_like(after.target))
        )
        turnover.append(
            torch.where(alive, info["turnover"].squeeze(-1).double(), torch.zeros_like(last))
        )
        fills.append(torch.where(alive, info["fills"].squeeze(-1).double(), torch.zeros_like(last)))
        paid = info["cost"].squeeze(-1).double() * capital / 1e4  # bps of capital -> currency
        costs.append(torch.where(alive, paid, torch.zeros_like(last)))
        fired = fired + info["triggers"].double() * alive.unsqueeze(
            -1
        )  # an ended episode fires nothing
        alive = alive & ~terminated
        if bool(truncated.all()):
            break
    returns_t = torch.stack(returns, dim=1)
    weights_t = torch.stack(weights, dim=1)
    turnover_t = torch.stack(turnover, dim=1)
    fills_t = torch.stack(fills, dim=1)
    metrics = compute_metrics(
        returns_t, market.periods_per_year, positions=weights_t, turnover=turnover_t, trades=fills_t
    )
    steps = returns_t.shape[1]
    result = BacktestResult(
        timestamps=market.timestamps[start : start + steps + 1],
        equity=torch.stack(equity, dim=1),
        returns=returns_t,
        targets=torch.stack(targets, dim=1),
        weights=weights_t,
        costs={"total": torch.stack(costs, dim=1)},
        turnover=turnover_t,
        fills=fills_t,
        metrics=metrics,
    )
    counts = dict(zip(rules, [int(c) for c in fired.sum(0).tolist()], strict=True))
    return result, counts
