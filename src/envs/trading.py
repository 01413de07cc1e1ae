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
import logging
import numbers
import time
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
from envs.fused import FusedFunction, tracing
from envs.protocol import ActionSchemeLike, RewardLike, RiskPolicyLike
from envs.rewards import PnLReward
from envs.risk import RiskRules, RiskStep

__all__ = [
    "ACCOUNT_FIELDS",
    "COMPILE_MIN_ENVS",
    "DTYPES",
    "INFO_KEYS",
    "EpisodeConfig",
    "TradingEnv",
    "compile_choice",
]

log = logging.getLogger(__name__)

INFO_KEYS = ("pnl", "cost", "penalty", "equity", "turnover", "fills")
STEP_INFO_KEYS = (*INFO_KEYS, "triggers")  # a step's info entries, in order
ACCOUNT_FIELDS = ("cash", "shares", "target", "equity", "mark")
ENV_KEYS = (*ACCOUNT_FIELDS, "t", "steps", "trigger_counts")  # the env's own state entries
DTYPES = {"float32": torch.float32, "float64": torch.float64}
DONE_KEYS = ("done", "terminated", "truncated")
# env.compile=auto compiles the step from this many envs on a CPU (always on a GPU). The compiled
# step is 2-6x faster per env-step at any batch, but its compile (1-2.5 s a graph, plus ~10 s of
# inductor start-up once per process) pays only in runs that would step eagerly for more than
# about half a minute: small batches (debugging runs, tests, the default 64 envs x 600k frames)
# stay eager; bench/env_throughput.py measures both sides (README, Trading environments).
COMPILE_MIN_ENVS = 512


def compile_choice(
    compile: bool | str, num_envs: int, device: torch.device | str, min_envs: int
) -> tuple[bool, str]:
    """Whether an env of ``num_envs`` envs on ``device`` compiles its step for ``env.compile``
    (true, false or auto), and why, in words for the log."""
    if isinstance(compile, bool):
        return compile, f"env.compile={str(compile).lower()}"
    if str(compile) != "auto":
        raise ConfigError(f"env.compile is {compile!r}; choose auto, true or false.")
    if torch.device(device).type == "cuda":
        return True, "env.compile=auto on a GPU"
    if num_envs >= min_envs:
        return True, f"env.compile=auto: {num_envs} envs >= env.compile_min_envs={min_envs}"
    return False, f"env.compile=auto: {num_envs} envs < env.compile_min_envs={min_envs}"


