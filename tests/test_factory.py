"""Tests of the env config group (conf/env, composed by Hydra), envs.factory.EnvFactory and
the env's config errors."""

from __future__ import annotations

import functools
import itertools
import subprocess
import sys

import pytest
import torch
from helpers.envs import CONF, checked_factory, env_cfg, env_config, env_factory
from helpers.markets import synthetic_data
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from datamodules.errors import ConfigError
from datamodules.market import Market
from envs.actions import FactorActions, SizingActions, TargetActions
from envs.episode import EpisodeConfig
from envs.factory import EnvFactory
from envs.frictions import Frictions
from envs.rewards import DifferentialSharpeReward, LogReturnReward, PnLReward
from envs.risk import RiskRules
from envs.trading import TradingEnv

NAMES = ("single_ticker", "dual_ticker", "portfolio")


@pytest.fixture(scope="module")
def configs() -> dict[str, dict]:
    return {name: env_cfg(name) for name in NAMES}


def market_for(tickers: list[str]) -> tuple[Market, tuple[int, int]]:
    data = synthetic_data(tickers, sessions=20)
    return data.market, data.split.train


@pytest.fixture(scope="module")
def pair() -> tuple[Market, tuple[int, int]]:
    return market_for(["NVDA", "MSFT"])


def with_section(cfg: dict, section: str, **values) -> dict:
    return {**cfg, section: {**(cfg.get(section) or {}), **values}}


def build(market: Market, span: tuple[int, int], cfg: dict, **kwargs) -> TradingEnv:
    """The env of ``cfg`` as the run builds it: instantiate, bind to the market, call."""
    return checked_factory(cfg, market)(span, **kwargs)


# ------------------------------------------------------------------ the config group
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("choice", [[], ["env/actions=sizing", "env/reward=log_return"]])
def test_the_env_group_composes_alone_as_in_the_app(name, choice) -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        app = compose("config", overrides=[f"env={name}", *choice])
    alone = env_config(name, [o.removeprefix("env/") for o in choice])
    if choice and name == "dual_ticker":  # its pnl weights merge into any reward
        assert alone.reward.weights == [0.5, 0.5]
    assert OmegaConf.to_container(app.env) == OmegaConf.to_container(alone)


@pytest.mark.parametrize(
    "name, actions, obs",
    [("single_ticker", 3, 13), ("dual_ticker", 9, 26), ("portfolio", 12, 8 * 12 + 8)],
)
def test_composed_env_configs_build_the_documented_envs(configs, name, actions, obs) -> None:
    cfg = configs[name]
    market, span = market_for(cfg["tickers"])
    build_env = instantiate(cfg)
    assert isinstance(build_env, functools.partial) and build_env.func is TradingEnv
    env = EnvFactory(build_env, market)(span, num_envs=2)
    assert isinstance(env, TradingEnv)
    assert env.action_spec.n == actions and env.obs_dim == obs
    td = env.rollout(5, break_when_any_done=False)
    assert td["next", "observation"].shape == (2, 5, obs)


@pytest.mark.parametrize(
    "scheme, reward",
    list(
        itertools.product(
            [
                ("targets", TargetActions, 3),
                ("sizing", SizingActions, 9),
                ("factors", FactorActions, 12),
            ],
            [
                ("pnl", PnLReward),
                ("log_return", LogReturnReward),
                ("differential_sharpe", DifferentialSharpeReward),
            ],
        )
    ),
    ids=lambda v: v[0],
)
def test_every_action_and_reward_option_builds_an_env(scheme, reward) -> None:
    (actions, actions_cls, num_actions), (rewards, reward_cls) = scheme, reward
    market, span = market_for(["NVDA"])
    cfg = env_cfg(overrides=[f"actions={actions}", f"reward={rewards}"])
    env = build(market, span, cfg, num_envs=2)
    assert type(env.actions) is actions_cls and type(env.reward) is reward_cls
    assert env.action_spec.n == num_actions
    assert torch.isfinite(env.rollout(4, break_when_any_done=False)["next", "reward"]).all()


def test_dual_ticker_and_portfolio_extend_single_ticker(configs) -> None:
    single, dual, portfolio = (configs[n] for n in NAMES)
    assert dual["tickers"] == ["NVDA", "MSFT"] and dual["reward"]["weights"] == [0.5, 0.5]
    assert {**dual, "tickers": single["tickers"], "reward": single["reward"]} == single
    assert portfolio["actions"]["_target_"] == "envs.actions.FactorActions"
    assert len(portfolio["tickers"]) == 8
    assert portfolio["costs"] == single["costs"] and portfolio["risk"] == single["risk"]
    assert single["_target_"] == "envs.trading.TradingEnv" and single["_partial_"] is True
    assert single["actions"]["_partial_"] is True and single["risk"]["_target_"] == (
        "envs.risk.RiskRules"
    )


