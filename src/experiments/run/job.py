"""``train(cfg)``: build the run from its plug-ins, fit it, evaluate its best checkpoint on
validation and test beside the baselines with the shared simulator, report and export.

One sequence for every model family (:class:`modules.family.ModelFamily`): resolve the
hardware, build the market and the module, ``Trainer.fit``, validate and test the best
checkpoint, report (rank 0), export (``export.enabled``). A resumable family continues from
its own checkpoint with ``resume=``; a config with curriculum phases runs them in order
(:mod:`experiments.curriculum.runner`), each through this function again.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from datamodules.database.uri import mask_credentials, mask_secrets
from datamodules.errors import ConfigError
from datamodules.pipeline import MarketData
from datamodules.quality import QualityError
from experiments.config.job import job_overrides
from experiments.curriculum.context import PhaseContext
from experiments.run.artifacts import track_inputs, track_model
from experiments.run.build import build_module, plan_model
from experiments.run.console import config_tree
from experiments.run.report import report, write_quality
from experiments.run.tracking import finish, make_logger, run_name
from experiments.run.trainer import make_trainer
from experiments.runtime.allocator import keep_freed_memory
from experiments.runtime.checkpoints import intact_checkpoint
from experiments.runtime.hardware import checkpoint_world_size, resolve_hardware
from experiments.runtime.interrupt import GracefulInterrupt
from experiments.runtime.resume import RUN_ID_FILE
from experiments.runtime.sweep_resume import (
    has_checkpoint,
    in_multirun,
    set_aside_checkpoints,
    sweep_overrides,
)
from experiments.runtime.sweeps import job_threads
from modules.family import ModelFamily, world_size_mismatch
from modules.hardware import Hardware

log = logging.getLogger(__name__)


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
        "modules",
        "torchrl",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)


def save_config(cfg: DictConfig, out: Path, show: bool) -> None:
    """The config tree (printed when ``show``) and the resolved config, in the run folder; a
    resumed run keeps the first run's copies and writes its own beside its Hydra files.
    Passwords in URIs are masked (``***``) in both, and in Hydra's own files of the run."""
    keep = out / "resolved_config.yaml"
    where = (
        out / HydraConfig.get().output_subdir
        if keep.exists() and HydraConfig.initialized()
        else out
    )
    where.mkdir(parents=True, exist_ok=True)
    plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    masked = OmegaConf.create(mask_secrets(plain))
    config_tree(masked, save_to=where / "config_tree.txt", show=show)
    OmegaConf.save(masked, where / "resolved_config.yaml")
    mask_hydra_files(out)


def mask_hydra_files(out: Path) -> None:
    """Rewrite Hydra's saved config, overrides and (for a sweep) multirun.yaml with every URI
    password masked: a password typed on the command line never stays in the run folder."""
    if not HydraConfig.initialized():
        return
    hydra = HydraConfig.get()
    files = list((out / hydra.output_subdir).glob("*.yaml")) if hydra.output_subdir else []
    if hydra.mode == RunMode.MULTIRUN:
        files.append(Path(hydra.sweep.dir) / "multirun.yaml")
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text()
        if (masked := mask_credentials(text)) != text:
            part = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # jobs may run at once
            part.write_text(masked)
            os.replace(part, path)


def tags(cfg: DictConfig, module: ModelFamily, data: MarketData, phase) -> list[str]:
    """The model, data source, bar size, ``synthetic``, the curriculum and phase, then
    ``cfg.tags``."""
    out = [str(module.name), f"data:{data.market.source}", f"bar:{cfg.data.bar_size}"]
    if data.market.synthetic:
        out.append("synthetic")
    if phase is not None:
        out += [f"curriculum:{cfg.curriculum.name}", f"phase:{phase.name}"]
    return out + [str(t) for t in cfg.get("tags") or []]


def job_resume(cfg: DictConfig, out: Path, family: type) -> str | None:
    """What this job continues: ``cfg.resume`` for a single run; in a multirun, ``auto`` when
    the job's own folder holds a checkpoint (a sweep started again: see
    :mod:`experiments.runtime.sweep_resume`), else nothing. A family that cannot continue
    mid-training sets such checkpoints aside and starts the job again."""
    if not in_multirun():
        return cfg.get("resume")
    if not has_checkpoint(out):
        return None
    if not family.resumable:
        kept = set_aside_checkpoints(out)
        log.warning("%s cannot continue mid-training: %s kept, the job starts again", out, kept)
        return None
    return "auto"


def resume_point(
    cfg: DictConfig, out: Path, family: type, hw: Hardware, resume: str | None = None
) -> Path | None:
    """The checkpoint ``resume`` (default ``cfg.resume``) continues from (None: a fresh
    start); refused for families that cannot continue exactly, and with another number of
    processes than saved it. A damaged checkpoint is set aside and the next one used."""
    resume = cfg.get("resume") if resume is None else resume
    if resume in (None, ""):
        return None
    if not family.resumable:
        raise ConfigError(
            f"resume={resume}: {family.__name__} runs ({cfg.model.name}) do not continue "
            "from a checkpoint mid-training (a curriculum of them resumes phase by phase). "
            "Drop resume= to start a new run; finished runs keep their checkpoints and export."
        )
    ckpt = intact_checkpoint(out, f"resume={resume}", hw.rank)
    if ckpt is None and str(resume) != "auto":
        raise ConfigError(
            f"resume={resume}: no checkpoint in {out / 'checkpoints'}. Give the folder of a "
            "run that saved one (it holds checkpoints/last.ckpt or interrupted.ckpt), or "
            "resume=auto."
        )
    if ckpt is None:
        log.info(
            "resume=auto: no earlier run with these overrides has a checkpoint; starting fresh"
        )
        return None
    saved = checkpoint_world_size(ckpt)
    if saved != hw.world_size:
        raise ConfigError(f"resume={resume} ({ckpt}): {world_size_mismatch(saved, hw.world_size)}")
    log.info("resuming from %s", ckpt)
    return ckpt