def vectorize_choice(vectorize: bool | str, num_assets: int) -> tuple[bool, str]:
    """Whether the compiled CPU step of a market of ``num_assets`` assets is SIMD vector code
    for ``env.compile_vectorize`` (true, false or auto), and why, in words for the log.

    Inductor vectorises a kernel's innermost loop. With several assets that is the asset axis
    of each env's rows, read contiguously; with one asset it is the env axis, where every read
    of the bar tables is a gather at each env's own bar, which vector code does lane by lane:
    its single-ticker step was 1.3x (4,096 envs) to 1.9x (65,536) slower than scalar code,
    while vector code made the dual-ticker step 1.16-1.4x faster and the 8-asset portfolio's
    was even (A/B in one process, bench/env_throughput.py's configs)."""
    if isinstance(vectorize, bool):
        return vectorize, f"env.compile_vectorize={str(vectorize).lower()}"
    if str(vectorize) != "auto":
        raise ConfigError(f"env.compile_vectorize is {vectorize!r}; choose auto, true or false.")
    if num_assets > 1:
        return True, f"env.compile_vectorize=auto: {num_assets} assets"
    return False, "env.compile_vectorize=auto: one asset"


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
    ``compile``: compile the pure step and reset with inductor (on a CPU a
    :class:`~envs.fused.FusedFunction`, on a GPU ``torch.compile``): ``auto`` (the default)
    does so on a GPU and from ``compile_min_envs`` envs on a CPU, where large runs repay the
    compile; the choice and the compile time are logged (``compile_reason``;
    ``compile_seconds``, the first compiled reset's and step's wall time, inductor's start-up
    included). ``compile_vectorize``: whether the compiled CPU kernels are SIMD vector code
    (:func:`vectorize_choice`; ``auto``: with several assets, not with one; logged with each
    compile). It changes a step's speed, not its numbers: with one or two assets they are the
    same to the bit, with more a sum over the assets may round differently.
    ``evaluation``: the evaluation env (float64 accounting, not compiled, one episode from the
    split's first bar to its end, whatever the config says).

    :meth:`step_and_maybe_reset` (what TorchRL's collectors and ``rollout`` call) takes a lean
    path: one call of the (compiled) step, TensorDicts built without per-value checks, and the
    reset of finished envs only on steps where one finished; it returns what TorchRL's generic
    path returns, value for value (tested).
    """

    batch_locked = True
    info_keys = INFO_KEYS

    def __init__(
        self,
        market: Market,
        span: tuple[int, int] | Sequence[tuple[int, int]],
        *,
        actions: ActionSchemeLike | Callable[[Market], ActionSchemeLike],
        costs: Frictions | Mapping[str, float] | None = None,
        risk: RiskRules | RiskPolicyLike | Mapping[str, float | None] | None = None,
        reward: RewardLike | None = None,
        episode: EpisodeConfig | Mapping[str, int | bool | None] | None = None,
        capital: Annotated[float, "> 0", "<= 1e15"] = DEFAULT_CAPITAL,  # float32 state: bounded
        num_envs: Annotated[int, ">= 1"] | Literal["auto"] = 1,
        auto_envs_cap: Annotated[int, ">= 1"] = 1024,
        tickers: Sequence[str] | None = None,
        dtype: Literal["float32", "float64"] = "float32",
        compile: bool | Literal["auto"] = "auto",
        compile_min_envs: Annotated[int, ">= 1"] = COMPILE_MIN_ENVS,
        compile_vectorize: bool | Literal["auto"] = "auto",
        device: torch.device | str = "cpu",
        seed: int = 0,
        evaluation: bool = False,
        _compile_step: bool | str | None = None,  # ``compile``, as the metaclass hands it on
    ) -> None:
        if _compile_step is not None:
            compile = _compile_step
        num_envs = _check_num_envs(num_envs)
        if not _is_count(compile_min_envs):
            raise ConfigError(
                f"env.compile_min_envs is {compile_min_envs}; env.compile=auto compiles the step "
                "from this many envs, a number >= 1."
            )
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
        if self.evaluation:
            self.compiled, self.compile_reason = False, "the evaluation env is never compiled"
        else:
            self.compiled, self.compile_reason = compile_choice(
                compile, num_envs, device, int(compile_min_envs)
            )
        self.vectorized, self.vectorize_reason = vectorize_choice(
            compile_vectorize, market.num_assets
        )
        # Wall time of the compiled reset's and step's first calls (each compiles; the first
        # compile of a process also starts inductor, seconds more on a cold cache).
        self.compile_seconds: float | None = None
        window = int(self.episode.window)
        # The spans the env trades on (one for a time split; CPCV's training groups are
        # several): each [start, stop) with its first decision once the window fits. An episode
        # never runs from one span into the next.
        self.spans = _spans_of(span)
        firsts = [max(a, window - 1) for a, _ in self.spans]
        for (a, b), f in zip(self.spans, firsts, strict=True):
            if b - f < 2:
                raise ConfigError(
                    f"The env's split holds bars {a}..{b}: too few for one step with "
                    f"env.episode.window={window}."
                )
        self.first = firsts[0]
        self.stop = self.spans[-1][1]
        longest = max(b - 1 - f for (_, b), f in zip(self.spans, firsts, strict=True))
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
        minutes = (market.timestamps - market.timestamps.astype("datetime64[D]")) / np.timedelta64(
            1, "m"
        )
        days = market.timestamps.astype("datetime64[D]").astype(np.int64)
        hour = days * 24 + (minutes // 60).astype(np.int64)
        # Per decision bar t: does the bar it fills at (t + 1, or the split's last bar) open a new
        # session / clock hour? One lookup a step instead of two of each.
        bars = np.arange(market.num_bars)
        # Per bar: the end of the span it lies in (the bar after it elsewhere), so a step never
        # fills past its span's last bar.
        span_stop = bars + 1
        for a, b in self.spans:
            span_stop[a:b] = b
        self._span_stop = torch.as_tensor(span_stop, dtype=torch.long, device=dev)
        # Episode starts: every decision bar of a span from which a full episode fits (its
        # first bar when none does); one random start draws one of them.
        self._starts = torch.as_tensor(
            np.concatenate(
                [
                    np.arange(f, max(f, b - 1 - self.length) + 1)
                    for (_, b), f in zip(self.spans, firsts, strict=True)
                ]
            ),
            dtype=torch.long,
            device=dev,
        )
        self._span_firsts = torch.as_tensor(firsts, dtype=torch.long, device=dev)
        fill = np.minimum(bars + 1, span_stop - 1)
        self._new_session = torch.as_tensor(
            market.session[fill] != market.session[bars], device=dev
        )
        self._new_hour = torch.as_tensor(hour[fill] != hour[bars], device=dev)
        self._window_offsets = torch.arange(window - 1, -1, -1, device=dev)
        self.actions = _action_scheme(actions, market).to(dev, dtype)
        self.reward = _reward(reward).bind(market, self.capital, dev, dtype)
        self._rule_names = tuple(self.risk.names)
        self.obs_dim = window * feats.shape[1] + market.num_assets + self._calendar.shape[1]
        self._make_specs()
        self._set_seed(seed)
        self._init_state()
        self._step_fn = self._step_outputs
        self._reset_fn = self.reset_state
        self._restart_fn = self.restart_outputs
        if self.compiled:  # fuse the pure step and reset into a few kernels
            self._fuse()
        log.log(
            logging.DEBUG if self.evaluation else logging.INFO,  # built for every evaluation
            "env: %s step for %d env(s) on %s (%s)",
            "compiled" if self.compiled else "eager",
            num_envs,
            dev,
            self.compile_reason,
        )
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
        for key, value in self.state.items():
            saved = state[key]
            if saved.shape != value.shape or saved.dtype != value.dtype:
                raise ValueError(
                    f"The saved env state's {key!r} is {saved.dtype} {tuple(saved.shape)}, this "
                    f"env's is {value.dtype} {tuple(value.shape)}: it comes from an env with "
                    "another num_envs, env.dtype or market."
                )
        self.rng.set_state(state["rng"])
        # This env's entries in its key order, contiguous on its device (the layout its compiled
        # step has); entries of other plug-ins are carried, unused.
        own = {k: state[k].to(self.device).contiguous() for k in self.state}
        extra = {k: v.to(self.device) for k, v in state.items() if k not in own and k != "rng"}
        self.state = {**own, **extra}

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
        if mask is None:
            mask = torch.ones(self.num_envs, dtype=torch.bool, device=self.device)
        self.state, obs = self._reset_fn(self.state, mask, self._draw_starts())
        return obs

    def _draw_starts(self) -> torch.Tensor:
        """The bar each env would restart at (N,): one random draw of the env's generator per
        env, or (``episode.random_start`` off, or one start only) each env at the first bar of
        a span, the spans taken in turn. Every reset draws once, whichever envs it restarts."""
        n, dev = self.num_envs, self.device
        choices = self._starts.numel()  # the bars a full episode may start from
        if self.episode.random_start and choices > 1:
            pick = torch.randint(0, choices, (n,), generator=self.rng, device=dev)
            return self._starts[pick]
        return self._span_firsts[torch.arange(n, device=dev) % self._span_firsts.numel()]

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
        return TensorDict(self._fresh_info(self.state["equity"]), batch_size=n, device=self.device)

    def _fresh_info(self, equity: torch.Tensor) -> dict[str, torch.Tensor]:
        """The info of envs that have just (re)started, by key: zero pnl, cost, penalty,
        turnover and fills (N, 1), their ``equity`` (N,) as float32 (N, 1), no trigger fired
        (N, R)."""
        n = self.batch_size
        data = {key: torch.zeros((*n, 1), device=self.device) for key in INFO_KEYS}
        data["equity"] = equity.to(torch.float32).unsqueeze(-1)
        data["triggers"] = torch.zeros(
            (*n, len(self._rule_names)), dtype=torch.bool, device=self.device
        )
        return data

    def restart_outputs(
        self,
        state: dict[str, torch.Tensor],
        done: torch.Tensor,
        start: torch.Tensor,
        *info: torch.Tensor,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, list[torch.Tensor]]:
        """A pure function: the collector path's restart of the finished envs, in one pass.

        ``state`` and ``info`` (its values in ``STEP_INFO_KEYS`` order) are a step's outputs,
        ``done`` its done flags (N, 1), ``start`` the bars to restart at (N,). Returns (the
        state with the ``done`` envs restarted, the next step's observation and info values):
        the restarted envs' fresh ones, the step's for the others. The values TorchRL's generic
        path computes op by op (:meth:`reset_state`, then ``torch.where`` on each entry); the
        observation is :meth:`reset_state`'s own, which for an env that goes on is its step's
        (the same function of the same state). Compiled, it is one kernel."""
        new, obs = self.reset_state(state, done.squeeze(-1), start)
        fresh = self._fresh_info(new["equity"])
        merged = [
            torch.where(_rows(done, value), fresh[key], value)
            for key, value in zip(STEP_INFO_KEYS, info, strict=True)
        ]
        return new, obs, merged

    # ------------------------------------------------------------------ step
    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = tensordict.get("action").reshape(self.num_envs).long().contiguous()
        self.state, obs, reward, info, done, terminated, truncated, _ = self._step_fn(
            self.state, action
        )
        self._check_reward_scale(reward)
        # Shapes and devices are right by construction: skip TensorDict's per-value checks.
        return TensorDict._new_unsafe(
            {
                "observation": obs,
                "reward": reward,
                "info": info,
                "done": done,
                "terminated": terminated,
                "truncated": truncated,
            },
            batch_size=self.batch_size,
            device=self.device,
        )

    def _fuse(self) -> None:
        """Set up the compiled step and reset; each compiles at its first call.

        On a CPU they are :class:`~envs.fused.FusedFunction`: traced once and compiled by
        inductor, then called without torch.compile's per-call work (~40 us of a 4096-env step).
        They read the plug-ins and data tables as they are at that first call; setting one of
        those attributes again drops them (:meth:`__setattr__`), but a plug-in changed in place
        (``env.reward.scale = 2``) is not seen: set a new object. On a GPU, ``torch.compile``
        (dynamic=None, not False: the graphs are static either way, and False patches torch's
        config on every call, ~8 us).
        """
        if self.device.type == "cpu":
            options = {} if self.vectorized else {"cpp.simdlen": 1}  # 1 lane: scalar code
            self._compiled_step = FusedFunction(self._step_outputs, "env step", options)
            self._compiled_reset = FusedFunction(self.reset_state, "env reset", options)
            self._compiled_restart = FusedFunction(self.restart_outputs, "env restart", options)
        else:
            self._compiled_step = torch.compile(self._step_outputs, dynamic=None)
            self._compiled_reset = torch.compile(self.reset_state, dynamic=None)
            self._compiled_restart = torch.compile(self.restart_outputs, dynamic=None)
        self._step_fn = self._first_compiled_step
        self._reset_fn = self._first_compiled_reset
        self._restart_fn = self._first_compiled_restart

    def __setattr__(self, name: str, value: object) -> None:
        super().__setattr__(name, value)
        if name in _TRACED and self.__dict__.get("compiled") and "_compiled_step" in self.__dict__:
            log.info("env: %s changed: the compiled step compiles again at its next call", name)
            self._fuse()

    def _first_compiled_step(self, state: dict[str, torch.Tensor], action: torch.Tensor):
        """The first call of the compiled step: compiles it (timed and logged), then hands the
        step over to the compiled function itself."""
        start = time.perf_counter()
        try:
            out = self._compiled_step(state, action)
        except Exception as err:  # no C++ compiler, an inductor failure: eager is exact
            self._compile_failed(err)
            return self._step_outputs(state, action)
        self._step_fn = self._compiled_step
        self._compiled_in("step", self._compiled_step, start)
        return out

    def _first_compiled_reset(self, state, mask, start):
        """The first call of the compiled reset (it compiles, timed and logged), then the
        compiled reset itself."""
        began = time.perf_counter()
        try:
            out = self._compiled_reset(state, mask, start)
        except Exception as err:
            self._compile_failed(err)
            return self.reset_state(state, mask, start)
        self._reset_fn = self._compiled_reset
        self._compiled_in("reset", self._compiled_reset, began)
        return out

    def _first_compiled_restart(self, state, done, start, *info):
        """The first call of the compiled restart (it compiles, timed and logged), then the
        compiled restart itself. The collector's path makes this call at its first step, with
        no env restarted, so the compile does not fall on the first step that restarts one."""
        began = time.perf_counter()
        try:
            out = self._compiled_restart(state, done, start, *info)
        except Exception as err:
            self._compile_failed(err)
            return self.restart_outputs(state, done, start, *info)
        self._restart_fn = self._compiled_restart
        self._compiled_in("restart", self._compiled_restart, began)
        return out

    def _compiled_in(self, what: str, fn: object, start: float) -> None:
        """Add the wall time since ``start`` of ``what``'s first compiled call to
        ``compile_seconds`` and log both."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        self.compile_seconds = (self.compile_seconds or 0.0) + seconds
        code = ""
        if self.device.type == "cpu":
            code = f", {'vector' if self.vectorized else 'scalar'} code: {self.vectorize_reason}"
        log.info(
            "env: %s compiled in %.1f s (%d envs, %s%s); compiling has taken %.1f s in all",
            what,
            seconds,
            self.num_envs,
            getattr(fn, "path", None) or "torch.compile",
            code,
            self.compile_seconds,
        )

    def _compile_failed(self, err: Exception) -> None:
        """torch.compile could not build the step: the env steps eagerly (the same numbers)."""
        self.compiled = False
        self.compile_reason = f"the compile failed: {type(err).__name__}"
        self._step_fn, self._reset_fn = self._step_outputs, self.reset_state
        self._restart_fn = self.restart_outputs
        log.warning(
            "env: torch.compile of the step failed (%s: %s); stepping eagerly instead "
            "(set env.compile=false to skip the attempt)",
            type(err).__name__,
            " ".join(str(err).split())[:300],
        )

    # ------------------------------------------------------------------ the collector's path
    def step_and_maybe_reset(
        self, tensordict: TensorDictBase
    ) -> tuple[TensorDictBase, TensorDictBase]:
        """Step every env with ``tensordict["action"]`` and restart the finished ones: returns
        (``tensordict`` with its ``"next"`` entry, the input of the next step), as TorchRL's
        :meth:`EnvBase.step_and_maybe_reset` does.

        The lean path: one call of the step function, TensorDicts built without TorchRL's
        per-value checks and key bookkeeping, and on steps where an env finished one call of
        :meth:`restart_outputs`: the state a partial ``_reset`` leaves (the same random starts
        drawn) and the next input's observation and info, merged in one function (compiled
        with the step, and compiled at the first step, which restarts nothing). The values
        are TorchRL's generic path's, key for key; extra root entries (policy outputs) are
        carried without a copy. A subclass that overrides ``_step`` or ``_reset``, a TorchRL
        ``env.compile()`` or post-step hooks take TorchRL's generic path.
        """
        if not self._lean_path(tensordict):
            return super().step_and_maybe_reset(tensordict)
        n, dev = self.batch_size, self.device
        action = tensordict.get("action").reshape(self.num_envs).long().contiguous()
        self.state, obs, reward, info, mask, terminated, truncated, any_done = self._step_fn(
            self.state, action
        )
        self._check_reward_scale(reward)
        flags = {"done": mask, "terminated": terminated, "truncated": truncated}
        info_td = TensorDict._new_unsafe(info, batch_size=n, device=dev)
        step = TensorDict._new_unsafe(
            {"observation": obs, "reward": reward, "info": info_td, **flags},
            batch_size=n,
            device=dev,
        )
        tensordict._set_str("next", step, validated=True, inplace=False)
        carried = {k: v for k, v in tensordict.items() if k not in _NOT_CARRIED}
        root = {"observation": obs, "info": info_td, **flags}
        restart = bool(any_done)  # the one host sync, as TorchRL's maybe_reset
        if restart or self._restart_fn == self._first_compiled_restart:
            # The same starts TorchRL's partial reset draws, one draw per restarting step; the
            # compiled restart's first (compiling) call restarts no env and draws nothing (its
            # starts are a copy: an input the trace saw twice would be one input to it).
            start = self._draw_starts() if restart else self.state["t"].clone()
            new_state, next_obs, merged = self._restart_fn(
                self.state,
                mask if restart else torch.zeros_like(mask),
                start,
                *[info[key] for key in STEP_INFO_KEYS],
            )
        if restart:
            self.state = new_state
            # Every finished env restarts, so no env of the next step's input is done.
            zeros = torch.zeros((*n, 1), dtype=torch.bool, device=dev)
            root = {
                "observation": next_obs,
                "info": TensorDict._new_unsafe(
                    dict(zip(STEP_INFO_KEYS, merged, strict=True)), batch_size=n, device=dev
                ),
                **{k: zeros.clone() if k != "done" else zeros for k in flags},
            }
            # TorchRL pads the other entries of restarted envs with zeros.
            carried = {k: _zero_rows(mask.squeeze(-1), v) for k, v in carried.items()}
        nxt = TensorDict._new_unsafe({**carried, **root}, batch_size=n, device=dev)
        return tensordict, nxt

    def _lean_path(self, tensordict: TensorDictBase) -> bool:
        """Whether :meth:`step_and_maybe_reset` may take the lean path for this input."""
        cls = type(self)
        return (
            cls._step is TradingEnv._step
            and cls._reset is TradingEnv._reset
            and self.__dict__.get("_compiled_step_and_maybe_reset") is None
            and getattr(self, "_post_step_mdp_hooks", None) is None
            and not self.__dict__.get("_torchrl_native_autoreset", False)
            and tensordict.device == self.device
            and tensordict.batch_size == self.batch_size
            and "action" in tensordict.keys()  # noqa: SIM118 (a TensorDict has no `in`)
        )

    def advance(
        self, action: torch.Tensor
    ) -> tuple[torch.Tensor, dict, torch.Tensor, torch.Tensor]:
        """Step every env with ``action`` (N,): (reward, info, terminated, truncated)."""
        action = action.to(self.device, torch.long).reshape(self.num_envs).contiguous()
        self.state, _, reward, info, _, terminated, truncated, _ = self._step_fn(self.state, action)
        return reward.squeeze(-1), info, terminated.squeeze(-1), truncated.squeeze(-1)

    def _step_outputs(self, state: dict[str, torch.Tensor], action: torch.Tensor):
        """:meth:`transition` packed as the step's TensorDicts take it: (new state,
        observation, reward (N, 1), info, done (N, 1), terminated (N, 1), truncated (N, 1),
        whether any env is done (0-d)). The env's one step function, so the compiled step
        does the packing inside its kernel instead of as eager ops after it."""
        new, obs, reward, info, terminated, truncated = self.transition(state, action)
        done = terminated | truncated
        return (
            new,
            obs,
            reward.unsqueeze(-1),
            info,
            done.unsqueeze(-1),
            terminated.unsqueeze(-1),
            truncated.unsqueeze(-1),
            done.any(),
        )

    def transition(self, state: dict[str, torch.Tensor], action: torch.Tensor):
        """Decide at the close of bar t, fill at the open of t+1, mark at its close.

        A pure function of (state, action): returns (new state, observation, reward (N,),
        info, terminated (N,), truncated (N,)). No host sync and no Python branch on data,
        so ``torch.compile`` fuses it (``env.compile=true``).
        """
        return self.transition_outcome(state, action)[:6]

    def transition_outcome(self, state: dict[str, torch.Tensor], action: torch.Tensor):
        """:meth:`transition`, and the bar's :class:`~envs.accounting.BarOutcome` last (what
        the evaluation pass records per asset: shares, costs by component)."""
        acct = Account(**{k: state[k] for k in ACCOUNT_FIELDS})
        t = state["t"]
        # Stepping an env past its truncation without a reset stays on the split's last bar
        # (and keeps reporting truncated), so no read leaves the data.
        span_stop = self._span_stop[t]
        nxt = torch.minimum(t + 1, span_stop - 1)
        step = RiskStep(t=t, fill=nxt, new_session=self._new_session[t], new_hour=self._new_hour[t])

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
        truncated = ((steps >= self.length) | (nxt + 1 >= span_stop)) & ~terminated
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
            "trigger_counts": state["trigger_counts"] + _count_fired(fired),
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
            bar,
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


# What the compiled step and reset read besides their inputs: setting one of these again after
# they compiled makes them compile again (TradingEnv.__setattr__).
_TRACED = frozenset(
    {
        "actions",
        "risk",
        "frictions",
        "reward",
        "episode",
        "length",
        "capital",
        "market",
        "num_envs",
        "acct_dtype",
        "_rule_names",
        "_open",
        "_close",
        "_sigma",
        "_adv",
        "_features",
        "_calendar",
        "_span_stop",
        "_new_session",
        "_new_hour",
        "_window_offsets",
    }
)

# Root entries TorchRL's step_mdp does not carry into the next step's input (the env writes
# its own observation, info and done flags there).
_NOT_CARRIED = frozenset({"next", "reward", "_reset", "observation", "info", *DONE_KEYS})


def _count_fired(fired: torch.Tensor) -> torch.Tensor:
    """How many envs fired each rule: ``fired.sum(0)`` of the (N, R) trigger flags, counted
    from one bit code per env. The same counts; compiled, it is one pass over N int codes
    instead of a reduction over N rows of R bools, which inductor loads lane by lane (10% of
    a compiled step at 65,536 envs, measured)."""
    rules = fired.shape[-1]
    if rules > 62 or not (torch.compiler.is_compiling() or tracing()):  # eager: one op is cheapest
        return fired.sum(0)  # (an int64 code holds the bits of at most 62 rules)
    bits = torch.arange(rules, device=fired.device, dtype=torch.int64)
    code = (fired.to(torch.int64) << bits).sum(-1)
    return ((code.unsqueeze(-1) >> bits) & 1).sum(0)


def _rows(mask: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``mask`` (N, 1) broadcast to the rows of ``value`` (N, ...)."""
    return mask.reshape(mask.shape[0], *([1] * (value.dim() - 1)))


def _zero_rows(done: torch.Tensor, value):
    """``value`` (a tensor or a TensorDict of batch N) with the rows of ``done`` envs zeroed."""
    if isinstance(value, TensorDictBase):
        return value.apply(lambda v: _zero_rows(done, v))
    mask = done.reshape(done.shape[0], *([1] * (value.dim() - 1)))
    return torch.where(mask, torch.zeros((), dtype=value.dtype, device=value.device), value)


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


def _spans_of(span: tuple[int, int] | Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """``span`` as a tuple of ``(start, stop)`` spans in time order (one span or several)."""
    spans = [span] if len(span) == 2 and not isinstance(span[0], (tuple, list)) else list(span)
    out = tuple((int(a), int(b)) for a, b in spans)
    if (
        not out
        or any(b <= a for a, b in out)
        or any(b > a2 for (_, b), (a2, _) in zip(out, out[1:], strict=False))
    ):
        raise ConfigError(
            f"The env got the bar spans {list(out)}; give one (start, stop) span or several in "
            "time order that do not overlap."
        )
    return out
