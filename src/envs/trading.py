"""Batched, tensor-native TorchRL trading environments on the shared accounting engine.

One ``TradingEnv`` class serves a single ticker, a pair and an N-asset portfolio: what
differs is the market's tickers and the :mod:`envs.actions` map. Every env of the batch has
its own episode; all state is in tensors on the env's device, the step has no Python loop
over envs or assets and no host sync, and partial resets go through the ``_reset`` mask.

Timing: the observation after a step describes the close of bar t (features of bars <= t and
the weights held at that close). The action chosen on it is filled at the open of bar t+1
and marked at its close; the reward is that bar's outcome.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Binary, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from datamodules.errors import ConfigError
from datamodules.market import Market
from envs.accounting import Account, fill_and_mark, open_account
from envs.actions import ActionMap
from envs.frictions import Frictions
from envs.rewards import RewardConfig, differential_sharpe
from envs.risk import LIMITS, RULES, RiskRules, apply_position_limits

INFO_KEYS = ("pnl", "cost", "penalty", "equity", "turnover", "fills")
ACCOUNT_FIELDS = ("cash", "shares", "target", "equity", "mark")


@dataclass(frozen=True)
class EpisodeConfig:
    """``length``: bars per episode (None = to the end of the split); ``random_start``: each
    episode starts at a random bar of the split (else at its first bar); ``window``: bars of
    features in an observation; ``calendar``: add time-of-day/day-of-week features."""

    length: int | None = 390
    random_start: bool = True
    window: int = 1
    calendar: bool = False

    def __post_init__(self) -> None:
        if self.length is not None and int(self.length) < 1:
            raise ConfigError(
                f"env.episode.length is {self.length}; use a number of bars >= 1, or null for the whole split."
            )
        if int(self.window) < 1:
            raise ConfigError(
                f"env.episode.window is {self.window}; an observation needs at least 1 bar of features."
            )


class TradingEnv(EnvBase):
    """A batch of ``num_envs`` trading accounts over bars ``[start, stop)`` of a market.

    Observation (``observation``, float32): ``window`` bars of the market's normalised
    per-ticker features, then each ticker's weight held (signed fraction of equity), then
    calendar features if asked. Action: a discrete index into ``actions``. Reward: see
    :class:`RewardConfig`; its components, in basis points of capital, and the risk-rule
    triggers of the step are returned under ``info``.
    """

    batch_locked = True

    def __init__(
        self,
        market: Market,
        span: tuple[int, int],
        actions: ActionMap,
        frictions: Frictions,
        risk: RiskRules | None = None,
        reward: RewardConfig | None = None,
        episode: EpisodeConfig | None = None,
        capital: float = 100_000.0,
        num_envs: int = 1,
        reward_weights: list[float] | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
        compile_step: bool = False,
    ) -> None:
        super().__init__(device=device, batch_size=torch.Size([num_envs]))
        self.market = market
        self.risk = risk or RiskRules()
        self.reward_cfg = reward or RewardConfig()
        self.episode = episode or EpisodeConfig()
        self.frictions = frictions
        self.capital = float(capital)
        self.num_envs = int(num_envs)
        self.acct_dtype = dtype
        start, stop = span
        window = int(self.episode.window)
        self.first = max(int(start), window - 1)
        self.stop = int(stop)
        if self.stop - self.first < 2:
            raise ConfigError(
                f"The env's split holds bars {start}..{stop}: too few for one step with env.observation.window={window}."
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
        self.actions = actions.to(dev, dtype)
        weights = (
            torch.ones(market.num_assets, dtype=dtype, device=dev)
            if reward_weights is None
            else torch.as_tensor(reward_weights, dtype=dtype, device=dev)
        )
        if (
            weights.shape != (market.num_assets,)
            or not bool((weights >= 0).all())
            or not float(weights.sum()) > 0
        ):
            raise ConfigError(
                f"env.reward.weights must be {market.num_assets} non-negative numbers, one per ticker ({', '.join(market.tickers)}), not all 0; got {reward_weights}."
            )
        self._reward_weights = weights / weights.sum() * market.num_assets
        self._limits = {name: self.risk.limit(name) for name in LIMITS}
        self.obs_dim = window * feats.shape[1] + market.num_assets + self._calendar.shape[1]
        self._make_specs()
        self._set_seed(seed)
        self._init_state()
        self._step_fn = self.transition
        self._reset_fn = self.reset_state
        if compile_step:  # fuse the pure step and reset into a few kernels
            self._step_fn = torch.compile(self.transition, dynamic=False)
            self._reset_fn = torch.compile(self.reset_state, dynamic=False)
        self._steps_seen = 0
        self._magnitude = torch.zeros((), device=dev, dtype=dtype)
        self._warned = False

    # ------------------------------------------------------------------ specs and state
    def _make_specs(self) -> None:
        n = self.batch_size
        info = Composite(
            {
                key: Unbounded(shape=(*n, 1), dtype=torch.float32, device=self.device)
                for key in INFO_KEYS
            },
            triggers=Binary(
                n=len(RULES), shape=(*n, len(RULES)), dtype=torch.bool, device=self.device
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
        self.state: dict[str, torch.Tensor] = {
            "cash": acct.cash,
            "shares": acct.shares,
            "target": acct.target,
            "equity": acct.equity,
            "mark": acct.mark,
            "t": torch.full((n,), self.first, dtype=torch.long, device=dev),
            "steps": torch.zeros(n, dtype=torch.long, device=dev),
            "session_equity": torch.full((n,), self.capital, dtype=dt, device=dev),
            "episode_equity": torch.full((n,), self.capital, dtype=dt, device=dev),
            "halted": torch.zeros(n, dtype=torch.bool, device=dev),
            "turnover_hour": torch.zeros(n, dtype=dt, device=dev),
            "turnover_session": torch.zeros(n, dtype=dt, device=dev),
            "sharpe_a": torch.zeros(n, dtype=dt, device=dev),
            "sharpe_b": torch.zeros(n, dtype=dt, device=dev),
            "reward_var": torch.ones((), dtype=dt, device=dev),
            "trigger_counts": torch.zeros(
                len(RULES), dtype=torch.long, device=dev
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
        """What each action does, by ticker (see :meth:`ActionMap.keys`)."""
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
        cap = torch.full_like(state["session_equity"], self.capital)
        zero = torch.zeros_like(state["turnover_hour"])
        replace = {
            **{k: getattr(fresh, k) for k in ACCOUNT_FIELDS},
            "t": start,
            "steps": torch.zeros_like(state["steps"]),
            "session_equity": cap,
            "episode_equity": cap,
            "halted": torch.zeros_like(state["halted"]),
            "turnover_hour": zero,
            "turnover_session": zero,
            "sharpe_a": zero,
            "sharpe_b": zero,
        }
        new = dict(state)
        for key, value in replace.items():
            m = mask.reshape(n, *([1] * (value.dim() - 1)))
            new[key] = torch.where(m, value, state[key])
        return new, self._observe(new)

    def _zero_info(self) -> TensorDict:
        n = self.batch_size
        data = {key: torch.zeros((*n, 1), device=self.device) for key in INFO_KEYS}
        data["equity"] = self.state["equity"].to(torch.float32).unsqueeze(-1)
        data["triggers"] = torch.zeros((*n, len(RULES)), dtype=torch.bool, device=self.device)
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
        lim = self._limits
        acct = Account(**{k: state[k] for k in ACCOUNT_FIELDS})
        t = state["t"]
        # Stepping an env past its truncation without a reset stays on the split's last bar
        # (and keeps reporting truncated), so no read leaves the data.
        nxt = (t + 1).clamp(max=self.stop - 1)
        # Session and hour windows that start with the fill bar reset their state first.
        new_session = self._session[nxt] != self._session[t]
        new_hour = self._hour[nxt] != self._hour[t]
        session_equity = torch.where(new_session, acct.equity, state["session_equity"])
        halted = state["halted"] & ~new_session
        turn_session = torch.where(
            new_session, torch.zeros_like(state["turnover_session"]), state["turnover_session"]
        )
        turn_hour = torch.where(
            new_hour, torch.zeros_like(state["turnover_hour"]), state["turnover_hour"]
        )

        # Pre-trade: the action's targets, position limits, a halt, turnover caps.
        target = self.actions.targets(action, acct.target, t)
        target, position_hit, gross_hit = apply_position_limits(
            target, lim["max_position"], lim["max_gross_exposure"]
        )
        target = torch.where(halted.unsqueeze(-1), torch.zeros_like(target), target)
        held = acct.shares * acct.mark / acct.equity.unsqueeze(-1)
        moving = target != acct.target
        proposed = ((target - held).abs() * moving).sum(-1)
        trading = (proposed > 0) & ~halted
        over_hour = trading & (turn_hour + proposed > lim["turnover_cap_hour"])
        over_session = trading & (turn_session + proposed > lim["turnover_cap_session"])
        blocked = over_hour | over_session
        target = torch.where(blocked.unsqueeze(-1), acct.target, target)

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

        # Post-trade stops.
        drawdown = acct.equity / session_equity - 1.0
        dd_hit = (drawdown < -lim["max_daily_drawdown"]) & ~halted
        episode_return = acct.equity / state["episode_equity"] - 1.0
        loss_hit = episode_return < -lim["loss_cut"]
        profit_hit = episode_return > lim["profit_lock"]
        terminated = loss_hit | profit_hit
        steps = state["steps"] + 1
        truncated = ((steps >= self.length) | (nxt + 1 >= self.stop)) & ~terminated
        fired = torch.stack(
            [dd_hit, over_hour, over_session, loss_hit, profit_hit, gross_hit, position_hit], dim=-1
        )

        # Reward and its components (basis points of capital for the components).
        cfg = self.reward_cfg
        bps = 1e4 / self.capital
        penalty = dd_hit.to(acct.equity.dtype) * self.risk.drawdown_penalty
        sharpe_a, sharpe_b, reward_var = state["sharpe_a"], state["sharpe_b"], state["reward_var"]
        if cfg.kind == "pnl":
            raw = (bar.asset_pnl * self._reward_weights).sum(-1) / self.capital
        elif cfg.kind == "log_return":
            raw = torch.log1p(bar.bar_return)
        else:
            raw, sharpe_a, sharpe_b = differential_sharpe(
                bar.bar_return, sharpe_a, sharpe_b, cfg.sharpe_eta
            )
        reward = raw * cfg.scale - penalty
        if cfg.normalize:
            eta = cfg.normalize_eta
            reward_var = (1 - eta) * reward_var + eta * (reward * reward).mean()
            reward = reward / reward_var.sqrt().clamp_min(1e-8)
        new_state = {
            **{k: getattr(acct, k) for k in ACCOUNT_FIELDS},
            "t": nxt,
            "steps": steps,
            "session_equity": session_equity,
            "episode_equity": state["episode_equity"],
            "halted": halted | dd_hit,
            "turnover_hour": turn_hour + bar.turnover,
            "turnover_session": turn_session + bar.turnover,
            "sharpe_a": sharpe_a,
            "sharpe_b": sharpe_b,
            "reward_var": reward_var,
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
            cfg = self.reward_cfg
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
        return dict(zip(RULES, totals, strict=True))
