"""The reward plug-ins of the trading envs (``env.reward``, chosen by ``_target_``).

Every reward is ``raw * scale - penalty``, then optionally divided by a running std of rewards
(``normalize``). ``raw`` is what the subclass measures from the bar's outcome:

* :class:`PnLReward`: the bar's pnl after costs / capital, ticker-weighted (``weights``);
* :class:`LogReturnReward`: log of the equity ratio over the bar;
* :class:`DifferentialSharpeReward`: the differential Sharpe ratio (Moody & Saffell).

Hooks the env calls: :meth:`Reward.bind` (once, to the env's market, capital, device and
dtype; returns a bound copy, so one configured reward can serve several envs),
:meth:`Reward.init_state` / :meth:`Reward.reset` (its state in the env's state dict) and
``reward(bar, state, penalty) -> (reward (N,), state updates)`` inside the pure env step (no
host sync, so the step stays ``torch.compile``-able). A new reward subclasses :class:`Reward`
and implements :meth:`Reward.raw`.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from datamodules.errors import ConfigError

if TYPE_CHECKING:  # a light module: the config check builds rewards before torch is imported
    import torch

    from datamodules.market import Market
    from envs.accounting import BarOutcome


class Reward:
    """Base of the rewards: ``raw * scale - penalty`` (penalty: the risk rules', in reward units).

    ``scale`` multiplies the raw reward (a fraction of capital for pnl): 1e4 = basis points.
    ``normalize`` divides by a running std of rewards (EMA of the mean squared reward over the
    batch, rate ``normalize_eta`` per step, starting at 1). ``warn_above`` / ``warn_below``:
    the env warns once if the typical |reward| of its first steps is outside this range (a
    reward in the millions breaks value learning).
    """

    def __init__(
        self,
        scale: float = 1e4,
        normalize: bool = False,
        normalize_eta: float = 0.001,
        warn_above: float = 1e3,
        warn_below: float = 1e-6,
    ) -> None:
        if not scale > 0:
            raise ConfigError(f"env.reward.scale is {scale}; it must be > 0.")
        if not 0 < normalize_eta <= 1:
            raise ConfigError(
                f"env.reward.normalize_eta is {normalize_eta}; an EMA rate is in (0, 1]."
            )
        if not 0 <= warn_below < warn_above:
            raise ConfigError(
                f"env.reward.warn_below ({warn_below}) and env.reward.warn_above ({warn_above}) "
                "must satisfy 0 <= warn_below < warn_above."
            )
        self.scale = float(scale)
        self.normalize = bool(normalize)
        self.normalize_eta = float(normalize_eta)
        self.warn_above = float(warn_above)
        self.warn_below = float(warn_below)
        self.capital: float | None = None  # set by bind
        self.device: torch.device | None = None
        self.dtype: torch.dtype | None = None

    def __repr__(self) -> str:
        knobs = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in knobs.items())})"

    # ------------------------------------------------------------------ hooks
    def bind(
        self,
        market: Market,
        capital: float,
        device: torch.device | str,
        dtype: torch.dtype,
    ) -> Reward:
        """A copy of this reward bound to an env's market, capital (currency), device and
        accounting dtype; subclasses prepare their tensors in :meth:`_prepare`."""
        import torch

        bound = copy.copy(self)
        bound.capital = float(capital)
        bound.device = torch.device(device)
        bound.dtype = dtype
        bound._prepare(market)
        return bound

    def _prepare(self, market: Market) -> None:
        """Per-env tensors of a bound reward (device and dtype are set)."""

    def init_state(self, num_envs: int) -> dict[str, torch.Tensor]:
        """The reward's state in the env: ``reward_var``, the running variance (batch-wide)."""
        import torch

        return {"reward_var": torch.ones((), dtype=self.dtype, device=self.device)}

    def reset(self, state: dict[str, torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """State updates when the envs in ``mask`` start new episodes (batch-wide state stays)."""
        return {}

    def raw(
        self, bar: BarOutcome, state: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(the unscaled reward (N,), state updates) of one bar's outcome."""
        raise NotImplementedError

    def __call__(
        self, bar: BarOutcome, state: dict[str, torch.Tensor], penalty: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(reward (N,), state updates): ``raw * scale - penalty``, optionally normalised."""
        raw, updates = self.raw(bar, state)
        reward = raw * self.scale - penalty
        reward_var = state["reward_var"]
        if self.normalize:
            eta = self.normalize_eta
            reward_var = (1 - eta) * reward_var + eta * (reward * reward).mean()
            reward = reward / reward_var.sqrt().clamp_min(1e-8)
        return reward, {**updates, "reward_var": reward_var}


class PnLReward(Reward):
    """The bar's pnl after costs / capital, each ticker's share weighted by ``weights``.

    ``weights``: one per ticker, relative (rescaled to average 1, so [1, 0] counts the first
    ticker's pnl twice and the second's not at all); None = equal (the equity change).
    """

    def __init__(
        self,
        weights: list[float] | None = None,
        scale: float = 1e4,
        normalize: bool = False,
        normalize_eta: float = 0.001,
        warn_above: float = 1e3,
        warn_below: float = 1e-6,
    ) -> None:
        super().__init__(scale, normalize, normalize_eta, warn_above, warn_below)
        if weights is not None:
            try:
                weights = [float(w) for w in weights]
            except (TypeError, ValueError):
                raise ConfigError(
                    f"env.reward.weights must be a list of numbers, one per ticker; got {weights!r}."
                ) from None
        self.weights = weights
        self._weights: torch.Tensor | None = None

    def _prepare(self, market: Market) -> None:
        import torch

        assets = market.num_assets
        weights = (
            torch.ones(assets, dtype=self.dtype, device=self.device)
            if self.weights is None
            else torch.as_tensor(self.weights, dtype=self.dtype, device=self.device)
        )
        if (
            weights.shape != (assets,)
            or not bool((weights >= 0).all())
            or not float(weights.sum()) > 0
        ):
            raise ConfigError(
                f"env.reward.weights must be {assets} non-negative numbers, one per ticker ({', '.join(market.tickers)}), not all 0; got {self.weights}."
            )
        self._weights = weights / weights.sum() * assets

    def raw(
        self, bar: BarOutcome, state: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return (bar.asset_pnl * self._weights).sum(-1) / self.capital, {}


class LogReturnReward(Reward):
    """log(equity after the bar / equity before it): additive over time, after costs."""

    def __init__(
        self,
        scale: float = 1e4,
        normalize: bool = False,
        normalize_eta: float = 0.001,
        warn_above: float = 1e3,
        warn_below: float = 1e-6,
    ) -> None:
        super().__init__(scale, normalize, normalize_eta, warn_above, warn_below)

    def raw(
        self, bar: BarOutcome, state: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return bar.bar_return.log1p(), {}


class DifferentialSharpeReward(Reward):
    """The differential Sharpe ratio of the bar return (Moody & Saffell), EMA rate
    ``sharpe_eta`` per bar; already in Sharpe-like units, so use ``scale`` 1.

    State per env: ``sharpe_a`` / ``sharpe_b``, EMAs of returns and squared returns (reset to
    0 at each episode start).
    """

    def __init__(
        self,
        sharpe_eta: float = 0.01,
        scale: float = 1e4,
        normalize: bool = False,
        normalize_eta: float = 0.001,
        warn_above: float = 1e3,
        warn_below: float = 1e-6,
    ) -> None:
        super().__init__(scale, normalize, normalize_eta, warn_above, warn_below)
        if not 0 < sharpe_eta <= 1:
            raise ConfigError(f"env.reward.sharpe_eta is {sharpe_eta}; an EMA rate is in (0, 1].")
        self.sharpe_eta = float(sharpe_eta)

    def init_state(self, num_envs: int) -> dict[str, torch.Tensor]:
        import torch

        zero = torch.zeros(int(num_envs), dtype=self.dtype, device=self.device)
        return {"sharpe_a": zero, "sharpe_b": zero.clone(), **super().init_state(num_envs)}

    def reset(self, state: dict[str, torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
        zero = state["sharpe_a"].new_zeros(state["sharpe_a"].shape)
        return {key: zero.where(mask, state[key]) for key in ("sharpe_a", "sharpe_b")}

    def raw(
        self, bar: BarOutcome, state: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raw, a, b = differential_sharpe(
            bar.bar_return, state["sharpe_a"], state["sharpe_b"], self.sharpe_eta
        )
        return raw, {"sharpe_a": a, "sharpe_b": b}


def differential_sharpe(
    r: torch.Tensor, a: torch.Tensor, b: torch.Tensor, eta: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of the differential Sharpe ratio: (reward, new first moment, new second moment).

    ``a`` and ``b`` are EMAs of returns and squared returns; the reward is the derivative of
    the EMA Sharpe ratio with respect to eta, (b * da - a * db / 2) / (b - a^2)^(3/2).
    """
    da = r - a
    db = r * r - b
    var = b - a * a
    safe = var > 1e-12
    d = ((b * da - 0.5 * a * db) / var.clamp_min(1e-12).pow(1.5)).where(safe, r.new_zeros(r.shape))
    return d, a + eta * da, b + eta * db
