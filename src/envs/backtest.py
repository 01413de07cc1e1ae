"""Score a path of target positions on a market with the accounting engine.

Forecasters' signals and agents' evaluation passes both end here, so they are priced the
same way and their metrics sit side by side in one table.

Two loops carry the accounts through the accounting engine's
:func:`~envs.accounting.fill_and_mark` over the decisions and keep what each bar left (cash,
shares, equity): the eager one, a Python loop of torch ops (about 0.1 ms of dispatch per bar,
whatever the number of paths), and the compiled one, a ``torch.compile``-d scan over chunks of
:data:`CHUNK` bars that runs the whole chunk inside one C++ loop. The rest of the record
(returns, weights, turnover, fills, costs) needs no recursion: it is computed once over every
bar by :func:`~envs.accounting.replay_outcomes` (fill_and_mark's formulas), so each bar of a
loop writes 2 + A numbers per path. Both loops give the same numbers (tested: equal to 1e-12
relative, bitwise for one asset). The first compiled call of a
shape pays a compile (seconds; inductor caches it on disk for later processes), so
``compile=None`` (auto) compiles only batches of at least :data:`COMPILE_MIN_PATH_BARS`
path-bars, or shapes already compiled in this process; ``bench/backtest.py`` measures both
beside vectorbt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from datamodules.errors import ConfigError
from datamodules.market import Market
from envs.accounting import (
    COST_COMPONENTS,
    DEFAULT_CAPITAL,
    Account,
    fill_and_mark,
    open_account,
    replay_outcomes,
)
from envs.frictions import Frictions
from envs.metrics import compute_metrics

log = logging.getLogger(__name__)

CHUNK = 512  # bars per call of the compiled scan (the last chunk is padded with no-trade bars)
COMPILE_MIN_PATH_BARS = 2**18  # compile=None compiles from paths x bars >= this (64 x 4096)
_COMPILED: dict[tuple, Callable] = {}  # compiled chunk scans by (paths, assets, frictions)
_FAILED: set[tuple] = set()  # shapes whose compile failed (they run eagerly)


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
    # What the trade journal (envs.trades) reads; None where a record does not keep it.
    shares: torch.Tensor | None = None  # (P, T, A) signed shares held after each bar's fill
    fill_price: torch.Tensor | None = None  # (T, A) the open each decision is filled at
    mark_price: torch.Tensor | None = None  # (T, A) the close each bar is marked at
    asset_costs: dict[str, torch.Tensor] | None = None  # component -> (P, T, A) paid per asset
    stopped: torch.Tensor | None = None  # (P, T) bool: the bar ended the episode at its close
    segments: tuple[int, ...] = (0,)  # where each joined span starts (envs.stitch)


def backtest(
    market: Market,
    targets: torch.Tensor,
    start: int,
    frictions: Frictions,
    capital: float = DEFAULT_CAPITAL,
    compile: bool | None = None,
) -> BacktestResult:
    """Trade ``targets`` (P, T, A) or (T, A), decided at the closes of bars ``start..start+T-1``.

    Decision ``i`` is filled at the open of bar ``start+i+1`` and marked at its close.
    ``compile``: run the compiled scan (True), the eager loop (False), or choose (None: compiled
    from :data:`COMPILE_MIN_PATH_BARS` path-bars, or when this shape is already compiled).
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
    bars = (
        torch.as_tensor(market.open[fills_at], dtype=dtype),
        torch.as_tensor(market.close[fills_at], dtype=dtype),
        torch.as_tensor(market.sigma[decided_at], dtype=dtype),
        torch.as_tensor(market.adv[decided_at], dtype=dtype),
    )
    account = open_account(capital, (paths,), assets, dtype=dtype)
    key = (paths, assets, targets.device.type, frictions)
    if compiles(paths, steps, assets, frictions, compile, targets.device):
        cash, shares, equity = _compiled_loop(key, account, targets, bars, frictions)
    else:
        cash, shares, equity = _eager_loop(account, targets, bars, frictions)
    # Everything else the bars reported, from the accounts they left, over all bars at once.
    record = replay_outcomes(account, cash, shares, equity, *bars, frictions)
    returns_t = record["returns"]
    weights_t = record["weights"]
    turnover_t = record["turnover"]
    fills_t = record["fills"]
    metrics = compute_metrics(
        returns_t,
        market.periods_per_year,
        positions=weights_t,
        turnover=turnover_t,
        trades=fills_t,
    )
    return BacktestResult(
        timestamps=market.timestamps[start : start + steps + 1],
        equity=torch.cat([account.equity.unsqueeze(1), equity], dim=1),
        returns=returns_t,
        targets=targets,
        weights=weights_t,
        costs={name: record[name] for name in COST_COMPONENTS},
        turnover=turnover_t,
        fills=fills_t,
        metrics=metrics,
        shares=record["shares"],
        fill_price=bars[0],
        mark_price=bars[1],
        asset_costs={name: record[f"asset_{name}"] for name in COST_COMPONENTS},
    )


def buy_and_hold_targets(steps: int, num_assets: int) -> torch.Tensor:
    """Equal weights in every asset from the first decision on: (T, A) of 1/A."""
    return torch.full((steps, num_assets), 1.0 / num_assets, dtype=torch.float64)


# ---------------------------------------------------------------------- the loops over the bars
# A loop over the bars carries the account through the accounting engine and keeps what each bar
# left of it (cash, shares, equity); the rest of the record (returns, weights, turnover, fills,
# costs) needs no recursion and is computed after the loop by envs.accounting.replay_outcomes.


