"""Batched, tensor-native TorchRL trading environments on the shared accounting engine.

One ``TradingEnv`` class serves a single ticker, a pair and an N-asset portfolio: what
differs is the market's tickers and the plug-ins it is built with, each chosen by
``_target_`` in its config group: the action scheme (:mod:`envs.actions`), the reward
(:mod:`envs.rewards`) and the risk rules (:mod:`envs.risk`). Every env of the batch has
its own episode; all state is in tensors on the env's device, the step has no Python loop
over envs or assets and no host sync, and partial resets go through the ``_reset`` mask.

Timing: the observation after a step describes the close of bar t (features of bars <= t and
the weights held at that close). The action chosen on it is filled at the open of bar t+1
and marked at its close; the reward is that bar's outcome.
"""

from __future__ import annotations

import dataclasses
import numbers
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Literal

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Binary, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from datamodules.errors import ConfigError
from datamodules.market import Market
from envs.accounting import DEFAULT_CAPITAL, Account, fill_and_mark, open_account
from envs.episode import EpisodeConfig
from envs.frictions import Frictions
from envs.protocol import ActionSchemeLike, RewardLike, RiskPolicyLike
from envs.rewards import PnLReward
from envs.risk import RiskRules, RiskStep

__all__ = ["ACCOUNT_FIELDS", "DTYPES", "INFO_KEYS", "EpisodeConfig", "TradingEnv"]

INFO_KEYS = ("pnl", "cost", "penalty", "equity", "turnover", "fills")
ACCOUNT_FIELDS = ("cash", "shares", "target", "equity", "mark")
ENV_KEYS = (*ACCOUNT_FIELDS, "t", "steps", "trigger_counts")  # the env's own state entries
DTYPES = {"float32": torch.float32, "float64": torch.float64}


class _TradingEnvMeta(type(EnvBase)):
    """TorchRL's EnvBase metaclass takes a ``compile`` keyword for its own ``EnvBase.compile``;
    the trading env's ``compile`` (fuse its pure step) is its own, so it is handed on to
    ``__init__`` under another name."""

    def __call__(cls, *args, **kwargs):
        if "compile" in kwargs:
            kwargs["_compile_step"] = kwargs.pop("compile")
        return super().__call__(*args, **kwargs)


