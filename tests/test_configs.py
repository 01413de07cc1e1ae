"""Every shipped config composes, passes the config check and builds its plug-ins: each preset
of conf/experiment/, each curriculum (every phase composed) with the models it fits, each
search space of conf/hparams_search/ at every value a trial can take, and every option of
every plug-in group."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from helpers.configs import compose
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.utils import get_class

from datamodules.errors import ConfigError
from datamodules.sources.base import BarSource
from experiments.config.groups import CONF_DIR
from experiments.config.job import check_job
from experiments.config.resolvers import register_resolvers
from experiments.config.sweep import sweep_jobs
from experiments.curriculum.compose import compose_phase
from experiments.curriculum.phases import parse_phases
from experiments.curriculum.runner import phase_overrides
from experiments.run.build import instantiate, instantiate_plugins
from modules.family import family_of


def names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def build_plugins(cfg) -> None:
    """Instantiate each plug-in group's ``_target_`` as the run does (no data is read)."""
    source = instantiate(cfg.data)
    assert isinstance(source, BarSource)
    env = instantiate(cfg.env)
    assert isinstance(env, functools.partial) and callable(env)
    family_of(instantiate(cfg.model))
    if cfg.get("logger") is not None:
        assert isinstance(instantiate(cfg.logger), functools.partial)
    instantiate_plugins(cfg.get("callbacks"), "callbacks")


@pytest.mark.parametrize("preset", names("experiment"))
def test_every_experiment_preset_passes_the_check_and_builds(preset):
    cfg = compose(f"+experiment={preset}")
    check_job(cfg)
    build_plugins(cfg)


@pytest.mark.parametrize("model", names("model"))
@pytest.mark.parametrize("group", ["data", "env", "logger", "callbacks", "hardware"])
def test_every_option_of_every_group_composes_with_every_model(group, model):
    for option in names(group):
        if group == "data" and option == "common":  # the keys the sources share: not one
            with pytest.raises(ConfigError, match="data has no _target_"):
                check_job(compose(f"+model={model}", "data=common"))
            continue
        if group == "hardware" and option in ("gpu", "multi_gpu"):
            continue  # needs a CUDA device to build; checked in test_hardware_configs_check
        extra = (
            {
                "files": ["data.files={NVDA:bars.csv}"],
                "csv": ["data.files={NVDA:bars.csv}"],
                "parquet": ["data.files={NVDA:bars.csv}"],
                "sample": ["env.tickers=[MSFT]"],
            }.get(option, [])
            if group == "data"
            else []
        )
        cfg = compose(f"+model={model}", f"{group}={option}", *extra)
        if option in ("files", "csv", "parquet"):
            with pytest.raises(ConfigError, match="bars.csv"):  # a file that is not there
                check_job(cfg)
            continue
        check_job(cfg)
        build_plugins(cfg)


@pytest.mark.parametrize("option", ["gpu", "multi_gpu"])
def test_the_gpu_hardware_configs_pass_the_config_check(option):
    check_job(compose("+model=ppo", f"hardware={option}"))


def _fitting_models(curriculum: str) -> list[str]:
    fits = []
    for model in names("model"):
        try:
            check_job(compose(f"+model={model}", f"curriculum={curriculum}"))
            fits.append(model)
        except ConfigError as err:
            assert "does not use" in str(err), str(err)
    return fits


@pytest.mark.parametrize("curriculum", [n for n in names("curriculum") if n != "none"])
def test_every_curriculum_fits_some_model_and_composes_every_phase(curriculum):
    fits = _fitting_models(curriculum)
    assert fits, f"no model takes the length units of curriculum {curriculum}"
    register_resolvers()
    for model in fits:
        base = [f"+model={model}", f"curriculum={curriculum}"]
        if curriculum == "dual_ticker_3phase":
            base.append("env=dual_ticker")
        cfg = compose(*base)
        family = get_class(cfg.model._target_)
        phases = parse_phases(cfg.curriculum, family.lengths)
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            for phase in phases:
                added = phase_overrides(cfg, family, phase, Path("outputs/runs/x/y"))
                phase_cfg = compose_phase(base, added, phase.name)  # composed and checked
                build_plugins(phase_cfg)


@pytest.mark.parametrize("preset", names("hparams_search"))
def test_every_value_of_every_search_space_passes_the_check(preset):
    register_resolvers()
    model = preset.split("_")[0]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        config = hydra_compose(
            "config",
            overrides=[f"+model={model}", f"hparams_search={preset}"],
            return_hydra_config=True,
        )
        jobs = sweep_jobs(config)
        assert len(jobs) > len(config.hydra.sweeper.params)  # the base and each value
        for job in jobs:
            cfg = hydra_compose("config", overrides=job)
            check_job(cfg)
