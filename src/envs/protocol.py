"""What the rest of the project relies on from an env and its plug-ins, as Protocols.

``modules/`` (agents), the evaluation pass and the export code against these, never against a
concrete class, so an env, action scheme, reward or risk policy of a user's own package works
where ours does. A light module: torch only appears in annotations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

    from datamodules.market import Market
    from envs.accounting import Account, BarOutcome
    from envs.episode import EpisodeConfig
    from envs.frictions import Frictions
    from envs.risk import RiskStep


@runtime_checkable
class ActionSchemeLike(Protocol):
    """Discrete actions -> target weights (signed fraction of equity per asset)."""

    num_actions: int
    names: list[str]

    @property
    def neutral(self) -> int | None:
        """The action that changes nothing (hold, or all flat), if any."""
        ...

    def keys(self, tickers: Sequence[str]) -> list[str]:
        """A key per action saying what it does, comparable across ticker sets."""
        ...

    def table(self) -> dict[int, list[float] | str]:
        """Action index -> target positions (or a description), for metadata."""
        ...

    def targets(self, action: torch.Tensor, current: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Target weights (N, A) of ``action`` (N,) given the current targets and bars ``t``."""
        ...

    def to(self, device: torch.device | str, dtype: torch.dtype) -> ActionSchemeLike:
        """The scheme with its tensors on ``device`` in ``dtype``."""
        ...


@runtime_checkable
class RewardLike(Protocol):
    """The env's reward: ``reward(bar, state, penalty) -> (reward (N,), state updates)``."""

    scale: float  # the unit: multiplies the raw reward (1e4 = basis points of capital)
    normalize: bool  # divided by a running std
    warn_above: float  # the env warns once if its typical |reward| is above this...
    warn_below: float  # ... or below this

    def bind(
        self, market: Market, capital: float, device: torch.device | str, dtype: torch.dtype
    ) -> RewardLike:
        """A copy bound to one env's market, capital (currency), device and dtype."""
        ...

    def init_state(self, num_envs: int) -> dict[str, torch.Tensor]:
        """The reward's entries of the env state."""
        ...

    def reset(self, state: dict[str, torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Updates of its entries when the envs in ``mask`` start new episodes."""
        ...

    def __call__(
        self, bar: BarOutcome, state: dict[str, torch.Tensor], penalty: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...


@runtime_checkable
class RiskPolicyLike(Protocol):
    """Risk rules: limits before a fill, stops after it, each trigger named and counted."""

    @property
    def names(self) -> tuple[str, ...]:
        """Trigger names: the columns of ``info["triggers"]`` and the keys of the counts."""
        ...

    def init_state(
        self, num_envs: int, capital: float, device: torch.device | str, dtype: torch.dtype
    ) -> dict[str, torch.Tensor]: ...

    def reset(
        self, state: dict[str, torch.Tensor], mask: torch.Tensor, capital: float
    ) -> dict[str, torch.Tensor]: ...

    def pre_trade(
        self,
        state: dict[str, torch.Tensor],
        target: torch.Tensor,
        account: Account,
        step: RiskStep,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(limited targets, state updates, flags by name)."""
        ...

    def post_trade(
        self,
        state: dict[str, torch.Tensor],
        account: Account,
        bar: BarOutcome,
        step: RiskStep,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """(state updates, flags by name, penalty (N,) in reward units, terminated (N,))."""
        ...


@runtime_checkable
class TradingEnvLike(Protocol):
    """A batched trading env over bars ``[first, stop)`` of a market (a TorchRL EnvBase).

    Observations are ``observation`` (N, obs_dim) float32; actions a discrete index (N,);
    ``info`` holds :attr:`info_keys` (N, 1) float32 (pnl, cost and penalty in basis points of
    capital, equity in currency, turnover as a multiple of equity, fills as a count) and
    ``triggers`` (N, len(rule_names)) bool.
    """

    market: Market
    tickers: tuple[str, ...]  # the market's
    num_envs: int
    obs_dim: int
    capital: float  # starting equity of every episode, currency
    first: int  # the first decision bar (the split's start, or later for the window)
    stop: int  # one past the split's last bar
    length: int  # bars per episode
    episode: EpisodeConfig
    frictions: Frictions
    actions: ActionSchemeLike
    risk: RiskPolicyLike
    reward: RewardLike
    evaluation: bool  # the evaluation env: float64, uncompiled, the whole split once
    state: dict[str, torch.Tensor]
    info_keys: tuple[str, ...]

    # TorchRL EnvBase (what collectors and rollouts use)
    device: torch.device
    batch_size: torch.Size
    action_spec: Any
    observation_spec: Any
    reward_spec: Any
    done_spec: Any

    @property
    def account(self) -> Account:
        """The accounts of the batch (a view of the state)."""
        ...

    @property
    def rule_names(self) -> tuple[str, ...]:
        """The risk triggers' names (``risk.names``)."""
        ...

    def observation_names(self) -> list[str]: ...

    def action_meanings(self) -> list[str]: ...

    def state_tensors(self) -> dict[str, torch.Tensor]: ...

    def load_state_tensors(self, state: dict[str, torch.Tensor]) -> None: ...

    def transition(
        self, state: dict[str, torch.Tensor], action: torch.Tensor
    ) -> tuple[
        dict[str, torch.Tensor],
        torch.Tensor,
        torch.Tensor,
        dict[str, torch.Tensor],
        torch.Tensor,
        torch.Tensor,
    ]:
        """(new state, observation, reward (N,), info, terminated (N,), truncated (N,))."""
        ...

    def advance(
        self, action: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor, torch.Tensor]: ...

    def risk_counts(self) -> dict[str, int]: ...

    def reset(self, tensordict: Any = None, **kwargs: Any) -> Any: ...

    def step(self, tensordict: Any) -> Any: ...

    def step_and_maybe_reset(self, tensordict: Any) -> tuple[Any, Any]: ...

    def rollout(self, max_steps: int, policy: Any = None, **kwargs: Any) -> Any: ...

    def set_seed(self, seed: int | None = None, *args: Any, **kwargs: Any) -> Any: ...
