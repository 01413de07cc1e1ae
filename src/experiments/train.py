"""`train(cfg)`: build the market, train the configured model, evaluate it on the test split
beside buy-and-hold with the shared simulator, and log everything."""

from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from datamodules.errors import ConfigError, UserInputError
from datamodules.pipeline import MarketData
from datamodules.windows import WindowDataModule
from envs.frictions import Frictions
from envs.metrics import metrics_to_floats
from experiments.app import CONF_DIR
from experiments.console import config_tree, metrics_table
from experiments.distributed import launch_rank
from experiments.launchers import job_threads
from experiments.phase import PhaseContext
from experiments.plots import equity_plot
from experiments.wandb_run import finish, make_wandb_logger
from modules.forecast import REPORTED, ForecastModule

log = logging.getLogger(__name__)


def instantiate(config, **kwargs):
    """``hydra.utils.instantiate`` that lets our user-input errors through unwrapped."""
    try:
        return hydra_instantiate(config, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while cause is not None and not isinstance(cause, UserInputError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


def run_dir(cfg: DictConfig) -> Path:
    """This job's output folder (Hydra's), or ``outputs/adhoc`` outside Hydra."""
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.paths.output_root) / "adhoc"


def quiet_logs(cfg: DictConfig) -> None:
    """With ``quiet=true``: warnings only, from us and from the libraries."""
    warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")
    if not cfg.get("quiet"):
        return
    for name in (
        "",
        "pytorch_lightning",
        "lightning",
        "lightning.pytorch",
        "datamodules",
        "experiments",
        "torchrl",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)


def expand_network(cfg: DictConfig) -> None:
    """``model.network=gru`` (a name) becomes the preset conf/model/network/gru.yaml, as the
    config-group override ``model/network=gru`` would give."""
    network = cfg.model.get("network") if cfg.get("model") is not None else None
    if not isinstance(network, str):
        return
    presets = CONF_DIR / "model" / "network"
    path = presets / f"{network}.yaml"
    if not path.exists():
        names = ", ".join(sorted(p.stem for p in presets.glob("*.yaml")))
        raise ConfigError(f"model.network is '{network}'; choose one of {names}.")
    with open_dict(cfg):
        cfg.model.network = OmegaConf.load(path)


def train(cfg: DictConfig, phase: PhaseContext | None = None) -> dict[str, float]:
    """Train and evaluate the run described by ``cfg``; return its final metrics.

    A config with curriculum phases runs them in order (:mod:`experiments.curriculum`), each
    through this function again with its :class:`PhaseContext`."""
    out = phase.out if phase is not None else run_dir(cfg)
    quiet_logs(cfg)
    expand_network(cfg)
    check_hardware(cfg.hardware)
    # Lightning's DDP launcher starts ranks > 0 as copies of this command (LOCAL_RANK set);
    # SLURM and torchrun start every rank at once: the global rank decides who writes files.
    rank_zero = launch_rank(cfg.hardware) == 0
    if rank_zero:
        # A resumed run keeps the first run's copies and writes its own beside its Hydra files.
        keep = out / "resolved_config.yaml"
        where = (
            out / HydraConfig.get().output_subdir
            if keep.exists() and HydraConfig.initialized()
            else out
        )
        where.mkdir(parents=True, exist_ok=True)
        config_tree(
            cfg,
            save_to=where / "config_tree.txt",
            show=bool(cfg.get("print_config", True)) and not cfg.get("quiet") and phase is None,
        )
        OmegaConf.save(cfg, where / "resolved_config.yaml", resolve=True)
    if phase is None and cfg.get("curriculum") is not None and cfg.curriculum.get("phases"):
        from experiments.curriculum import run_curriculum

        return run_curriculum(cfg, out, lambda phase_cfg, ctx: train(phase_cfg, phase=ctx))
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    if threads := job_threads(cfg):  # hardware.num_threads, or a joblib job's share of the cores
        torch.set_num_threads(threads)

    kind = cfg.model.get("kind")
    if kind not in ("forecaster", "agent"):
        raise ConfigError(f"model.kind is '{kind}'; use forecaster or agent.")
    data: MarketData = instantiate(cfg.data)
    if kind == "agent":
        from experiments.agents import train_agent

        return train_agent(cfg, data, out, _tags(cfg, data), report_and_export, phase)
    return train_forecaster(cfg, data, out, rank_zero, phase)


def _tags(cfg: DictConfig, data: MarketData) -> list[str]:
    tags = [str(cfg.model.name), f"data:{cfg.data.source}", f"bar:{cfg.data.bar_size}"]
    if data.market.synthetic:
        tags.append("synthetic")
    if cfg.get("curriculum") is not None and cfg.curriculum.get("phases"):
        tags += [f"curriculum:{cfg.curriculum.name}", f"phase:{cfg.logger.get('job_type')}"]
    return tags + [str(t) for t in cfg.get("tags") or []]


def check_hardware(hw: DictConfig) -> None:
    """Refuse a GPU hardware config on a machine without a visible CUDA device."""
    if str(hw.accelerator) in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"hardware.accelerator is '{hw.accelerator}' but no CUDA device is visible "
            "(torch.cuda.is_available() is False). Use hardware=cpu (or hardware=ddp_cpu), or "
            "run on a machine with a GPU and a CUDA build of torch."
        )


