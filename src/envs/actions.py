"""The action-scheme plug-ins (``env.actions``, chosen by ``_target_``): discrete actions ->
target weights (fraction of equity per asset, signed).

Three schemes, all pure tensor code (no host syncs), so the env step can be compiled:
``TargetActions`` (a fixed table of target positions), ``SizingActions`` (hold, or buy/sell a
share of capital relative to the current target) and ``FactorActions`` (12 portfolio rules
scored from trailing windows known at the decision bar, for any number of assets). Every
scheme takes the market first: the config group builds a ``_partial_`` and the env passes
its market. A new scheme subclasses :class:`ActionScheme`.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from typing import Annotated

import numpy as np
import torch

from datamodules.errors import ConfigError
from datamodules.market import Market


class ActionScheme:
    """Base of the action schemes: ``num_actions``, ``names`` and :meth:`targets`.

    Tensors held as attributes follow :meth:`to` (floating ones take the env's accounting
    dtype, the others keep theirs), so a subclass usually only writes ``__init__``,
    :meth:`targets` and :meth:`table`.
    """

    num_actions: int
    names: list[str]

    def targets(self, action: torch.Tensor, current: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Target weights (N, A) for ``action`` (N,), given current targets and decision bars."""
        raise NotImplementedError

    def to(self, device: torch.device | str, dtype: torch.dtype) -> ActionScheme:
        """A copy whose tensors live on ``device``, floating ones as ``dtype`` (self is kept)."""
        moved = copy.copy(self)
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                kwargs = {"dtype": dtype} if value.is_floating_point() else {}
                setattr(moved, name, value.to(device=device, **kwargs))
        return moved

    def table(self) -> dict[int, list[float] | str]:
        """Action index -> target positions (or a rule's description) for metadata."""
        raise NotImplementedError

    def keys(self, tickers: Sequence[str]) -> list[str]:
        """A key per action saying what it does, comparable between envs with other tickers
        (a curriculum phase carries a policy head across them by these keys)."""
        return list(self.names)

    @property
    def neutral(self) -> int | None:
        """The index of the action that changes nothing (hold, or all flat), if there is one."""
        return self.names.index("hold") if "hold" in self.names else None


def _position_size(market: Market, position_size: float | None) -> float:
    if position_size is None:
        return 1.0 / market.num_assets
    if not position_size > 0:
        raise ConfigError(
            f"env.actions.position_size is {position_size}; use a fraction of equity > 0, "
            "or null for 1 / number of tickers."
        )
    return float(position_size)