def resume_command(out: Path) -> str:
    """The command that continues this run (for a sweep's job: the sweep's command with
    ``resume=`` its folder, which continues every job)."""
    if in_multirun():
        sweep = Path(HydraConfig.get().sweep.dir)
        args = [o for o in sweep_overrides(sweep) if not o.startswith("resume=")]
        return " ".join(
            [
                "python -m experiments -m",
                *map(shlex.quote, args),
                f"resume={shlex.quote(str(sweep))}",
            ]
        )
    args = [o for o in job_overrides() if not o.startswith("resume=")]
    return " ".join(
        ["python -m experiments", *map(shlex.quote, args), f"resume={shlex.quote(str(out))}"]
    )


def train(cfg: DictConfig, phase: PhaseContext | None = None) -> dict[str, float]:
    """Train and evaluate the run described by ``cfg``; return its final metrics ({} when
    interrupted and saved for resuming)."""
    out = phase.out if phase is not None else run_dir(cfg)
    quiet_logs(cfg)
    hw = resolve_hardware(cfg.hardware)
    keep_freed_memory(hw.keep_freed_mib)  # before the first large tensor
    if hw.rank == 0:
        show = bool(cfg.get("print_config", True)) and not cfg.get("quiet") and phase is None
        save_config(cfg, out, show)
    if phase is None and cfg.get("curriculum") is not None and cfg.curriculum.get("phases"):
        from experiments.curriculum.runner import run_curriculum

        return run_curriculum(cfg, out, hw, lambda phase_cfg, ctx: train(phase_cfg, phase=ctx))
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    if threads := job_threads(cfg):  # hardware.num_threads, or a joblib job's share of the cores
        torch.set_num_threads(threads)
    plan = plan_model(cfg, hw)
    resume = job_resume(cfg, out, plan.family)
    ckpt = resume_point(cfg, out, plan.family, hw, resume) if resume else None
    try:
        module, data = build_module(cfg, hw, out, plan)
    except QualityError as err:  # the report of what failed stays with the run
        if hw.rank == 0:
            write_quality(err.report, out)
        raise
    return fit(cfg, module, data, hw, out, ckpt, phase)


def fit(
    cfg: DictConfig,
    module: ModelFamily,
    data: MarketData,
    hw: Hardware,
    out: Path,
    ckpt: Path | None,
    phase: PhaseContext | None,
) -> dict[str, float]:
    """Fit ``module`` (from ``ckpt`` if resuming), then validate and test its best checkpoint,
    report and export."""
    if phase is not None and ckpt is None:
        phase.carry_in(module)
    id_file = out / RUN_ID_FILE
    run_id = id_file.read_text().strip() if ckpt is not None and id_file.exists() else None
    logger = (
        make_logger(cfg, out, tags(cfg, module, data, phase), run_id, phase)
        if hw.rank == 0
        else None
    )
    # A job started again from nothing (a sweep's job killed before its first checkpoint) is
    # a new logger run: the id file names the run a later resume continues.
    if logger is not None and logger.run_id and (ckpt is None or not id_file.exists()):
        id_file.write_text(str(logger.run_id))
    if hw.rank == 0:
        write_quality(data.quality, out, logger)
        track_inputs(logger, data, out, phase)  # the dataset artifact (and a phase's model)
    interrupt = GracefulInterrupt(out / "checkpoints") if type(module).resumable else None
    log.info(module.describe())
    try:
        extra: list[pl.Callback] = [interrupt] if interrupt is not None else []
        if phase is not None:
            extra += phase.callbacks()
        trainer = make_trainer(cfg, module, hw, out, logger, extra)
        datamodule = module.datamodule()
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt) if ckpt else None)
        if interrupt is not None and interrupt.saved is not None:
            if trainer.is_global_zero:
                where = f" in curriculum phase {phase.name}" if phase is not None else ""
                print(
                    f"Interrupted{where} at {module.progress()}; saved {interrupt.saved}.\n"
                    f"Resume with:\n  {resume_command(phase.root if phase is not None else out)}",
                    file=sys.stderr,
                )
            return {}
        if phase is not None:
            phase.save_end(module, trainer)
        # Validation and test metrics of the best checkpoint (by the family's monitor).
        best = trainer.checkpoint_callback.best_model_path or None
        trainer.validate(module, datamodule=datamodule, ckpt_path=best, verbose=False)
        results = scalars(trainer.callback_metrics)
        trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False)
        results.update(scalars(trainer.callback_metrics))
        if trainer.global_rank != 0:
            return results
        results = report(cfg, module, data, out, logger, results)
        if (cfg.get("export") or {}).get("enabled", False):
            from experiments.export.bundle import export_trained

            folder = export_trained(cfg, module, data, out)
            log.info("export: %s", folder)
            track_model(logger, folder, out, run_name(cfg, phase.name if phase else None))
        return results
    finally:
        if interrupt is not None:
            interrupt.restore()
        finish(logger)


def scalars(metrics: dict) -> dict[str, float]:
    """The one-number entries of Lightning's ``callback_metrics`` as floats."""
    return {k: float(v) for k, v in metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