def _trainer(
    cfg: DictConfig, out: Path, logger, monitor: str, extra: list[pl.Callback]
) -> pl.Trainer:
    hw = cfg.hardware
    strategy = instantiate(hw.strategy) if isinstance(hw.strategy, DictConfig) else hw.strategy
    callbacks: list[pl.Callback] = [
        pl.callbacks.ModelCheckpoint(
            dirpath=out / "checkpoints",
            filename="epoch{epoch:03d}",
            auto_insert_metric_name=False,
            monitor=monitor,
            mode="min",
            save_last=True,
            save_top_k=1,
        )
    ]
    patience = cfg.model.trainer.get("early_stopping_patience")
    if patience:
        callbacks.append(
            pl.callbacks.EarlyStopping(monitor=monitor, patience=int(patience), mode="min")
        )
    callbacks += extra
    if logger is not None:
        callbacks.append(pl.callbacks.LearningRateMonitor(logging_interval="step"))
    show_bars = not cfg.get("quiet")
    if show_bars:
        callbacks.append(pl.callbacks.RichProgressBar(leave=True))
    limit = cfg.model.trainer.get("limit_train_batches")
    return pl.Trainer(
        accelerator=hw.accelerator,
        devices=hw.devices,
        num_nodes=hw.get("num_nodes", 1),
        strategy=strategy,
        precision=hw.precision,
        deterministic=bool(hw.get("deterministic", False)),
        max_epochs=int(cfg.model.trainer.max_epochs),
        max_steps=int(cfg.model.trainer.get("max_steps") or -1),
        gradient_clip_val=cfg.model.trainer.get("gradient_clip_val"),
        log_every_n_steps=int(cfg.model.trainer.get("log_every_n_steps", 10)),
        limit_train_batches=limit if limit is not None else 1.0,
        logger=logger if logger is not None else False,
        callbacks=callbacks,
        enable_progress_bar=show_bars,
        enable_model_summary=show_bars,
        default_root_dir=str(out),
    )


def train_forecaster(
    cfg: DictConfig,
    data: MarketData,
    out: Path,
    rank_zero: bool,
    phase: PhaseContext | None = None,
) -> dict[str, float]:
    """Fit a ForecastModule on windows, then backtest its test-split signal. In a curriculum
    ``phase`` it starts from the previous phase's weights and saves its own at the end."""
    module, dm = build_forecaster(cfg, data, out)
    if phase is not None:
        phase.carry_in(module)
    logger = make_wandb_logger(cfg, out, _tags(cfg, data), phase=phase) if rank_zero else None
    try:
        trainer = _trainer(cfg, out, logger, "val/loss", phase.callbacks() if phase else [])
        trainer.fit(module, datamodule=dm)
        if phase is not None:
            phase.save_end(module, trainer)
        # Validation and test metrics of the best checkpoint (by val/loss), not the last epoch.
        best = "best" if trainer.checkpoint_callback.best_model_path else None
        trainer.validate(module, datamodule=dm, ckpt_path=best, verbose=False)
        results = _scalars(trainer.callback_metrics)
        trainer.test(module, datamodule=dm, ckpt_path=best, verbose=False)
        results.update(_scalars(trainer.callback_metrics))
        if trainer.global_rank != 0:
            return results
        return report_and_export(cfg, module, data, out, logger, results)
    finally:
        finish(logger)


