"""Build a :class:`TradingEnv` from the ``env`` config group's plain values."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from datamodules.config import dataclass_from
from datamodules.errors import ConfigError
from datamodules.market import Market
from envs.actions import make_actions
from envs.frictions import Frictions
from envs.rewards import RewardConfig
from envs.risk import RiskRules
from envs.trading import EpisodeConfig, TradingEnv

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def make_env(
    market: Market,
    span: tuple[int, int],
    env: Mapping,
    num_envs: int | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    episode_overrides: Mapping | None = None,
) -> TradingEnv:
    """A batched env over bars ``span`` of ``market`` configured by ``env`` (``cfg.env``)."""
    reward = dict(env.get("reward") or {})
    weights = reward.pop("weights", None)
    episode = {**dict(env.get("episode") or {}), **dict(episode_overrides or {})}
    dtype = str(env.get("dtype", "float32"))
    if dtype not in DTYPES:
        raise ConfigError(f"env.dtype is '{dtype}'; choose float32 or float64.")
    actions = dict(env.get("actions") or {"kind": "targets"})
    kind = actions.pop("kind", "targets")
    return TradingEnv(
        market=market,
        span=span,
        actions=make_actions(kind, market, **actions),
        frictions=dataclass_from(Frictions, env.get("costs") or {}, "env.costs"),
        risk=dataclass_from(RiskRules, env.get("risk") or {}, "env.risk"),
        reward=dataclass_from(RewardConfig, reward, "env.reward"),
        episode=dataclass_from(EpisodeConfig, episode, "env.episode"),
        capital=float(env.get("capital", 100_000.0)),
        num_envs=int(num_envs if num_envs is not None else env.get("num_envs", 1)),
        reward_weights=list(weights) if weights is not None else None,
        device=device,
        dtype=DTYPES[dtype],
        seed=seed,
        compile_step=bool(env.get("compile", False)),
    )
