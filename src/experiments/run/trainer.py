"""The one place a Trainer is built, for every model family: checkpointing as the family
declares it, the family's own callbacks, the configured ``callbacks`` group, the progress bar,
and the strategy the family picks for the resolved hardware."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig

from datamodules.errors import ConfigError
from experiments.run.build import instantiate_plugins
from experiments.runtime.checkpoints import PeriodicCheckpoint
from modules.family import ModelFamily
from modules.hardware import Hardware


def configured_callbacks(cfg: DictConfig, logger) -> list[pl.Callback]:
    """The ``callbacks`` group's callbacks. Those that log (the learning-rate monitor) are left
    out when the run has no logger, as Lightning refuses them then."""
    callbacks = instantiate_plugins(cfg.get("callbacks"), "callbacks")
    for callback in callbacks:
        if not isinstance(callback, pl.Callback):
            raise ConfigError(
                f"callbacks: {type(callback).__name__} is not a Lightning Callback; every "
                "entry of the callbacks group builds a pytorch_lightning.Callback."
            )
    if logger is None:
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.LearningRateMonitor)]
    return callbacks


def make_trainer(
    cfg: DictConfig,
    module: ModelFamily,
    hardware: Hardware,
    out: Path,
    logger,
    extra: list[pl.Callback] = (),
) -> pl.Trainer:
    """The Trainer of ``module``: ``best-*.ckpt`` by the family's monitor and ``last.ckpt``
    (atomic, every ``last_every`` epochs) in ``out/checkpoints``, then the family's callbacks,
    ``extra`` (interrupt handling, curriculum carry), the configured callbacks and, unless
    ``quiet``, the family's progress bar."""
    plan = module.checkpointing()
    folder = Path(out) / "checkpoints"
    callbacks: list[pl.Callback] = [
        pl.callbacks.ModelCheckpoint(
            dirpath=folder,
            filename=plan.filename,
            auto_insert_metric_name=False,
            monitor=plan.monitor,
            mode=plan.mode,
            save_top_k=1,
            every_n_epochs=plan.every_n_epochs,
        ),
        PeriodicCheckpoint(folder, plan.last_every),
        *module.callbacks(),
        *extra,
        *configured_callbacks(cfg, logger),
    ]
    show = not cfg.get("quiet")
    if show:
        callbacks.append(module.progress_bar())
    strategy = module.strategy(hardware)
    # Lightning's model summary unless quiet or the family leaves it out (agents: their
    # describe() names the parameter count).
    settings = {"enable_model_summary": True, **module.trainer_settings()}
    settings["enable_model_summary"] = show and settings["enable_model_summary"]
    return pl.Trainer(
        accelerator=hardware.accelerator,
        devices=strategy.devices,
        num_nodes=strategy.num_nodes,
        strategy=strategy.strategy,
        precision=hardware.precision,
        deterministic=hardware.deterministic,
        logger=logger if logger is not None else False,
        callbacks=callbacks,
        enable_progress_bar=show,
        default_root_dir=str(out),
        **settings,
    )