def build_forecaster(
    cfg: DictConfig, data: MarketData, out: Path
) -> tuple[ForecastModule, WindowDataModule]:
    """The untrained ForecastModule of ``cfg.model`` and the window DataModule over ``data``
    (also used by :mod:`experiments.export` to rebuild a run's model from its config)."""
    task = cfg.model.task
    dm = WindowDataModule(data, int(task.num_classes), float(task.get("flat_threshold_bps", 0.0)))
    extra = {}
    if "min_period_minutes" in cfg.model.network and cfg.model.network.min_period_minutes is None:
        extra["min_period_minutes"] = data.market.bar_minutes  # one bar
    net = instantiate(
        cfg.model.network,
        input_size=dm.input_size,
        num_assets=dm.num_assets,
        num_classes=int(task.num_classes),
        **extra,
    )
    module = ForecastModule(
        net=net,
        optimizer=instantiate(cfg.model.optimizer),
        scheduler=instantiate(cfg.model.scheduler) if cfg.model.get("scheduler") else None,
        num_classes=int(task.num_classes),
        signal=str(cfg.model.signal.mode),
        long_only=bool(cfg.model.signal.long_only),
        frictions=Frictions(**cfg.env.costs),
        capital=float(cfg.env.capital),
        attention_every_n_epochs=int(cfg.model.get("attention_every_n_epochs", 0)),
        plot_dir=str(out / "plots"),
    )
    return module, dm


def report_and_export(
    cfg: DictConfig,
    module,
    data: MarketData,
    out: Path,
    logger,
    results: dict[str, float],
) -> dict[str, float]:
    """:func:`report`, then (with ``export.enabled``) write the run's verified ``export/``
    bundle (:mod:`experiments.export`); an export failure fails the run. Rank zero only."""
    results = report(cfg, module, data, out, logger, results)
    if (cfg.get("export") or {}).get("enabled", False):
        from experiments.export import export_trained

        bundle = export_trained(cfg, module, data, out)
        log.info("export: %s", bundle)
    return results


def report(
    cfg: DictConfig,
    module,
    data: MarketData,
    out: Path,
    logger,
    results: dict[str, float],
) -> dict[str, float]:
    """Print test metrics beside the baselines; write metrics.json, the equity plot and
    equity_test.csv (timestamp, then the equity of the model and of each baseline).

    ``module.reports["test"]`` maps ``strategy`` (the model) and each baseline (forecasters:
    buy_and_hold; agents: also flat and random) to its test-split :class:`BacktestResult`.
    """
    test = module.reports["test"]
    scored = {
        name: metrics_to_floats({k: v[0] for k, v in res.metrics.items()})
        for name, res in test.items()
    }
    ours = scored["strategy"]
    market = data.market
    name = str(cfg.model.name)
    title = f"{name} on {', '.join(market.tickers)} ({cfg.data.source}, {cfg.data.bar_size}) - test split"
    columns = {name if k == "strategy" else k: v for k, v in scored.items()}
    if not cfg.get("quiet"):
        metrics_table(title, columns, [k for k in (*REPORTED, "periods_per_year") if k in ours])
    equity = {k: res.equity[0].cpu().numpy() for k, res in test.items()}
    plot = equity_plot(
        out / "plots" / "equity_test.png",
        test["strategy"].timestamps,
        {(name if k == "strategy" else k.replace("_", " ")): v for k, v in equity.items()},
        title + (" [synthetic data]" if market.synthetic else ""),
    )
    # The same curves as numbers, for `python -m experiments.compare`: timestamp, strategy, baselines.
    import polars

    polars.DataFrame({"timestamp": test["strategy"].timestamps, **equity}).write_csv(
        out / "equity_test.csv"
    )
    summary = {
        "model": name,
        "tickers": list(market.tickers),
        "synthetic": market.synthetic,
        "test": {k: _finite(v) for k, v in scored.items()},
        "logged": _finite(results),
        "periods_per_year": market.periods_per_year,
        "split": {"train": data.split.train, "val": data.split.val, "test": data.split.test},
    }
    if getattr(module, "risk_totals", None):
        summary["risk_triggers_test"] = dict(module.risk_totals)
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    if logger is not None:
        from PIL import Image

        logger.log_image(key="test/equity_curve", images=[Image.open(plot)])
        for k, values in scored.items():
            prefix = "test/" if k == "strategy" else f"test/{k}_"
            logger.experiment.summary.update(
                {f"{prefix}{m}": v for m, v in _finite(values).items()}
            )
    log.info("run folder: %s", out)
    return results


def _scalars(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if getattr(v, "numel", lambda: 1)() == 1}


def _finite(values: dict[str, float]) -> dict[str, float | None]:
    return {k: (v if math.isfinite(v) else None) for k, v in values.items()}
