"""Risk rules of the trading envs: limits applied before a fill, stops checked after it.

Each rule is off when its limit is null (stored as +inf, so the step has no branch on it),
and each trigger is counted per env for logging (see ``RULES`` for the order).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from datamodules.errors import ConfigError

RULES = (
    "daily_drawdown",  # equity fell more than max_daily_drawdown below the session's start: flat until the next session
    "turnover_hour",  # a trade would exceed turnover_cap_hour: it is not made
    "turnover_session",  # a trade would exceed turnover_cap_session: it is not made
    "loss_cut",  # episode return below -loss_cut: the episode ends
    "profit_lock",  # episode return above profit_lock: the episode ends
    "gross_exposure",  # sum of |weights| above max_gross_exposure: scaled down
    "position_limit",  # a |weight| above max_position: clipped
)


LIMITS = (  # the RiskRules fields that are limits (None = off, +inf inside the step)
    "max_daily_drawdown",
    "turnover_cap_hour",
    "turnover_cap_session",
    "loss_cut",
    "profit_lock",
    "max_gross_exposure",
    "max_position",
)


@dataclass(frozen=True)
class RiskRules:
    """Limits, each a fraction (of equity, or of the session's / episode's starting equity).

    ``max_daily_drawdown``: 0.025 = flatten for the rest of the session after a 2.5% fall from
    the session's starting equity, and add ``drawdown_penalty`` (reward units, subtracted).
    ``turnover_cap_hour`` / ``turnover_cap_session``: traded notional per clock hour / per
    session as a multiple of equity (3.0 = 3x). ``loss_cut`` / ``profit_lock``: episode return
    that ends the episode. ``max_gross_exposure``: sum of |weights|; ``max_position``: |weight|
    per asset. None = off.
    """

    max_daily_drawdown: float | None = None
    drawdown_penalty: float = 0.0
    turnover_cap_hour: float | None = None
    turnover_cap_session: float | None = None
    loss_cut: float | None = None
    profit_lock: float | None = None
    max_gross_exposure: float | None = None
    max_position: float | None = None

    def __post_init__(self) -> None:
        for name in LIMITS:
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(
                    f"env.risk.{name} is {value}; use a positive number, or null to turn it off."
                )
        if self.drawdown_penalty < 0:
            raise ConfigError(
                "env.risk.drawdown_penalty must be >= 0 (it is subtracted from the reward)."
            )

    def limit(self, name: str) -> float:
        """The limit as a float, +inf when the rule is off."""
        value = getattr(self, name)
        return math.inf if value is None else float(value)


def apply_position_limits(
    target: torch.Tensor, max_position: float, max_gross: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clip each weight to +-max_position, then scale the book down to max_gross.

    Returns the limited targets and the (N,) bool flags of the position and gross rules.
    """
    clipped = target.clamp(-max_position, max_position)
    position_hit = (clipped != target).any(-1)
    gross = clipped.abs().sum(-1)
    scale = (max_gross / gross.clamp_min(1e-12)).clamp(max=1.0)
    gross_hit = scale < 1.0
    return clipped * scale.unsqueeze(-1), position_hit, gross_hit
