"""Env configs of the tests: the REAL conf/env configs, composed by Hydra's compose API.

The env group is composed alone, with ``conf/env`` as the config dir (so its nested groups
``actions`` and ``reward`` and the ``single_ticker`` base of ``dual_ticker`` and ``portfolio``
compose exactly as they do under ``env=NAME`` in the app), then ``overrides`` (Hydra syntax,
relative to the env group: ``actions=sizing``, ``reward.scale=1``, ``risk.loss_cut=0.05``) and
``sections`` (merged into a section when a dict, replacing the value otherwise) apply.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from datamodules.market import Market
from envs.factory import EnvFactory
from envs.trading import TradingEnv

CONF = Path(__file__).resolve().parents[2] / "conf"
# Every risk rule on, with tight loss cuts and profit locks: episodes end at different steps.
ENDING_RULES = {
    "max_daily_drawdown": 0.01,
    "drawdown_penalty": 1.0,
    "turnover_cap_hour": 3.0,
    "turnover_cap_session": 10.0,
    "loss_cut": 0.01,
    "profit_lock": 0.01,
    "max_gross_exposure": 1.0,
    "max_position": 1.0,
}
ENV_CONF = CONF / "env"


@functools.lru_cache(maxsize=256)
def _composed(name: str, overrides: tuple[str, ...]) -> dict:
    with initialize_config_dir(config_dir=str(ENV_CONF), version_base=None):
        cfg = compose(name, overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


def _with_sections(cfg: dict, sections: Mapping[str, Any]) -> dict:
    for key, value in sections.items():
        if isinstance(value, Mapping) and isinstance(cfg.get(key), Mapping):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def env_cfg(name: str = "single_ticker", overrides: Sequence[str] = (), **sections) -> dict:
    """conf/env/<name>.yaml as Hydra composes it (with ``overrides``), as a plain dict with
    its ``_target_``s, ``sections`` merged in.

    Build an env from it with Hydra, as the run does::

        build = hydra.utils.instantiate(cfg)          # functools.partial(TradingEnv, ...)
        env = build(market, span, num_envs=4)         # or EnvFactory(build, market)(span)

    The env checks ``tickers`` against the market's: pass ``tickers=None`` (any market) or
    ``tickers=list(market.tickers)`` unless the market holds the config's tickers.
    """
    return _with_sections(copy.deepcopy(_composed(name, tuple(overrides))), sections)


def env_config(
    name: str = "single_ticker", overrides: Sequence[str] = (), **sections
) -> DictConfig:
    """:func:`env_cfg` as a DictConfig (what ``cfg.env`` is in the app)."""
    return OmegaConf.create(env_cfg(name, overrides, **sections))


def env_factory(
    market: Market,
    cfg: str | Mapping = "single_ticker",
    overrides: Sequence[str] = (),
    **sections,
) -> EnvFactory:
    """The configured env over spans of ``market``: ``cfg`` names a conf/env config (composed
    with ``overrides`` and ``sections``) or is a composed one (a dict from :func:`env_cfg`, a
    DictConfig). The market's tickers replace the config's unless ``tickers`` is given in
    ``sections`` (or ``overrides``)."""
    if isinstance(cfg, str):
        config = env_cfg(cfg, overrides, **sections)
    else:
        if overrides:
            raise ValueError("overrides apply to a config name; merge sections into a dict")
        config = _with_sections(_plain(cfg), sections)
    if "tickers" not in sections and not any(o.startswith("tickers=") for o in overrides):
        config["tickers"] = list(market.tickers)
    return checked_factory(config, market)


def make_env(
    market: Market,
    span: tuple[int, int],
    cfg: str | Mapping = "single_ticker",
    num_envs: int | None = None,
    *,
    overrides: Sequence[str] = (),
    device: str = "cpu",
    seed: int = 0,
    evaluation: bool = False,
    **sections,
) -> TradingEnv:
    """An env over bars ``span`` of ``market`` (see :func:`env_factory`); ``num_envs`` None =
    the configured number."""
    factory = env_factory(market, cfg, overrides, **sections)
    return factory(span, num_envs=num_envs, device=device, seed=seed, evaluation=evaluation)


def _plain(cfg: Mapping) -> dict:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return copy.deepcopy(dict(cfg))


def set_keys(section: str, values: Mapping[str, Any]) -> list[str]:
    """Hydra overrides that set each of ``values`` under ``section`` (None -> null)."""

    def text(v: Any) -> str:
        if v is None:
            return "null"
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, (list, tuple)):
            return "[" + ",".join(text(x) for x in v) + "]"
        return str(v)

    return [f"{section}.{key}={text(value)}" for key, value in values.items()]


def checked_factory(config: Mapping, market: Market, key: str = "env") -> EnvFactory:
    """The env factory of an env config as the run builds it: the run's config check of the
    node (unknown keys, types, ranges), then its ``_target_`` instantiated."""
    from datamodules.errors import ConfigError
    from experiments.config.check import Checker
    from experiments.run.build import instantiate

    plain = _plain(config)
    checker = Checker()
    checker.target(plain, key)
    if checker.problems:
        raise ConfigError(checker.problems[0])
    return EnvFactory(instantiate(plain), market)
