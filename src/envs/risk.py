"""Risk rules of the trading envs: limits applied before a fill, stops checked after it.

:class:`RiskRules` is both the config of the rules (``env.risk``, built by ``_target_``) and the
risk plug-in the env calls every step. Each rule is off when its limit is null (+inf inside
the step, so the step has no branch on it), and each trigger is counted per env for logging
(``RiskRules.names`` gives the order; ``RULES`` for the default rules).

A light module: importing it does not import torch. The hooks use tensor methods only and
never sync with the host, so the env step that calls them stays ``torch.compile``-able.

Writing a rule: subclass :class:`RiskRules` (a frozen dataclass; new knobs are new fields),
add the rule's name to :attr:`~RiskRules.names`, keep any per-env state of the rule in
:meth:`~RiskRules.init_state` / :meth:`~RiskRules.reset`, and return its flag (a (N,) bool
tensor) from :meth:`~RiskRules.pre_trade` (to change the targets) or
:meth:`~RiskRules.post_trade` (to end episodes or add a penalty), calling ``super()`` for the
rules above.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from datamodules.config import dataclass_from
from datamodules.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from envs.accounting import Account, BarOutcome

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

STATE_KEYS = (  # the env-state keys of the default rules, per env
    "session_equity",  # equity at the start of the session (currency)
    "episode_equity",  # equity at the start of the episode (currency)
    "halted",  # flat until the next session after a daily drawdown
    "turnover_hour",  # traded notional so far in this clock hour, multiple of equity
    "turnover_session",  # ... and in this session
)


@dataclass
class RiskStep:
    """What the env tells the rules about one step (tensors of batch N on the env's device)."""

    t: torch.Tensor  # (N,) long: the decision bar
    fill: torch.Tensor  # (N,) long: the bar the order is filled at (open) and marked at (close)
    new_session: torch.Tensor  # (N,) bool: the fill bar opens a new session
    new_hour: torch.Tensor  # (N,) bool: the fill bar opens a new clock hour


@dataclass(frozen=True)
class RiskRules:
    """Limits, each a fraction (of equity, or of the session's / episode's starting equity).

    ``max_daily_drawdown``: 0.025 = flatten for the rest of the session after a 2.5% fall from
    the session's starting equity, and add ``drawdown_penalty`` (reward units, subtracted).
    ``turnover_cap_hour`` / ``turnover_cap_session``: traded notional per clock hour / per
    session as a multiple of equity (3.0 = 3x). ``loss_cut`` / ``profit_lock``: episode return
    that ends the episode. ``max_gross_exposure``: sum of |weights|; ``max_position``: |weight|
    per asset. None = off.

    As the env's risk plug-in: :attr:`names` are the trigger names (the columns of
    ``info["triggers"]``), :meth:`init_state` / :meth:`reset` own the rules' per-env state,
    :meth:`pre_trade` limits the targets before the fill, :meth:`post_trade` checks the stops
    after it. Hooks take the env's whole state and return updates of the rules' own keys.
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
        if not self.drawdown_penalty >= 0:
            raise ConfigError(
                f"env.risk.drawdown_penalty is {self.drawdown_penalty}; it must be >= 0 "
                "(it is subtracted from the reward)."
            )

    @classmethod
    def from_config(
        cls, values: RiskRules | Mapping[str, float | None] | None, key: str = "env.risk"
    ) -> RiskRules:
        """A RiskRules (returned as is), a mapping of its limits (unknown keys are a
        ConfigError naming ``key``) or None (every rule off)."""
        return dataclass_from(cls, values, key)

    def limit(self, name: str) -> float:
        """The limit as a float, +inf when the rule is off."""
        value = getattr(self, name)
        return math.inf if value is None else float(value)

    # ------------------------------------------------------------------ the plug-in hooks
    @property
    def names(self) -> tuple[str, ...]:
        """The trigger names, in the order of ``info["triggers"]`` and of the counts."""
        return RULES

    def init_state(
        self, num_envs: int, capital: float, device: torch.device | str, dtype: torch.dtype
    ) -> dict[str, torch.Tensor]:
        """The rules' state of ``num_envs`` fresh episodes holding ``capital`` (currency)."""
        import torch  # only when an env is built: the module itself stays light

        n = int(num_envs)
        return {
            "session_equity": torch.full((n,), float(capital), dtype=dtype, device=device),
            "episode_equity": torch.full((n,), float(capital), dtype=dtype, device=device),
            "halted": torch.zeros(n, dtype=torch.bool, device=device),
            "turnover_hour": torch.zeros(n, dtype=dtype, device=device),
            "turnover_session": torch.zeros(n, dtype=dtype, device=device),
        }

    def reset(
        self, state: dict[str, torch.Tensor], mask: torch.Tensor, capital: float
    ) -> dict[str, torch.Tensor]:
        """The rules' state with the envs in ``mask`` (N,) restarted from ``capital``."""
        equity = state["session_equity"]
        cap = equity.new_full(equity.shape, float(capital))
        zero = state["turnover_hour"].new_zeros(state["turnover_hour"].shape)
        fresh = {
            "session_equity": cap,
            "episode_equity": cap,
            "halted": state["halted"].new_zeros(state["halted"].shape),
            "turnover_hour": zero,
            "turnover_session": zero,
        }
        return {key: value.where(mask, state[key]) for key, value in fresh.items()}

    def pre_trade(
        self,
        state: dict[str, torch.Tensor],
        target: torch.Tensor,
        account: Account,
        step: RiskStep,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Before the fill: (limited target weights (N, A), state updates, flags by name).

        Session and hour windows that start with the fill bar reset first; then the position
        limits, the halt after a daily drawdown and the turnover caps (a trade over a cap is
        not made: the targets stay the current ones).
        """
        session_turnover = state["turnover_session"]
        hour_turnover = state["turnover_hour"]
        session_equity = account.equity.where(step.new_session, state["session_equity"])
        halted = state["halted"] & ~step.new_session
        turn_session = session_turnover.new_zeros(session_turnover.shape).where(
            step.new_session, session_turnover
        )
        turn_hour = hour_turnover.new_zeros(hour_turnover.shape).where(step.new_hour, hour_turnover)

        target, position_hit, gross_hit = apply_position_limits(
            target, self.limit("max_position"), self.limit("max_gross_exposure")
        )
        # Both flags come from the action's targets alone: in a fused step they would get a loop
        # of their own (envs.fused.anchored; imported here: importing this module imports no torch).
        from envs.fused import anchored

        position_hit, gross_hit = anchored(position_hit, step.t), anchored(gross_hit, step.t)
        target = target.new_zeros(target.shape).where(halted.unsqueeze(-1), target)
        held = account.shares * account.mark / account.equity.unsqueeze(-1)
        moving = target != account.target
        proposed = ((target - held).abs() * moving).sum(-1)
        trading = (proposed > 0) & ~halted
        over_hour = trading & (turn_hour + proposed > self.limit("turnover_cap_hour"))
        over_session = trading & (turn_session + proposed > self.limit("turnover_cap_session"))
        blocked = over_hour | over_session
        target = account.target.where(blocked.unsqueeze(-1), target)
        updates = {
            "session_equity": session_equity,
            "halted": halted,
            "turnover_hour": turn_hour,
            "turnover_session": turn_session,
        }
        flags = {
            "turnover_hour": over_hour,
            "turnover_session": over_session,
            "gross_exposure": gross_hit,
            "position_limit": position_hit,
        }
        return target, updates, flags

    def post_trade(
        self,
        state: dict[str, torch.Tensor],
        account: Account,
        bar: BarOutcome,
        step: RiskStep,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """After the fill and mark: (state updates, flags by name, penalty (N,) in reward
        units, terminated (N,) bool). ``state`` holds :meth:`pre_trade`'s updates."""
        halted = state["halted"]
        drawdown = account.equity / state["session_equity"] - 1.0
        dd_hit = (drawdown < -self.limit("max_daily_drawdown")) & ~halted
        episode_return = account.equity / state["episode_equity"] - 1.0
        loss_hit = episode_return < -self.limit("loss_cut")
        profit_hit = episode_return > self.limit("profit_lock")
        penalty = dd_hit.to(account.equity.dtype) * self.drawdown_penalty
        updates = {
            "halted": halted | dd_hit,
            "turnover_hour": state["turnover_hour"] + bar.turnover,
            "turnover_session": state["turnover_session"] + bar.turnover,
        }
        flags = {"daily_drawdown": dd_hit, "loss_cut": loss_hit, "profit_lock": profit_hit}
        return updates, flags, penalty, loss_hit | profit_hit


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