def test_the_factory_reads_capital_dtype_num_envs_and_episode(configs, pair) -> None:
    market, span = pair
    cfg = {**configs["dual_ticker"], "capital": 5_000.0, "dtype": "float64", "num_envs": 3}
    cfg = with_section(cfg, "episode", length=25, window=2, random_start=False)
    factory = checked_factory(cfg, market)
    assert factory.requested_num_envs == 3 and factory.auto_envs_cap == 1024
    env = factory(span)
    assert env.num_envs == 3 and env.capital == 5_000.0 and env.length == 25
    assert env.first == max(span[0], 1)
    env.reset()
    assert env.state["cash"].dtype == torch.float64 and (env.state["cash"] == 5_000.0).all()
    assert (env.state["t"] == env.first).all()
    assert factory(span, num_envs=5).num_envs == 5


def test_a_factory_of_a_plain_callable_builds_one_env_by_default(pair) -> None:
    market, span = pair
    factory = EnvFactory(lambda m, s, **kw: TradingEnv(m, s, actions=TargetActions, **kw), market)
    assert factory.requested_num_envs == 1 and factory.auto_envs_cap == 1024
    assert factory(span).num_envs == 1
    with pytest.raises(ConfigError, match="_partial_"):
        EnvFactory({"tickers": ["NVDA"]}, market)


def test_the_env_defaults_are_the_documented_ones(pair) -> None:
    market, span = pair
    env = TradingEnv(market, span, actions=TargetActions)
    assert env.action_spec.n == 9 and env.capital == 100_000.0
    assert env.state["cash"].dtype == torch.float32
    assert env.frictions == Frictions() and env.risk == RiskRules()
    assert type(env.reward) is PnLReward and env.episode == EpisodeConfig()
    assert env.num_envs == 1 and not env.compiled and not env.evaluation


def test_plug_in_objects_and_mappings_build_the_same_env(pair) -> None:
    market, span = pair
    knobs = {"costs": {"spread_bps": 4.0}, "risk": {"loss_cut": 0.1}, "episode": {"length": 30}}
    from_maps = TradingEnv(market, span, actions=TargetActions(market), **knobs)
    from_objects = TradingEnv(
        market,
        span,
        actions=TargetActions(market),
        costs=Frictions(spread_bps=4.0),
        risk=RiskRules(loss_cut=0.1),
        episode=EpisodeConfig(length=30),
    )
    for name in ("frictions", "risk", "episode"):
        assert getattr(from_maps, name) == getattr(from_objects, name), name


# ------------------------------------------------------------------ the evaluation env
def test_the_evaluation_env_is_float64_uncompiled_over_the_whole_split(configs, pair) -> None:
    market, span = pair
    training = {**configs["dual_ticker"], "dtype": "float32", "compile": True, "num_envs": 64}
    training = with_section(training, "episode", length=10, random_start=True)
    factory = checked_factory(training, market)
    env = factory(span, num_envs=3, evaluation=True)
    assert env.evaluation and not env.compiled and env._step_fn == env._step_outputs
    assert env.acct_dtype == torch.float64 and env.num_envs == 3
    assert env.episode.length is None and not env.episode.random_start
    assert env.length == span[1] - 1 - span[0]
    for _ in range(3):
        env.reset()
        assert (env.state["t"] == span[0]).all() and env.state["cash"].dtype == torch.float64
    train = factory(span, num_envs=2)  # the same factory's training env keeps the config
    assert train.length == 10 and train.acct_dtype == torch.float32 and train.compiled


# ------------------------------------------------------------------ config errors
@pytest.mark.parametrize(
    "section, key",
    [
        ("risk", "max_drawdown"),
        ("reward", "scael"),
        ("episode", "lenght"),
        ("costs", "fee_bps"),
        ("actions", "sizing_steps"),
    ],
)
def test_unknown_keys_raise_a_config_error_naming_the_key(configs, pair, section, key) -> None:
    market, span = pair
    cfg = with_section(configs["dual_ticker"], section, **{key: 1.0})
    with pytest.raises(ConfigError, match=rf"env\.{section}.*{key}"):
        build(market, span, cfg)


def test_unknown_env_keys_and_unknown_mapping_keys_raise(configs, pair) -> None:
    market, span = pair
    with pytest.raises(ConfigError, match=r"env\.num_env is not a setting of env"):
        build(market, span, {**configs["dual_ticker"], "num_env": 3})
    with pytest.raises(ConfigError, match=r"env\.episode.*start"):
        TradingEnv(market, span, actions=TargetActions, episode={"start": 3})
    with pytest.raises(ConfigError, match=r"env\.risk.*max_drawdown"):
        TradingEnv(market, span, actions=TargetActions, risk={"max_drawdown": 0.1})


