"""Env configs of the tests, read from conf/env/ as Hydra's defaults list composes them."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

ENV_CONF = Path(__file__).resolve().parents[2] / "conf" / "env"


def env_cfg(name: str = "single_ticker", **sections) -> dict:
    """conf/env/<name>.yaml merged over single_ticker.yaml (as Hydra's defaults list does),
    with ``sections`` merged over its sections (dicts) or replacing its values."""
    cfg = OmegaConf.load(ENV_CONF / "single_ticker.yaml")
    if name != "single_ticker":
        extra = OmegaConf.load(ENV_CONF / f"{name}.yaml")
        extra.pop("defaults")
        cfg = OmegaConf.merge(cfg, extra)
    out = OmegaConf.to_container(cfg)
    for key, value in sections.items():
        out[key] = {**out[key], **value} if isinstance(value, dict) else value
    return out