class TargetActions(ActionScheme):
    """Every combination of per-ticker target levels: 3 levels x 2 tickers = 9 actions.

    ``levels`` are multiples of ``position_size`` (fraction of equity per ticker, default
    1/number of tickers): [0, 1, -1] = flat, long, short.
    """

    def __init__(
        self,
        market: Market,
        levels: Sequence[float] = (0.0, 1.0, -1.0),
        position_size: Annotated[float, "> 0"] | None = None,
    ) -> None:
        levels = [float(v) for v in levels]
        if not levels:
            raise ConfigError("env.actions.levels must list at least one target level.")
        size = _position_size(market, position_size)
        combos = list(itertools.product(levels, repeat=market.num_assets))
        self._table = torch.tensor(combos, dtype=torch.float64) * size
        self.num_actions = len(combos)
        self.names = ["/".join(f"{v:+g}" for v in c) for c in combos]
        self._levels = combos

    def keys(self, tickers: Sequence[str]) -> list[str]:
        """``NVDA=+1,MSFT=-1`` per action, flat tickers left out ("" is all flat), so "long
        NVDA" on one ticker is the same key as "long NVDA, flat MSFT" on two."""
        return [
            ",".join(f"{t}={v:+g}" for t, v in zip(tickers, combo, strict=True) if v != 0)
            for combo in self._levels
        ]

    @property
    def neutral(self) -> int | None:
        flat = [i for i, combo in enumerate(self._levels) if all(v == 0 for v in combo)]
        return flat[0] if flat else None

    def targets(self, action: torch.Tensor, current: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self._table[action]

    def table(self) -> dict[int, list[float] | str]:
        return {i: row.tolist() for i, row in enumerate(self._table.double().cpu())}


class SizingActions(ActionScheme):
    """Hold, or buy / sell ``steps`` (fractions of capital) on every ticker, within +-max_position.

    Default 9 actions: hold, buy 25/50/75/100%, sell 25/50/75/100% of capital (per ticker,
    scaled by ``position_size``, the fraction of equity per ticker at 100%; default
    1/number of tickers). ``max_position``: the target limit in units of ``position_size``.
    """

    def __init__(
        self,
        market: Market,
        steps: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
        position_size: Annotated[float, "> 0"] | None = None,
        max_position: Annotated[float, "> 0"] = 1.0,
    ) -> None:
        steps = [float(s) for s in steps]
        if not steps or not all(s > 0 for s in steps):
            raise ConfigError(
                f"env.actions.steps is {steps}; list at least one positive fraction of capital "
                "to buy or sell (e.g. [0.25, 0.5, 0.75, 1.0])."
            )
        if not max_position > 0:
            raise ConfigError(
                f"env.actions.max_position is {max_position}; the target limit must be > 0 "
                "(in units of position_size)."
            )
        size = _position_size(market, position_size)
        deltas = [0.0, *steps, *[-s for s in steps]]
        self._delta = torch.tensor(deltas, dtype=torch.float64) * size
        self._limit = float(max_position) * size
        self.num_actions = len(deltas)
        self.names = ["hold", *[f"buy {s:.0%}" for s in steps], *[f"sell {s:.0%}" for s in steps]]

    def targets(self, action: torch.Tensor, current: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (current + self._delta[action].unsqueeze(-1)).clamp(-self._limit, self._limit)

    def table(self) -> dict[int, list[float] | str]:
        return {
            i: f"{name}: target += {d:+g} per ticker"
            for i, (name, d) in enumerate(zip(self.names, self._delta.tolist(), strict=True))
        }


FACTOR_ACTIONS = (
    # name, factor scored (None = equal weight), share of equity invested
    ("hold", None, None),
    ("full cash", None, 0.0),
    ("defensive 50% cash", None, 0.5),
    ("light cash 25%", None, 0.75),
    ("equal weight", None, 1.0),
    ("momentum tilt", "momentum", 1.0),
    ("low-volatility tilt", "low_volatility", 1.0),
    ("quality tilt", "quality", 1.0),
    ("small-size tilt", "small_size", 1.0),
    ("safe momentum", "momentum", 0.5),
    ("safe quality", "quality", 0.5),
    ("risk-on", "high_volatility", 1.0),
)
FACTORS = ("equal", "momentum", "low_volatility", "quality", "small_size", "high_volatility")


def factor_scores(market: Market, lookback: int) -> np.ndarray:
    """(T, factors, A) cross-sectional z-scores from the ``lookback`` bars up to each bar t.

    momentum: trailing log return; low_volatility: minus trailing volatility; quality:
    trailing Sharpe (mean / std of bar returns); small_size: minus log mean dollar volume;
    high_volatility: trailing volatility. Rows before ``lookback`` bars of history are 0.
    """
    close = market.close
    logret = np.zeros_like(close)
    logret[1:] = np.log(close[1:] / close[:-1])
    csum = np.cumsum(logret, axis=0)
    csq = np.cumsum(logret**2, axis=0)
    dollar = np.cumsum(close * market.volume, axis=0)
    n = lookback
    mom = np.zeros_like(close)
    mean = np.zeros_like(close)
    var = np.zeros_like(close)
    size = np.zeros_like(close)
    mom[n:] = csum[n:] - csum[:-n]
    mean[n:] = mom[n:] / n
    var[n:] = (csq[n:] - csq[:-n]) / n - mean[n:] ** 2
    size[n:] = np.log((dollar[n:] - dollar[:-n]) / n + 1.0)
    vol = np.sqrt(np.clip(var, 0.0, None))
    quality = np.where(vol > 0, mean / np.where(vol > 0, vol, 1.0), 0.0)
    raw = np.stack([np.zeros_like(close), mom, -vol, quality, -size, vol], axis=1)

    def zscore(x: np.ndarray) -> np.ndarray:
        mu = x.mean(axis=-1, keepdims=True)
        sd = x.std(axis=-1, keepdims=True)
        return np.where(sd > 0, (x - mu) / np.where(sd > 0, sd, 1.0), 0.0)

    scores = zscore(raw)
    scores[:n] = 0.0
    return scores


class FactorActions(ActionScheme):
    """The 12 portfolio actions of ``FACTOR_ACTIONS`` over any number of assets (plus cash).

    A tilt weights asset i by clip(1 + tilt_strength * z_i, 0, max_multiple) of the equal
    weight, normalised to the invested share; z are the factor's z-scores at the decision bar.
    """

    def __init__(
        self,
        market: Market,
        lookback: Annotated[int, ">= 1"] = 20,
        tilt_strength: Annotated[float, ">= 0"] = 1.0,
        max_multiple: Annotated[float, "> 0"] = 3.0,
    ) -> None:
        if isinstance(lookback, bool) or int(lookback) != lookback or lookback < 1:
            raise ConfigError(
                f"env.actions.lookback is {lookback}; use a whole number of bars >= 1."
            )
        if not tilt_strength >= 0:
            raise ConfigError(
                f"env.actions.tilt_strength is {tilt_strength}; use a weight multiple >= 0 "
                "per unit of z-score (0 = equal weight)."
            )
        if not max_multiple > 0:
            raise ConfigError(
                f"env.actions.max_multiple is {max_multiple}; the cap on an asset's weight "
                "(a multiple of equal weight) must be > 0."
            )
        self._scores = torch.from_numpy(factor_scores(market, int(lookback)))
        index = {f: i for i, f in enumerate(FACTORS)}
        self._factor = torch.tensor([index[f or "equal"] for _, f, _ in FACTOR_ACTIONS])
        self._invest = torch.tensor(
            [1.0 if s is None else s for _, _, s in FACTOR_ACTIONS], dtype=torch.float64
        )
        self._hold = torch.tensor([s is None for _, _, s in FACTOR_ACTIONS])
        self._strength = float(tilt_strength)
        self._max = float(max_multiple)
        self.num_actions = len(FACTOR_ACTIONS)
        self.names = [name for name, _, _ in FACTOR_ACTIONS]

    def targets(self, action: torch.Tensor, current: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        z = self._scores[t, self._factor[action]]  # (N, A)
        w = (1.0 + self._strength * z).clamp(0.0, self._max)
        w = w / w.sum(-1, keepdim=True).clamp_min(1e-12)
        target = w * self._invest[action].unsqueeze(-1)
        return torch.where(self._hold[action].unsqueeze(-1), current, target)

    def table(self) -> dict[int, list[float] | str]:
        return {
            i: f"{name} (factor {f or 'equal'}, invested {1.0 if s is None else s:g})"
            for i, (name, f, s) in enumerate(FACTOR_ACTIONS)
        }
