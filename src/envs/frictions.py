"""Trading frictions: commission, bid-ask spread, slippage and square-root market impact.

A light module: importing it does not import torch (the cost formula uses tensor methods
only), so configs can be checked before torch is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from datamodules.config import dataclass_from
from datamodules.errors import ConfigError

if TYPE_CHECKING:
    import torch

BPS = 1e-4  # one basis point as a fraction


@dataclass(frozen=True)
class Frictions:
    """Costs of a fill, each off when set to 0.

    Linear costs are in basis points of traded notional (|shares| x fill price):
    ``commission_bps`` (broker fee), ``spread_bps`` (the full quoted bid-ask spread; a fill
    pays half of it), ``slippage_bps`` (extra adverse move between decision and fill).

    ``impact_coef`` is Y in the square-root impact law: a fill of q shares costs
    ``Y * sigma * sqrt(q / adv)`` as a fraction of its notional, where ``sigma`` is the
    trailing std of per-bar log returns and ``adv`` the trailing mean volume per bar
    (both known when the order is decided).

    ``scale`` multiplies every cost above (0 = frictionless, 1 = as configured); curricula
    ramp it (conf/curriculum/costs_ramp.yaml).
    """

    commission_bps: float = 1.0
    spread_bps: float = 2.0
    slippage_bps: float = 1.0
    impact_coef: float = 0.1
    scale: float = 1.0

    def __post_init__(self) -> None:
        for name in ("commission_bps", "spread_bps", "slippage_bps", "impact_coef", "scale"):
            value = getattr(self, name)
            if not value >= 0:
                raise ConfigError(
                    f"env.costs.{name} is {value}; costs must be >= 0 (set 0 to turn it off)."
                )

    @classmethod
    def from_config(
        cls, values: Frictions | Mapping[str, float] | None, key: str = "env.costs"
    ) -> Frictions:
        """The one way to build Frictions from config: ``values`` is a Frictions (returned as
        is), a mapping of the knobs above (unknown keys are a ConfigError naming ``key``), or
        None (the defaults)."""
        return dataclass_from(cls, values, key)

    @property
    def linear_fraction(self) -> float:
        """Cost per unit of traded notional from commission, half spread and slippage."""
        return (self.commission_bps + 0.5 * self.spread_bps + self.slippage_bps) * BPS * self.scale

    def costs(
        self,
        shares_traded: torch.Tensor,
        price: torch.Tensor,
        sigma: torch.Tensor,
        adv: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Cost of each fill in currency, per component, same shape as ``shares_traded``."""
        size = shares_traded.abs()
        notional = size * price * self.scale
        participation = size / adv.clamp_min(1.0)
        return {
            "commission": notional * (self.commission_bps * BPS),
            "spread": notional * (0.5 * self.spread_bps * BPS),
            "slippage": notional * (self.slippage_bps * BPS),
            "impact": notional * (self.impact_coef * sigma * participation.sqrt()),
        }
