"""The checks of one job's composed config: a model was chosen, and everything else passes
:func:`experiments.config.check.check_config` with the job's own config folders (``conf/``
and its ``hydra.searchpath``) for "choose one of" messages."""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from datamodules.errors import ConfigError
from experiments.config.check import check_config
from experiments.config.groups import CONF_DIR, conf_dirs, options


def model_choices() -> list[str]:
    """Names accepted by ``+model=NAME`` (the files in conf/model/ and the search path)."""
    return options("model", job_conf_dirs())


def job_conf_dirs() -> list[Path]:
    """conf/ and the folders of this job's ``hydra.searchpath``."""
    extra: list[Path] = []
    if HydraConfig.initialized():
        for source in HydraConfig.get().runtime.config_sources:
            if source.schema == "file" and Path(source.path) != CONF_DIR:
                extra.append(Path(source.path))
    return conf_dirs(extra)


def group_options(key: str) -> list[str]:
    """The config files a dotted key can name (``env.actions`` -> conf/env/actions/*.yaml)."""
    return options(key.replace(".", "/"), job_conf_dirs())


def job_overrides() -> list[str]:
    """The task overrides of this job (``+model=NAME``, ``seed=1``...); none outside Hydra."""
    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


class NoModel(ConfigError):
    """The run names no model (``+model=NAME``)."""


def check_job(cfg: DictConfig) -> None:
    """Every check that needs only the config; raises :class:`UserInputError`."""
    if cfg.get("model") is None:
        choices = model_choices()
        raise NoModel(
            f"No model chosen: add +model=NAME, one of {', '.join(choices)} "
            f"(e.g. python -m experiments +model={choices[0] if choices else 'NAME'})."
        )
    check_config(cfg, group_options)