def _eager_loop(account: Account, targets: torch.Tensor, bars, frictions: Frictions):
    """The bars one by one in Python: (cash (P, T), shares (P, T, A), equity (P, T)) after
    each bar."""
    opens, closes, sigma, adv = bars
    cash, shares, equity = [], [], []
    for i in range(targets.shape[1]):
        account, _ = fill_and_mark(
            account, targets[:, i], opens[i], closes[i], sigma[i], adv[i], frictions
        )
        cash.append(account.cash)
        shares.append(account.shares)
        equity.append(account.equity)
    return torch.stack(cash, dim=1), torch.stack(shares, dim=1), torch.stack(equity, dim=1)


def compiles(
    paths: int,
    steps: int,
    assets: int,
    frictions: Frictions,
    compile: bool | None = None,
    device: torch.device | str = "cpu",
) -> bool:
    """Whether :func:`backtest` runs the compiled scan for ``paths`` x ``steps`` decisions over
    ``assets`` assets: as ``compile`` says, or (None) from :data:`COMPILE_MIN_PATH_BARS`
    path-bars or when this shape is already compiled in this process. On a CPU only; a shape
    whose compile failed runs eagerly."""
    key = (int(paths), int(assets), torch.device(device).type, frictions)
    if key[2] != "cpu" or key in _FAILED:
        return False
    if compile is not None:
        return bool(compile)
    return key in _COMPILED or paths * steps >= COMPILE_MIN_PATH_BARS


def _compiled_loop(key: tuple, account: Account, targets: torch.Tensor, bars, frictions: Frictions):
    """The bars in chunks of :data:`CHUNK` through the compiled scan: (cash (P, T), shares
    (P, T, A), equity (P, T)) after each bar, as :func:`_eager_loop` returns them.

    The scan carries the account packed into one (P, 2 + 3A) tensor and keeps, per bar, its
    first 2 + A numbers (cash, equity, shares). The last chunk is padded with the last bar's
    prices and targets (no trade), after every real bar, so the padding never reaches a kept
    value; it is cut off."""
    paths, steps, assets = targets.shape
    padded = -(-steps // CHUNK) * CHUNK

    def pad(x: torch.Tensor) -> torch.Tensor:  # (T, ...) -> (padded, ...)
        extra = padded - steps
        return torch.cat([x, x[-1:].expand(extra, *x.shape[1:])]) if extra else x

    xs = [pad(targets.transpose(0, 1)), *(pad(b) for b in bars)]
    carry = _pack_account(account)
    kept = torch.empty((padded, paths, 2 + assets), dtype=targets.dtype)  # bar-major
    try:
        scan, new = _compiled_scan(key, frictions)
        for begin in range(0, padded, CHUNK):
            part = [x[begin : begin + CHUNK].contiguous() for x in xs]
            if new:  # the first call compiles: timed, logged, kept for later calls
                new, clock = False, time.perf_counter()
                # Each shape and set of frictions is its own entry of dynamo's cache of the scan.
                limit = max(torch._dynamo.config.recompile_limit, len(_COMPILED) + 8)
                with torch._dynamo.config.patch(recompile_limit=limit):
                    carry, record = scan(carry, *part)
                _COMPILED[key] = scan
                log.info(
                    "backtest: compiled the scan for %d path(s) x %d asset(s) in %.1f s",
                    paths,
                    assets,
                    time.perf_counter() - clock,
                )
            else:
                carry, record = scan(carry, *part)
            kept[begin : begin + CHUNK].copy_(record)
    except Exception as err:  # no C++ compiler, an inductor failure: the eager loop is exact
        _FAILED.add(key)
        log.warning("backtest: the compiled scan failed (%s); pricing eagerly", err)
        return _eager_loop(account, targets, bars, frictions)
    kept = kept[:steps].transpose(0, 1)  # (P, T, 2 + A)
    return kept[..., 0].contiguous(), kept[..., 2:].contiguous(), kept[..., 1].contiguous()


def _pack_account(account: Account) -> torch.Tensor:
    """(P, 2 + 3A): cash, equity, shares, target and mark side by side."""
    scalars = torch.stack([account.cash, account.equity], dim=-1)
    return torch.cat([scalars, account.shares, account.target, account.mark], dim=-1)


def _unpack_account(packed: torch.Tensor, assets: int) -> Account:
    a = assets
    return Account(
        cash=packed[:, 0],
        equity=packed[:, 1],
        shares=packed[:, 2 : 2 + a],
        target=packed[:, 2 + a : 2 + 2 * a],
        mark=packed[:, 2 + 2 * a : 2 + 3 * a],
    )


def _compiled_scan(key: tuple, frictions: Frictions) -> tuple[Callable, bool]:
    """(the compiled scan of :data:`CHUNK` bars for the paths and assets of ``key``, whether it
    is new: compiled at its first call)."""
    if key in _COMPILED:
        return _COMPILED[key], False
    from torch._higher_order_ops.scan import scan

    assets = key[1]

    def body(carry: torch.Tensor, x):
        account, _ = fill_and_mark(_unpack_account(carry, assets), *x, frictions)
        packed = _pack_account(account)
        return packed, packed[:, : 2 + assets].clone()  # cash, equity, shares

    def run(carry, *xs):
        return scan(body, carry, tuple(xs))

    return torch.compile(run, dynamic=False, fullgraph=True, options={"cpp_wrapper": True}), True