@pytest.mark.parametrize("weights", [[1.0], [1.0, 1.0, 1.0], [1.0, -0.5], [0.0, 0.0]], ids=str)
def test_bad_reward_weights_raise_a_config_error(configs, pair, weights) -> None:
    market, span = pair
    cfg = with_section(configs["dual_ticker"], "reward", weights=weights)
    with pytest.raises(ConfigError, match=r"env\.reward\.weights.*NVDA, MSFT"):
        build(market, span, cfg)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"dtype": "float16"}, "env.dtype"),
        ({"capital": 0.0}, "env.capital"),
        ({"num_envs": 0}, "env.num_envs"),
        ({"reward": {"scale": 0.0}}, "env.reward.scale"),
        ({"risk": {"loss_cut": -0.1}}, "env.risk.loss_cut"),
        ({"costs": {"spread_bps": -1.0}}, "env.costs.spread_bps"),
        ({"episode": {"length": -5}}, "env.episode.length"),
        ({"actions": {"levels": []}}, "env.actions.levels"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_values_raise_a_config_error(configs, pair, change, match) -> None:
    market, span = pair
    cfg = dict(configs["dual_ticker"])
    for key, value in change.items():
        cfg = with_section(cfg, key, **value) if isinstance(value, dict) else {**cfg, key: value}
    with pytest.raises(ConfigError, match=match):
        build(market, span, cfg)


@pytest.mark.parametrize("override", ["actions=options", "reward=sortino"])
def test_an_unknown_group_option_names_the_available_ones(override) -> None:
    group = override.split("=")[0]
    with pytest.raises(MissingConfigException, match=rf"{group}/{override.split('=')[1]}"):
        env_cfg("dual_ticker", [override])


def test_num_envs_auto_must_be_resolved_before_the_env_is_built(configs, pair) -> None:
    market, span = pair
    cfg = {**configs["dual_ticker"], "num_envs": "auto", "auto_envs_cap": 256}
    factory = checked_factory(cfg, market)
    assert factory.requested_num_envs == "auto" and factory.auto_envs_cap == 256
    with pytest.raises(ConfigError, match=r"env\.num_envs is 'auto'.*env\.auto_envs_cap"):
        factory(span)
    with pytest.raises(ConfigError, match=r"env\.num_envs is 'auto'"):
        TradingEnv(market, span, actions=TargetActions, num_envs="auto")
    assert (
        factory(span, num_envs=4).num_envs == 4 and factory(span, num_envs=4).auto_envs_cap == 256
    )


def test_tickers_other_than_the_markets_raise_a_config_error(configs, pair) -> None:
    market, span = pair
    with pytest.raises(ConfigError, match=r"env\.tickers is \[NVDA\].*\[NVDA, MSFT\]"):
        build(market, span, configs["single_ticker"])
    with pytest.raises(ConfigError, match=r"env\.tickers"):
        TradingEnv(market, span, actions=TargetActions, tickers=["MSFT", "NVDA"])
    assert build(market, span, configs["dual_ticker"]).tickers == ("NVDA", "MSFT")


def test_a_split_too_short_for_the_window_raises(configs, pair) -> None:
    market, _ = pair
    cfg = with_section(configs["dual_ticker"], "episode", window=10)
    with pytest.raises(ConfigError, match=r"env\.episode\.window=10"):
        build(market, (0, 10), cfg)


def test_episode_length_zero_raises(configs, pair) -> None:
    market, span = pair
    cfg = with_section(configs["dual_ticker"], "episode", length=0)
    with pytest.raises(ConfigError, match="env.episode.length"):
        build(market, span, cfg)


@pytest.mark.parametrize("window", [0, -2])
def test_episode_window_below_one_raises(configs, pair, window) -> None:
    market, span = pair
    cfg = with_section(configs["dual_ticker"], "episode", window=window)
    with pytest.raises(ConfigError, match="window"):
        build(market, span, cfg)


def test_plain_mappings_for_plug_ins_are_refused_with_the_group_to_use(pair) -> None:
    market, span = pair
    with pytest.raises(ConfigError, match="env/actions="):
        TradingEnv(market, span, actions={"levels": [0.0, 1.0]})
    with pytest.raises(ConfigError, match="env/reward="):
        TradingEnv(market, span, actions=TargetActions, reward={"scale": 1.0})
    with pytest.raises(ConfigError, match="hydra.utils.instantiate"):
        TradingEnv(market, span, actions=TargetActions, risk={"_target_": "envs.risk.RiskRules"})


# ------------------------------------------------------------------ light modules
def test_config_modules_import_without_torch() -> None:
    code = (
        "import sys\n"
        "import envs.frictions, envs.risk, envs.episode, envs.protocol, envs.factory\n"
        "heavy = sorted(m for m in ('torch', 'torchrl', 'tensordict', 'pytorch_lightning',"
        " 'torchmetrics') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported {out.stdout.strip()}"
    # ... and their config dataclasses check values without torch either.
    check = (
        "import sys\n"
        "from envs.risk import RiskRules\n"
        "from envs.frictions import Frictions\n"
        "from envs.episode import EpisodeConfig\n"
        "RiskRules(loss_cut=0.1), Frictions.from_config({'scale': 0.5}), EpisodeConfig(length=None)\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", check], check=True)


def test_env_factory_helper_uses_the_markets_tickers(pair) -> None:
    market, span = pair
    env = env_factory(market)(span, num_envs=1)  # single_ticker's actions over the pair
    assert env.tickers == ("NVDA", "MSFT") and env.action_spec.n == 9
