"""Build a run's parts from its config: the market, the env factory, the simulator's costs, the
model family and its module. Every part is a plug-in built by ``_target_``; nothing here
knows which family, env, source or logger it builds."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig

from datamodules.errors import ConfigError, UserInputError
from datamodules.pipeline import MarketData
from envs.accounting import DEFAULT_CAPITAL
from envs.factory import EnvFactory
from envs.frictions import Frictions
from modules.family import ModelFamily, RunInputs, family_of
from modules.hardware import Hardware


def instantiate(config, **kwargs):
    """``hydra.utils.instantiate`` that lets our user-input errors through unwrapped, and
    turns Hydra's own errors (a target that fails to import or to construct) into one
    paragraph naming the config node."""
    try:
        return hydra_instantiate(config, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while cause is not None and not isinstance(cause, UserInputError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        first = " ".join(str(err).split())
        raise ConfigError(f"Could not build {_target_of(config)}: {first}") from err


def instantiate_plugins(node, key: str) -> list:
    """The objects a plug-in group builds: a ``_target_`` node gives one, a mapping of such
    nodes one per entry (a null entry is switched off), nothing gives none."""
    if node is None:
        return []
    if isinstance(node, Mapping | DictConfig) and "_target_" in node:
        return [instantiate(node)]
    if not isinstance(node, Mapping | DictConfig):
        raise ConfigError(f"{key} is {node!r}; give a mapping of configs with a _target_.")
    return [instantiate(value) for value in node.values() if value is not None]


def _target_of(config) -> str:
    target = config.get("_target_") if isinstance(config, DictConfig | dict) else None
    return f"_target_ {target}" if target else "a config node"


def build_data(cfg: DictConfig) -> MarketData:
    """The run's market, built by its data source (``cfg.data``'s ``_target_``)."""
    return instantiate(cfg.data).build()


def simulator(cfg: DictConfig) -> tuple[Frictions, float]:
    """The frictions and capital (currency) every backtest of the run is priced with: the
    env's ``costs`` and ``capital``, as its RL env trades with."""
    env = cfg.env
    return Frictions.from_config(env.get("costs")), float(env.get("capital", DEFAULT_CAPITAL))


def model_factory(cfg: DictConfig) -> tuple[functools.partial, type[ModelFamily]]:
    """The model config's partial (``_partial_: true``) and the family class behind it."""
    factory = instantiate(cfg.model)
    if not isinstance(factory, functools.partial):
        raise ConfigError(
            f"model._target_ {cfg.model.get('_target_')} built an object, not a partial: the "
            "run passes it runtime objects (env, data), so conf/model files set _partial_: true."
        )
    return factory, family_of(factory)


@dataclass(frozen=True)
class ModelPlan:
    """What a run will build, known before the market is: the model config's partial, its
    family class and the env plug-in (its partial)."""

    factory: functools.partial
    family: type[ModelFamily]
    env: Any


def plan_model(cfg: DictConfig, hardware: Hardware) -> ModelPlan:
    """Instantiate the model and env configs and run the family's own checks of the hardware
    and env (before any data is built)."""
    factory, family = model_factory(cfg)
    env = instantiate(cfg.env)
    family.check(factory, hardware, env)
    return ModelPlan(factory, family, env)


def build_module(
    cfg: DictConfig,
    hardware: Hardware,
    out: Path,
    plan: ModelPlan | None = None,
    data: MarketData | None = None,
) -> tuple[ModelFamily, MarketData]:
    """The untrained module of ``cfg.model`` over the run's market (``data``, or built from
    ``cfg.data``), and that market data."""
    plan = plan or plan_model(cfg, hardware)
    data = data if data is not None else build_data(cfg)
    frictions, capital = simulator(cfg)
    run = RunInputs(
        data=data,
        env=EnvFactory(plan.env, data.market),
        frictions=frictions,
        capital=capital,
        hardware=hardware,
        seed=int(cfg.seed),
        out=Path(out),
    )
    return plan.family.build(plan.factory, run), data
