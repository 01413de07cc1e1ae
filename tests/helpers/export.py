"""Helpers of the export and inference tests: a run's config composed from conf/ as the app
does, its (untrained, seeded) model built in-process, and its checkpoint saved into a run
folder, so a real export runs in seconds without training."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from experiments.config.groups import CONF_DIR
from experiments.export.bundle import export_model, rebuild

# Small markets and nets; every family's config, by test id.
BASE = [
    "data.synthetic.sessions=40",
    "data.window=16",
    "env.num_envs=2",
    "export.max_verify_samples=128",
    "paths.cache_dir=null",
    "logger=none",
]
FAMILIES = {
    "lstm": ["+model=lstm", "model.network.hidden_size=16"],
    "transformer": [
        "+model=transformer",
        "model.network.d_model=16",
        "model.network.num_heads=2",
        "model.network.dim_feedforward=32",
    ],
    "ppo_mlp": ["+model=ppo", "env=dual_ticker", "model.network.hidden_sizes=[16,16]"],
    "ppo_gru": [
        "+model=ppo",
        "env=dual_ticker",
        "model/network=gru",
        "++model.network.recurrent_size=8",
    ],
    "dqn": ["+model=dqn", "model.network.hidden_sizes=[16]"],
}


def compose_run(family: str, extra: list[str] = ()):
    """The resolved config of a tiny run of ``family``."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*BASE, *FAMILIES[family], *extra])
    OmegaConf.resolve(cfg)
    return cfg


def make_run(family: str, folder: Path, extra: list[str] = ()):
    """A run folder (resolved_config.yaml, checkpoints/last.ckpt of the seeded untrained model)
    and the module and data; returns (cfg, module, data)."""
    cfg = compose_run(family, extra)
    torch.manual_seed(0)
    module, data = rebuild(cfg, folder)
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, folder / "resolved_config.yaml", resolve=True)
    torch.save({"state_dict": module.state_dict()}, folder / "checkpoints" / "last.ckpt")
    return cfg, module, data


_BUNDLES: dict[str, tuple] = {}


def exported(family: str, root: Path):
    """(cfg, module, data, export folder) of ``family``, exported once per test session."""
    if family not in _BUNDLES:
        folder = root / family
        cfg, module, data = make_run(family, folder)
        bundle = export_model(
            cfg, module, data, folder, (folder / "resolved_config.yaml").read_text()
        )
        _BUNDLES[family] = (cfg, module, data, bundle)
    return _BUNDLES[family]


def copy_bundle(bundle: Path, to: Path) -> Path:
    """A copy of an export folder (to tamper with)."""
    shutil.copytree(bundle, to)
    return to
