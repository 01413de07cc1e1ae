"""Evaluation mode: a deterministic pass of a policy over a whole split, from its first bar.

Returns the same :class:`~envs.backtest.BacktestResult` as a forecaster's backtest (equity
curve, weights, targets, costs (the total per bar, under ``"total"``), turnover, fills, the
simulator's metrics, and what the trade journal reads: shares held, fill and mark prices, costs
per asset, the bars that ended an episode), so agents and forecasters are scored by the same
code. The loop only steps the env and keeps what each step left; the record is built once
over the whole pass with the same operations (tested against the step-by-step record).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from envs.accounting import COST_COMPONENTS
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
    start = trading.first
    # The loop only steps: what each step left is kept as is, and the bookkeeping (an ended
    # episode stays flat) is done once over the whole pass below, with the same operations.
    kept: dict[str, list[torch.Tensor]] = {key: [] for key in _KEPT}
    # The env's step with the bar's accounting outcome (its costs per asset, for the trade
    # journal); an env without one is recorded without them.
    outcome = getattr(trading, "transition_outcome", None)
    for _ in range(trading.length):
        with torch.no_grad():
            action = policy(obs).reshape(paths).long()
            if outcome is None:
                step = trading.transition(trading.state, action)
            else:
                *step, bar = outcome(trading.state, action)
                for name in COST_COMPONENTS:
                    kept.setdefault(f"asset_{name}", []).append(bar.asset_costs[name])
        state, obs, _, info, terminated, truncated = step
        trading.state = state
        for key in ("equity", "shares", "mark", "target"):
            kept[key].append(state[key])
        for key in ("turnover", "fills", "cost", "triggers"):
            kept[key].append(info[key])
        kept["terminated"].append(terminated)
        if bool(truncated.all()):
            break
    per_step = {key: torch.stack(values, dim=1) for key, values in kept.items()}
    result, fired = _record(per_step, capital, market.periods_per_year)
    steps = result.returns.shape[1]
    result.timestamps = market.timestamps[start : start + steps + 1]
    # Each decision at bar t is filled at bar t + 1's open and marked at its close.
    filled = slice(start + 1, start + steps + 1)
    result.fill_price = torch.as_tensor(market.open[filled], dtype=torch.float64)
    result.mark_price = torch.as_tensor(market.close[filled], dtype=torch.float64)
    counts = dict(zip(rules, [int(c) for c in fired.tolist()], strict=True))
    return result, counts


_KEPT = (
    "equity",
    "shares",
    "mark",
    "target",
    "turnover",
    "fills",
    "cost",
    "triggers",
    "terminated",
)


def _record(
    per_step: dict[str, torch.Tensor], capital: float, periods_per_year: float
) -> tuple[BacktestResult, torch.Tensor]:
    """The pass's record from what each of its S steps left ((P, S, ...) tensors): an episode
    ended by a loss cut or a profit lock stays flat in cash from the next step on (its equity
    kept, no return, weight, cost or trigger). Returns (the record, trigger counts per rule)."""
    equity_after = per_step["equity"]
    paths, steps = equity_after.shape
    ended = per_step["terminated"]
    # alive[:, s]: no episode end before step s (the step that ends it still counts).
    alive = torch.ones_like(ended)
    alive[:, 1:] = ~ended[:, :-1]
    alive = alive.cummin(dim=1).values
    # Once ended, the equity stays at the last live step's.
    index = torch.arange(steps, device=alive.device).expand(paths, steps)
    last_live = torch.where(alive, index, torch.zeros_like(index)).cummax(dim=1).values
    equity = equity_after.gather(1, last_live)
    before = torch.cat([equity.new_full((paths, 1), capital), equity[:, :-1]], dim=1)
    zero = torch.zeros_like(equity)
    returns = torch.where(alive, equity / before - 1.0, zero)
    held = per_step["shares"] * per_step["mark"] / equity_after.unsqueeze(-1)
    live = alive.unsqueeze(-1)
    weights = torch.where(live, held, torch.zeros_like(held))
    targets = torch.where(live, per_step["target"], torch.zeros_like(per_step["target"]))
    turnover = torch.where(alive, per_step["turnover"].squeeze(-1).double(), zero)
    fills = torch.where(alive, per_step["fills"].squeeze(-1).double(), zero)
    paid = per_step["cost"].squeeze(-1).double() * capital / 1e4  # bps of capital -> currency
    costs = torch.where(alive, paid, zero)
    fired = (per_step["triggers"].double() * live).sum(dim=(0, 1))
    # The journal's view: the shares held (none once ended), the step that ended an episode,
    # each fill's costs per asset.
    shares = torch.where(live, per_step["shares"], torch.zeros_like(per_step["shares"]))
    stopped = ended & alive
    asset_costs = {
        name: torch.where(live, per_step[f"asset_{name}"], 0.0)
        for name in COST_COMPONENTS
        if f"asset_{name}" in per_step
    }
    metrics = compute_metrics(
        returns, periods_per_year, positions=weights, turnover=turnover, trades=fills
    )
    result = BacktestResult(
        timestamps=None,
        equity=torch.cat([equity.new_full((paths, 1), capital), equity], dim=1),
        returns=returns,
        targets=targets,
        weights=weights,
        costs={"total": costs},
        turnover=turnover,
        fills=fills,
        metrics=metrics,
        shares=shares,
        asset_costs=asset_costs or None,
        stopped=stopped,
    )
    return result, fired
