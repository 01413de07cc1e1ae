"""Tests of envs.factory.make_env: the env config group composed by Hydra, and config errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from datamodules.errors import ConfigError
from datamodules.market import Market
from datamodules.pipeline import build_market_data
from envs.factory import make_env
from envs.trading import TradingEnv
from experiments.app import register_resolvers

CONF = Path(__file__).resolve().parents[1] / "conf"


def composed(name: str) -> dict:
    """``cfg.env`` of ``python -m experiments env=NAME +model=lstm``, resolved."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose("config", overrides=[f"env={name}", "+model=lstm"])
    return OmegaConf.to_container(cfg.env, resolve=True)


@pytest.fixture(scope="module")
def configs() -> dict[str, dict]:
    return {name: composed(name) for name in ("single_ticker", "dual_ticker", "portfolio")}


def market_for(tickers: list[str]) -> tuple[Market, tuple[int, int]]:
    data = build_market_data(
        source="synthetic",
        tickers=tickers,
        bar_size="15min",
        seed=0,
        window=4,
        cache_dir=None,
        synthetic={"sessions": 20},
    )
    return data.market, data.split.train


@pytest.fixture(scope="module")
def pair() -> tuple[Market, tuple[int, int]]:
    return market_for(["NVDA", "MSFT"])


def with_section(cfg: dict, section: str, **values) -> dict:
    return {**cfg, section: {**(cfg.get(section) or {}), **values}}


# ------------------------------------------------------------------ the config group
@pytest.mark.parametrize(
    "name, actions, obs",
    [("single_ticker", 3, 13), ("dual_ticker", 9, 26), ("portfolio", 12, 8 * 12 + 8)],
)
def test_composed_env_configs_build_the_documented_envs(configs, name, actions, obs) -> None:
    cfg = configs[name]
    market, span = market_for(cfg["tickers"])
    env = make_env(market, span, cfg, num_envs=2)
    assert isinstance(env, TradingEnv)
    assert env.action_spec.n == actions and env.obs_dim == obs
    td = env.rollout(5, break_when_any_done=False)
    assert td["next", "observation"].shape == (2, 5, obs)


def test_dual_ticker_and_portfolio_extend_single_ticker(configs) -> None:
    single, dual, portfolio = (configs[n] for n in ("single_ticker", "dual_ticker", "portfolio"))
    assert dual["tickers"] == ["NVDA", "MSFT"] and dual["reward"]["weights"] == [0.5, 0.5]
    assert {**dual, "tickers": single["tickers"], "reward": single["reward"]} == single
    assert portfolio["actions"]["kind"] == "factors" and len(portfolio["tickers"]) == 8
    assert portfolio["costs"] == single["costs"] and portfolio["risk"] == single["risk"]


def test_make_env_reads_capital_dtype_num_envs_and_episode(configs, pair) -> None:
    market, span = pair
    cfg = {**configs["dual_ticker"], "capital": 5_000.0, "dtype": "float64", "num_envs": 3}
    cfg = with_section(cfg, "episode", length=25, window=2)
    env = make_env(market, span, cfg, episode_overrides={"random_start": False})
    assert env.num_envs == 3 and env.capital == 5_000.0 and env.length == 25
    assert env.first == max(span[0], 1)
    env.reset()
    assert env.state["cash"].dtype == torch.float64 and (env.state["cash"] == 5_000.0).all()
    assert (env.state["t"] == env.first).all()
    assert make_env(market, span, cfg, num_envs=5).num_envs == 5


def test_a_missing_actions_section_means_target_actions(pair) -> None:
    market, span = pair
    env = make_env(market, span, {}, num_envs=1)
    assert env.action_spec.n == 9 and env.capital == 100_000.0
    assert env.state["cash"].dtype == torch.float32


# ------------------------------------------------------------------ config errors
@pytest.mark.parametrize(
    "section, key",
    [
        ("risk", "max_drawdown"),
        ("reward", "scael"),
        ("episode", "lenght"),
        ("costs", "fee_bps"),
    ],
)
def test_unknown_keys_raise_a_config_error_naming_the_key(configs, pair, section, key) -> None:
    market, span = pair
    cfg = with_section(configs["dual_ticker"], section, **{key: 1.0})
    with pytest.raises(ConfigError, match=rf"env\.{section}.*{key}"):
        make_env(market, span, cfg)


def test_unknown_episode_override_raises(configs, pair) -> None:
    market, span = pair
    with pytest.raises(ConfigError, match="env.episode.*start"):
        make_env(market, span, configs["dual_ticker"], episode_overrides={"start": 3})


@pytest.mark.parametrize("weights", [[1.0], [1.0, 1.0, 1.0], [1.0, -0.5], [0.0, 0.0]], ids=str)
def test_bad_reward_weights_raise_a_config_error(configs, pair, weights) -> None:
    market, span = pair
    cfg = with_section(configs["dual_ticker"], "reward", weights=weights)
    with pytest.raises(ConfigError, match=r"env\.reward\.weights.*NVDA, MSFT"):
        make_env(market, span, cfg)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"dtype": "float16"}, "env.dtype"),
        ({"actions": {"kind": "options"}}, "env.actions.kind"),
        ({"reward": {"kind": "sortino"}}, "env.reward.kind"),
        ({"reward": {"scale": 0.0}}, "env.reward.scale"),
        ({"risk": {"loss_cut": -0.1}}, "env.risk.loss_cut"),
        ({"costs": {"spread_bps": -1.0}}, "env.costs.spread_bps"),
        ({"episode": {"length": -5}}, "env.episode.length"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_values_raise_a_config_error(configs, pair, change, match) -> None:
    market, span = pair
    cfg = dict(configs["dual_ticker"])
    for key, value in change.items():
        cfg = with_section(cfg, key, **value) if isinstance(value, dict) else {**cfg, key: value}
    with pytest.raises(ConfigError, match=match):
        make_env(market, span, cfg)


def test_a_split_too_short_for_the_window_raises(configs, pair) -> None:
    market, _ = pair
    cfg = with_section(configs["dual_ticker"], "episode", window=10)
    with pytest.raises(ConfigError, match="env.observation.window|window"):
        make_env(market, (0, 10), cfg)


def test_episode_length_zero_raises(configs, pair) -> None:
    market, span = pair
    cfg = with_section(configs["dual_ticker"], "episode", length=0)
    with pytest.raises(ConfigError, match="env.episode.length"):
        make_env(market, span, cfg)


@pytest.mark.parametrize("window", [0, -2])
def test_episode_window_below_one_raises(configs, pair, window) -> None:
    market, span = pair
    cfg = with_section(configs["dual_ticker"], "episode", window=window)
    with pytest.raises(ConfigError, match="window"):
        make_env(market, span, cfg)
