"""The run's config composed in-process from conf/, as the app composes it."""

from __future__ import annotations

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import DictConfig

from experiments.config.groups import CONF_DIR
from experiments.config.resolvers import register_resolvers


def compose(*overrides: str, config_dir: str | None = None) -> DictConfig:
    """``conf/config.yaml`` composed with ``overrides`` (Hydra's compose API)."""
    register_resolvers()
    with initialize_config_dir(config_dir or str(CONF_DIR), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))