class TradingEnv(EnvBase, metaclass=_TradingEnvMeta):
    """A batch of ``num_envs`` trading accounts over bars ``[start, stop)`` of a market.

    Observation (``observation``, float32): ``window`` bars of the market's normalised
    per-ticker features, then each ticker's weight held (signed fraction of equity), then
    calendar features if asked. Action: a discrete index into ``actions`` (the action-scheme
    plug-in). Reward: the ``reward`` plug-in (default :class:`~envs.rewards.PnLReward`, basis
    points of capital); its components, in basis points of capital, and the ``risk`` rules'
    triggers of the step are returned under ``info``.

    ``actions`` is an action scheme, or a callable of the market returning one (the
    ``_partial_`` its config group builds). ``costs``, ``risk`` and ``episode`` take their
    objects or plain mappings (``env.costs``, ``env.risk``, ``env.episode``); None = defaults.
    ``capital``: starting equity of every episode (currency). ``num_envs``: the batch size;
    ``"auto"`` must be resolved by the caller (at most ``auto_envs_cap`` envs), it is an error
    here. ``tickers``: if given, must be the market's. ``dtype``: accounting precision.
    ``compile``: ``torch.compile`` the pure step and reset. ``evaluation``: the evaluation env
    (float64 accounting, not compiled, one episode from the split's first bar to its end,
    whatever the config says).
    """

    batch_locked = True
    info_keys = INFO_KEYS

    def __init__(
        self,
        market: Market,
        span: tuple[int, int],
        *,
        actions: ActionSchemeLike | Callable[[Market], ActionSchemeLike],
        costs: Frictions | Mapping[str, float] | None = None,
        risk: RiskRules | RiskPolicyLike | Mapping[str, float | None] | None = None,
        reward: RewardLike | None = None,
        episode: EpisodeConfig | Mapping[str, int | bool | None] | None = None,
        capital: Annotated[float, "> 0"] = DEFAULT_CAPITAL,
        num_envs: Annotated[int, ">= 1"] | Literal["auto"] = 1,
        auto_envs_cap: Annotated[int, ">= 1"] = 1024,
        tickers: Sequence[str] | None = None,
        dtype: Literal["float32", "float64"] = "float32",
        compile: bool = False,
        device: torch.device | str = "cpu",
        seed: int = 0,
        evaluation: bool = False,
        _compile_step: bool | None = None,  # ``compile``, as the metaclass hands it on
    ) -> None:
        if _compile_step is not None:
            compile = _compile_step
        num_envs = _check_num_envs(num_envs)
        if not _is_count(auto_envs_cap):
            raise ConfigError(
                f"env.auto_envs_cap is {auto_envs_cap}; the most envs num_envs=auto may pick "
                "must be a number >= 1."
            )
        if tickers is not None and tuple(tickers) != tuple(market.tickers):
            raise ConfigError(
                f"env.tickers is [{', '.join(map(str, tickers))}] but the market holds "
                f"[{', '.join(market.tickers)}]; the data group loads env.tickers, so build the "
                "env on that market (or pass tickers=None)."
            )
        if str(dtype) not in DTYPES:
            raise ConfigError(f"env.dtype is '{dtype}'; choose float32 or float64.")
        if not float(capital) > 0:
            raise ConfigError(f"env.capital is {capital}; the starting equity must be > 0.")
        super().__init__(device=device, batch_size=torch.Size([num_envs]))
        self.market = market
        self.evaluation = bool(evaluation)
        self.frictions = Frictions.from_config(costs)
        self.risk = _risk_policy(risk)
        self.episode = EpisodeConfig.from_config(episode)
        if self.evaluation:  # one deterministic pass over the whole split
            self.episode = dataclasses.replace(self.episode, length=None, random_start=False)
        self.capital = float(capital)
        self.num_envs = num_envs
        self.auto_envs_cap = int(auto_envs_cap)
        self.tickers = tuple(market.tickers)
        dtype = torch.float64 if self.evaluation else DTYPES[str(dtype)]
        self.acct_dtype = dtype
        self.compiled = bool(compile) and not self.evaluation
        start, stop = span
        window = int(self.episode.window)
        self.first = max(int(start), window - 1)
        self.stop = int(stop)
        if self.stop - self.first < 2:
            raise ConfigError(
                f"The env's split holds bars {start}..{stop}: too few for one step with env.episode.window={window}."
            )
        longest = self.stop - 1 - self.first
        self.length = (
            longest if self.episode.length is None else min(int(self.episode.length), longest)
        )
        if self.length < 1:
            raise ConfigError("env.episode.length must be >= 1 bar.")
        dev = torch.device(device)
        as_t = lambda a, dt=dtype: torch.as_tensor(np.ascontiguousarray(a), dtype=dt, device=dev)  # noqa: E731
        self._open = as_t(market.open)
        self._close = as_t(market.close)
        self._sigma = as_t(market.sigma)
        self._adv = as_t(market.adv)
        feats = market.features.reshape(market.num_bars, -1)
        if self.episode.calendar:
            self._calendar = as_t(market.time_features, torch.float32)
        else:
            self._calendar = torch.zeros((market.num_bars, 0), device=dev)
        self._features = as_t(feats, torch.float32)
        self._session = torch.as_tensor(market.session, device=dev)
        minutes = (market.timestamps - market.timestamps.astype("datetime64[D]")) / np.timedelta64(
            1, "m"
        )
        days = market.timestamps.astype("datetime64[D]").astype(np.int64)
        self._hour = torch.as_tensor(days * 24 + (minutes // 60).astype(np.int64), device=dev)
        self._window_offsets = torch.arange(window - 1, -1, -1, device=dev)
        self.actions = _action_scheme(actions, market).to(dev, dtype)
        self.reward = _reward(reward).bind(market, self.capital, dev, dtype)
        self._rule_names = tuple(self.risk.names)
        self.obs_dim = window * feats.shape[1] + market.num_assets + self._calendar.shape[1]
        self._make_specs()
        self._set_seed(seed)
        self._init_state()
        self._step_fn = self.transition
        self._reset_fn = self.reset_state
        if self.compiled:  # fuse the pure step and reset into a few kernels
            self._step_fn = torch.compile(self.transition, dynamic=False)
            self._reset_fn = torch.compile(self.reset_state, dynamic=False)
        self._steps_seen = 0
        self._magnitude = torch.zeros((), device=dev, dtype=dtype)
        self._warned = False

    @property
    def rule_names(self) -> tuple[str, ...]:
        """The risk triggers' names: the columns of ``info["triggers"]`` and the counts' keys."""
        return self._rule_names

    # ------------------------------------------------------------------ specs and state
    def _make_specs(self) -> None:
        n = self.batch_size
        info = Composite(
            {
                key: Unbounded(shape=(*n, 1), dtype=torch.float32, device=self.device)
                for key in INFO_KEYS
            },
            triggers=Binary(
                n=len(self._rule_names),
                shape=(*n, len(self._rule_names)),
                dtype=torch.bool,
                device=self.device,
            ),
            shape=n,
            device=self.device,
        )
        self.observation_spec = Composite(
            observation=Unbounded(
                shape=(*n, self.obs_dim), dtype=torch.float32, device=self.device
            ),
            info=info,
            shape=n,
            device=self.device,
        )
        self.action_spec = Categorical(
            n=self.actions.num_actions, shape=n, dtype=torch.long, device=self.device
        )
        self.reward_spec = Unbounded(shape=(*n, 1), dtype=torch.float32, device=self.device)
        self.done_spec = Composite(
            done=Categorical(n=2, shape=(*n, 1), dtype=torch.bool, device=self.device),
            terminated=Categorical(n=2, shape=(*n, 1), dtype=torch.bool, device=self.device),
            truncated=Categorical(n=2, shape=(*n, 1), dtype=torch.bool, device=self.device),
            shape=n,
            device=self.device,
        )

    def _init_state(self) -> None:
        n, dev, dt = self.num_envs, self.device, self.acct_dtype
        acct = open_account(self.capital, (n,), self.market.num_assets, dev, dt)
        risk_state = self.risk.init_state(n, self.capital, dev, dt)
        reward_state = self.reward.init_state(n)
        clash = (set(risk_state) & set(reward_state)) | (
            set(ENV_KEYS) & {*risk_state, *reward_state}
        )
        if clash:
            raise ValueError(
                f"The env's state keys {sorted(clash)} are claimed twice (by the env, the risk "
                f"plug-in {type(self.risk).__name__} or the reward {type(self.reward).__name__}); "
                "give the plug-in's state entries their own names."
            )
        self.state: dict[str, torch.Tensor] = {
            "cash": acct.cash,
            "shares": acct.shares,
            "target": acct.target,
            "equity": acct.equity,
            "mark": acct.mark,
            "t": torch.full((n,), self.first, dtype=torch.long, device=dev),
            "steps": torch.zeros(n, dtype=torch.long, device=dev),
            **risk_state,
            **reward_state,
            "trigger_counts": torch.zeros(
                len(self._rule_names), dtype=torch.long, device=dev
            ),  # summed over envs
        }

    @property
    def account(self) -> Account:
        """The accounts of the batch (a view of the state)."""
        return Account(**{k: self.state[k] for k in ACCOUNT_FIELDS})

    def _set_seed(self, seed: int | None) -> None:
        self.rng = torch.Generator(device=self.device)
        self.rng.manual_seed(int(seed or 0))

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Every piece of episode state (and the RNG), to checkpoint and restore an env exactly."""
        return {**{k: v.clone() for k, v in self.state.items()}, "rng": self.rng.get_state()}

    def load_state_tensors(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_tensors` returned."""
        missing = sorted(set(self.state) - set(state))
        if missing:
            raise ValueError(
                f"The saved env state lacks {', '.join(missing)}: it comes from an env with other "
                "plug-ins (reward or risk rules) than this one."
            )
        self.rng.set_state(state["rng"])
        self.state = {k: v.to(self.device) for k, v in state.items() if k != "rng"}

    # ------------------------------------------------------------------ observation
    def observation_names(self) -> list[str]:
        """A name per observation column, in order: ``TICKER.feature@t-k`` for the window
        (oldest bar first), then ``held.TICKER``, then ``calendar.NAME``."""
        market = self.market
        window = int(self.episode.window)
        names = [
            f"{ticker}.{feature}@t-{lag}"
            for lag in range(window - 1, -1, -1)
            for ticker in market.tickers
            for feature in market.feature_names
        ]
        names += [f"held.{ticker}" for ticker in market.tickers]
        if self._calendar.shape[1]:
            names += [f"calendar.{name}" for name in market.time_feature_names]
        if len(names) != self.obs_dim:
            raise RuntimeError(f"observation names ({len(names)}) != obs_dim ({self.obs_dim})")
        return names

    def action_meanings(self) -> list[str]:
        """What each action does, by ticker (see :meth:`ActionScheme.keys`)."""
        return self.actions.keys(self.market.tickers)

    def _observe(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        t = state["t"]
        rows = t.unsqueeze(-1) - self._window_offsets  # (N, W)
        feats = self._features[rows].flatten(1)
        held = state["shares"] * state["mark"] / state["equity"].unsqueeze(-1)
        return torch.cat([feats, held.to(torch.float32), self._calendar[t]], dim=-1)

    # ------------------------------------------------------------------ reset
    def _reset(self, tensordict: TensorDictBase | None, **kwargs) -> TensorDictBase:
        mask = tensordict.get("_reset", None) if tensordict is not None else None
        if mask is not None:
            mask = mask.reshape(self.num_envs)
        obs = self._reset_envs(mask)
        zeros = torch.zeros((self.num_envs, 1), dtype=torch.bool, device=self.device)
        return TensorDict._new_unsafe(
            {
                "observation": obs,
                "info": self._zero_info(),
                "done": zeros,
                "terminated": zeros.clone(),
                "truncated": zeros.clone(),
            },
            batch_size=self.batch_size,
            device=self.device,
        )

    def _reset_envs(self, mask: torch.Tensor | None) -> torch.Tensor:
        n, dev = self.num_envs, self.device
        if mask is None:
            mask = torch.ones(n, dtype=torch.bool, device=dev)
        span = self.stop - 1 - self.length - self.first  # latest start that fits a full episode
        if self.episode.random_start and span > 0:
            start = self.first + torch.randint(0, span + 1, (n,), generator=self.rng, device=dev)
        else:
            start = torch.full((n,), self.first, dtype=torch.long, device=dev)
        self.state, obs = self._reset_fn(self.state, mask, start)
        return obs

    def reset_state(
        self, state: dict[str, torch.Tensor], mask: torch.Tensor, start: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """A pure function: (``state`` with the envs in ``mask`` restarted at bars ``start``,
        the observation of every env)."""
        n = self.num_envs
        fresh = open_account(
            self.capital, (n,), self.market.num_assets, self.device, self.acct_dtype
        )
        replace = {
            **{k: getattr(fresh, k) for k in ACCOUNT_FIELDS},
            "t": start,
            "steps": torch.zeros_like(state["steps"]),
        }
        new = dict(state)
        for key, value in replace.items():
            m = mask.reshape(n, *([1] * (value.dim() - 1)))
            new[key] = torch.where(m, value, state[key])
        new.update(self.risk.reset(state, mask, self.capital))
        new.update(self.reward.reset(state, mask))
        return new, self._observe(new)

    def _zero_info(self) -> TensorDict:
        n = self.batch_size
        data = {key: torch.zeros((*n, 1), device=self.device) for key in INFO_KEYS}
        data["equity"] = self.state["equity"].to(torch.float32).unsqueeze(-1)
        data["triggers"] = torch.zeros(
            (*n, len(self._rule_names)), dtype=torch.bool, device=self.device
        )
        return TensorDict(data, batch_size=n, device=self.device)

    # ------------------------------------------------------------------ step
    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = tensordict.get("action").reshape(self.num_envs).long()
        self.state, obs, reward, info, terminated, truncated = self._step_fn(self.state, action)
        self._check_reward_scale(reward)
        # Shapes and devices are right by construction: skip TensorDict's per-value checks.
        return TensorDict._new_unsafe(
            {
                "observation": obs,
                "reward": reward.unsqueeze(-1),
                "info": info,
                "done": (terminated | truncated).unsqueeze(-1),
                "terminated": terminated.unsqueeze(-1),
                "truncated": truncated.unsqueeze(-1),
            },
            batch_size=self.batch_size,
            device=self.device,
        )

    def advance(
        self, action: torch.Tensor
    ) -> tuple[torch.Tensor, dict, torch.Tensor, torch.Tensor]:
        """Step every env with ``action`` (N,): (reward, info, terminated, truncated)."""
        self.state, _, reward, info, terminated, truncated = self._step_fn(self.state, action)
        return reward, info, terminated, truncated

    def transition(self, state: dict[str, torch.Tensor], action: torch.Tensor):
        """Decide at the close of bar t, fill at the open of t+1, mark at its close.

        A pure function of (state, action): returns (new state, observation, reward (N,),
        info, terminated (N,), truncated (N,)). No host sync and no Python branch on data,
        so ``torch.compile`` fuses it (``env.compile=true``).
        """
        acct = Account(**{k: state[k] for k in ACCOUNT_FIELDS})
        t = state["t"]
        # Stepping an env past its truncation without a reset stays on the split's last bar
        # (and keeps reporting truncated), so no read leaves the data.
        nxt = (t + 1).clamp(max=self.stop - 1)
        step = RiskStep(
            t=t,
            fill=nxt,
            new_session=self._session[nxt] != self._session[t],
            new_hour=self._hour[nxt] != self._hour[t],
        )

        # Pre-trade: the action's targets, then the risk rules' limits (position limits, a
        # halt, turnover caps).
        target = self.actions.targets(action, acct.target, t)
        target, pre_state, flags = self.risk.pre_trade(state, target, acct, step)

        # The fill and the mark: the one accounting engine.
        acct, bar = fill_and_mark(
            acct,
            target,
            self._open[nxt],
            self._close[nxt],
            self._sigma[t],
            self._adv[t],
            self.frictions,
        )

        # Post-trade stops, then the reward (its components in basis points of capital).
        post_state, post_flags, penalty, terminated = self.risk.post_trade(
            {**state, **pre_state}, acct, bar, step
        )
        flags = {**flags, **post_flags}
        missing = [name for name in self._rule_names if name not in flags]
        if missing:
            raise ValueError(
                f"The risk plug-in {type(self.risk).__name__} names the rule(s) {missing} but "
                "its pre_trade/post_trade return no flag for them."
            )
        fired = torch.stack([flags[name] for name in self._rule_names], dim=-1)
        steps = state["steps"] + 1
        truncated = ((steps >= self.length) | (nxt + 1 >= self.stop)) & ~terminated
        reward, reward_state = self.reward(bar, state, penalty)
        bps = 1e4 / self.capital
        new_state = {
            **state,
            **{k: getattr(acct, k) for k in ACCOUNT_FIELDS},
            "t": nxt,
            "steps": steps,
            **pre_state,
            **post_state,
            **reward_state,
            "trigger_counts": state["trigger_counts"] + fired.sum(0),
        }
        info = {
            "pnl": ((bar.pnl + bar.total_cost) * bps).to(torch.float32).unsqueeze(-1),
            "cost": (bar.total_cost * bps).to(torch.float32).unsqueeze(-1),
            "penalty": penalty.to(torch.float32).unsqueeze(-1),
            "equity": acct.equity.to(torch.float32).unsqueeze(-1),
            "turnover": bar.turnover.to(torch.float32).unsqueeze(-1),
            "fills": bar.fills.to(torch.float32).unsqueeze(-1),
            "triggers": fired,
        }
        return (
            new_state,
            self._observe(new_state),
            reward.to(torch.float32),
            info,
            terminated,
            truncated,
        )

    def _check_reward_scale(self, reward: torch.Tensor) -> None:
        """Warn once if the typical |reward| of the first 16 steps is far outside a sane range."""
        if self._warned or self._steps_seen > 16:
            return
        self._steps_seen += 1
        self._magnitude = self._magnitude + reward.abs().mean().to(self._magnitude.dtype)
        if self._steps_seen == 16:
            typical = float(self._magnitude) / 16
            cfg = self.reward
            if typical > cfg.warn_above or (0 < typical < cfg.warn_below):
                warnings.warn(
                    f"The env's typical |reward| over its first 16 steps is {typical:.3g}, outside "
                    f"[{cfg.warn_below:g}, {cfg.warn_above:g}]. Value losses blow up with rewards this "
                    f"size: change env.reward.scale (now {cfg.scale:g}) or set env.reward.normalize=true.",
                    stacklevel=3,
                )
                self._warned = True

    def risk_counts(self) -> dict[str, int]:
        """How often each rule fired since the env was built, summed over envs (syncs)."""
        totals = self.state["trigger_counts"].tolist()
        return dict(zip(self._rule_names, totals, strict=True))


# ---------------------------------------------------------------------- plug-in arguments
def _check_num_envs(num_envs: int | str) -> int:
    if isinstance(num_envs, str):
        raise ConfigError(
            f"env.num_envs is '{num_envs}': the run resolves auto to a number of envs (sized to "
            "the device's free memory, at most env.auto_envs_cap) before it builds the env; "
            "TradingEnv takes that number."
        )
    if not _is_count(num_envs):
        raise ConfigError(f"env.num_envs is {num_envs}; use a number of envs >= 1 (or auto).")
    return int(num_envs)


def _is_count(value: object) -> bool:
    """A whole number >= 1 (a numpy integer too; not a bool)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def _action_scheme(actions: object, market: Market) -> ActionSchemeLike:
    """The scheme itself, or what a callable of the market (a ``_partial_``, a class) returns."""
    if isinstance(actions, type) or not hasattr(actions, "targets"):
        if isinstance(actions, Mapping):
            raise ConfigError(
                "env.actions is a plain mapping; choose an action scheme by its config group "
                "(env/actions=targets|sizing|factors) or build its `_target_` with "
                "hydra.utils.instantiate."
            )
        if not callable(actions):
            raise ConfigError(
                f"env.actions must be an action scheme or a callable of the market; got {actions!r}."
            )
        actions = actions(market)
    if not isinstance(actions, ActionSchemeLike):
        raise ConfigError(
            f"env.actions built {type(actions).__name__}, which is not an action scheme (it needs "
            "num_actions, names, neutral, keys, table, targets and to; see envs.actions.ActionScheme)."
        )
    return actions


def _risk_policy(risk: object) -> RiskPolicyLike:
    if risk is None:
        return RiskRules()
    if isinstance(risk, Mapping):
        if "_target_" in risk:
            raise ConfigError(
                "env.risk has a `_target_`: build it with hydra.utils.instantiate (as the run "
                "does with the env config) before passing it to TradingEnv."
            )
        return RiskRules.from_config(risk)
    if not isinstance(risk, RiskPolicyLike):
        raise ConfigError(
            f"env.risk is a {type(risk).__name__}, not risk rules (it needs names, init_state, "
            "reset, pre_trade and post_trade; see envs.risk.RiskRules)."
        )
    return risk


def _reward(reward: object) -> RewardLike:
    if reward is None:
        return PnLReward()
    if isinstance(reward, Mapping):
        raise ConfigError(
            "env.reward is a plain mapping; choose a reward by its config group "
            "(env/reward=pnl|log_return|differential_sharpe) or build its `_target_` with "
            "hydra.utils.instantiate."
        )
    if not isinstance(reward, RewardLike):
        raise ConfigError(
            f"env.reward is a {type(reward).__name__}, not a reward (it needs scale, normalize, "
            "warn_above, warn_below, bind, init_state, reset and __call__; see envs.rewards.Reward)."
        )
    return reward
