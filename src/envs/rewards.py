"""Rewards of the trading envs, in a configured unit, with their components for logging."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from datamodules.errors import ConfigError

REWARD_KINDS = ("pnl", "log_return", "differential_sharpe")


@dataclass(frozen=True)
class RewardConfig:
    """``kind``: ``pnl`` (equity change after costs / capital, ticker-weighted), ``log_return``
    (log of the equity ratio) or ``differential_sharpe`` (Moody & Saffell, EMA rate
    ``sharpe_eta`` per bar). ``scale`` multiplies it: 1e4 turns fractions into basis points.
    ``normalize`` divides by a running std of rewards (EMA rate ``normalize_eta``).
    ``warn_above`` / ``warn_below``: the env warns once if the typical |reward| of its first
    steps is outside this range (a reward in the millions breaks value learning).
    """

    kind: str = "pnl"
    scale: float = 1e4
    normalize: bool = False
    normalize_eta: float = 0.001
    sharpe_eta: float = 0.01
    warn_above: float = 1e3
    warn_below: float = 1e-6

    def __post_init__(self) -> None:
        if self.kind not in REWARD_KINDS:
            raise ConfigError(
                f"env.reward.kind is '{self.kind}'; choose one of {', '.join(REWARD_KINDS)}."
            )
        if not self.scale > 0:
            raise ConfigError(f"env.reward.scale is {self.scale}; it must be > 0.")


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
    d = torch.where(
        safe, (b * da - 0.5 * a * db) / var.clamp_min(1e-12).pow(1.5), torch.zeros_like(r)
    )
    return d, a + eta * da, b + eta * db
