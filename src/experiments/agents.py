"""Train a PPO or DQN agent from the config: envs over the splits, the Trainer, resume, report."""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from datamodules.config import dataclass_from
from datamodules.errors import ConfigError
from datamodules.pipeline import MarketData
from envs.factory import make_env
from experiments.checkpoints import PeriodicCheckpoint
from experiments.distributed import (
    agent_device,
    agent_strategy,
    check_agent_hardware,
    checkpoint_world_size,
    launch_rank,
    rank_zero_only_report,
    world_size,
)
from experiments.interrupt import GracefulInterrupt
from experiments.phase import PhaseContext
from experiments.resume import WANDB_ID_FILE, latest_checkpoint
from experiments.sizing import auto_num_envs
from experiments.wandb_run import finish, job_overrides, make_wandb_logger
from modules.agent import AgentModule, Evaluation, world_size_mismatch
from modules.dqn import DQNLossConfig, DQNModule, DQNOptimConfig, ExplorationConfig, ReplayConfig
from modules.policies import NetworkConfig
from modules.ppo import PPOLossConfig, PPOModule, PPOOptimConfig
from modules.rollouts import RunLength

log = logging.getLogger(__name__)
ALGORITHMS = ("ppo", "dqn")


def env_device(hw: DictConfig) -> torch.device:
    """Where this process's env and agent live: the hardware group's accelerator (in a
    multi-GPU run, the GPU Lightning gives this process)."""
    return agent_device(hw)


def prepare_processes(cfg: DictConfig, report):
    """Refuse hardware configs agents cannot train on (one paragraph naming the keys; see
    :mod:`experiments.distributed`) and return ``report`` run by global rank 0 only, so the
    other processes of a DDP run neither print nor write files."""
    check_agent_hardware(cfg)
    return rank_zero_only_report(report)


# From this many envs the per-op tensors are big enough for several intra-op threads to pay.
MANY_ENVS = 512


def agent_threads(cfg: DictConfig, num_envs: int) -> int | None:
    """Torch intra-op threads for an agent: ``hardware.num_threads`` if set; on CPU with fewer
    than ``MANY_ENVS`` envs, 1 (small batches are dominated by per-op overhead, and OpenMP's
    thread team slows to a crawl when another process shares the cores); else torch's
    default (None)."""
    if cfg.hardware.get("num_threads"):
        return int(cfg.hardware.num_threads)
    if env_device(cfg.hardware).type == "cpu" and num_envs < MANY_ENVS:
        return 1
    return None


def _num_envs(cfg: DictConfig, data: MarketData, device: torch.device) -> int:
    value = cfg.env.num_envs
    if str(value) != "auto":
        if int(value) < 1:
            raise ConfigError(f"env.num_envs is {value}; use >= 1 or auto.")
        return int(value)
    probe = make_env(data.market, data.split.train, OmegaConf.to_container(cfg.env), num_envs=1)
    return auto_num_envs(
        probe.obs_dim,
        data.market.num_assets,
        int(cfg.model.collector.frames_per_env),
        device,
        int(cfg.env.get("auto_envs_cap", 1024)),
    )


def build_agent(cfg: DictConfig, data: MarketData, device: torch.device) -> AgentModule:
    """The configured agent over an env on the training split of ``data``."""
    model = cfg.model
    algorithm = str(model.get("algorithm"))
    if algorithm not in ALGORITHMS:
        raise ConfigError(
            f"model.algorithm is '{algorithm}'; agents are one of {', '.join(ALGORITHMS)}."
        )
    env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
    num_envs = _num_envs(cfg, data, device)
    env = make_env(
        data.market,
        data.split.train,
        env_cfg,
        num_envs=num_envs,
        device=device,
        seed=int(cfg.seed),
    )
    evaluation = Evaluation(data.market, data.split.val, data.split.test, env_cfg, int(cfg.seed))
    collector = model.collector
    length = dataclass_from(
        RunLength,
        {k: collector.get(k) for k in ("iterations", "total_frames", "episodes")},
        "model.collector",
    )
    network = dataclass_from(NetworkConfig, model.network, "model.network")
    frames_per_env = int(collector.frames_per_env)
    processes = world_size(cfg.hardware)  # each runs num_envs envs; frames count over all
    if algorithm == "ppo":
        optim = OmegaConf.to_container(model.optim, resolve=True)
        if str(optim.get("minibatch_size")) == "auto":
            # A quarter of the iteration's frames, within the memory auto_num_envs allowed.
            optim["minibatch_size"] = max(1, num_envs * frames_per_env // 4)
            log.info("model.optim.minibatch_size=auto: %d frames", optim["minibatch_size"])
        return PPOModule(
            env,
            evaluation,
            length,
            frames_per_env,
            network,
            dataclass_from(PPOLossConfig, model.loss, "model.loss"),
            dataclass_from(PPOOptimConfig, optim, "model.optim"),
            world_size=processes,
        )
    return DQNModule(
        env,
        evaluation,
        length,
        frames_per_env,
        int(collector.get("learning_starts", 0)),
        network,
        dataclass_from(DQNLossConfig, model.loss, "model.loss"),
        dataclass_from(ReplayConfig, model.replay, "model.replay"),
        dataclass_from(DQNOptimConfig, model.optim, "model.optim"),
        dataclass_from(ExplorationConfig, model.exploration, "model.exploration"),
        world_size=processes,
    )


def _resume_point(cfg: DictConfig, out: Path) -> Path | None:
    if cfg.get("resume") in (None, ""):
        return None
    ckpt = latest_checkpoint(out)
    if ckpt is None and str(cfg.resume) != "auto":
        raise ConfigError(
            f"resume={cfg.resume}: no checkpoint in {out / 'checkpoints'}. Give the folder of a "
            "run that saved one (it holds checkpoints/last.ckpt or interrupted.ckpt), or "
            "resume=auto."
        )
    if ckpt is None:
        log.info(
            "resume=auto: no earlier run with these overrides has a checkpoint; starting fresh"
        )
    else:
        saved, now = checkpoint_world_size(ckpt), world_size(cfg.hardware)
        if saved != now:
            raise ConfigError(f"resume={cfg.resume} ({ckpt}): {world_size_mismatch(saved, now)}")
        log.info("resuming from %s", ckpt)
    return ckpt


def _trainer(cfg: DictConfig, module: AgentModule, out: Path, logger, interrupt) -> pl.Trainer:
    hw = cfg.hardware
    every_eval = int(cfg.model.eval.every_n_iterations)
    every_ckpt = int(cfg.model.checkpoint.every_n_iterations)
    if every_eval < 1 or every_ckpt < 1:
        raise ConfigError(
            "model.eval.every_n_iterations and model.checkpoint.every_n_iterations must be >= 1."
        )
    ckpt_dir = out / "checkpoints"
    callbacks: list[pl.Callback] = [
        pl.callbacks.ModelCheckpoint(
            dirpath=ckpt_dir,
            filename="best-iter{epoch:04d}",
            auto_insert_metric_name=False,
            monitor="val/score",
            mode="max",
            save_top_k=1,
            every_n_epochs=every_eval,
        ),
        PeriodicCheckpoint(ckpt_dir, every_ckpt),
        interrupt,
    ]
    show_bars = not cfg.get("quiet")
    if show_bars:
        callbacks.append(pl.callbacks.RichProgressBar(leave=False))
    max_iter = module.max_iterations
    # One process: Lightning's single device. Several: DDP without its wrapper (the agent
    # averages gradients itself), each process with the agent's thread count.
    strategy, devices, num_nodes = agent_strategy(hw, agent_threads(cfg, module.num_envs))
    return pl.Trainer(
        accelerator=hw.accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        use_distributed_sampler=False,
        precision=hw.precision,
        deterministic=bool(hw.get("deterministic", False)),
        max_epochs=max_iter if max_iter is not None else -1,
        check_val_every_n_epoch=every_eval,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        logger=logger if logger is not None else False,
        callbacks=callbacks,
        enable_progress_bar=show_bars,
        enable_model_summary=show_bars,
        default_root_dir=str(out),
    )


def resume_command(out: Path) -> str:
    """The command that continues this run."""
    args = [o for o in job_overrides() if not o.startswith("resume=")]
    return " ".join(
        ["python -m experiments", *map(shlex.quote, args), f"resume={shlex.quote(str(out))}"]
    )


def train_agent(
    cfg: DictConfig,
    data: MarketData,
    out: Path,
    tags: list[str],
    report,
    phase: PhaseContext | None = None,
) -> dict:
    """Fit the agent, then score its best checkpoint on validation and test. In a curriculum
    ``phase`` it starts from the previous phase's weights and saves its own at the end."""
    report = prepare_processes(cfg, report)
    device = env_device(cfg.hardware)
    module = build_agent(cfg, data, device)
    threads = agent_threads(cfg, module.num_envs)
    if threads is not None:
        torch.set_num_threads(threads)
        log.info("agent on CPU with %d envs: %d torch thread(s)", module.num_envs, threads)
    ckpt = _resume_point(cfg, out)
    if phase is not None and ckpt is None:
        phase.carry_in(module)
    id_file = out / WANDB_ID_FILE
    run_id = id_file.read_text().strip() if ckpt is not None and id_file.exists() else None
    logger = make_wandb_logger(cfg, out, tags, run_id=run_id, phase=phase)
    if logger is not None and launch_rank(cfg.hardware) == 0 and not id_file.exists():
        id_file.write_text(logger.experiment.id)
    interrupt = GracefulInterrupt(out / "checkpoints")
    log.info(
        "%s: %d envs x %d frames per iteration; length %s",
        cfg.model.name,
        module.num_envs,
        module.frames_per_env,
        module.length.describe,
    )
    try:
        trainer = _trainer(cfg, module, out, logger, interrupt)
        if phase is not None:
            trainer.callbacks.extend(phase.callbacks())
        trainer.fit(module, ckpt_path=str(ckpt) if ckpt is not None else None)
        if interrupt.saved is not None:
            if trainer.is_global_zero:
                where = f" in curriculum phase {phase.name}" if phase is not None else ""
                print(
                    f"Interrupted{where} at iteration {module.iteration} ({module.frames:,} "
                    f"frames); saved {interrupt.saved}.\nResume with:\n  "
                    f"{resume_command(phase.root if phase is not None else out)}",
                    file=sys.stderr,
                )
            return {}
        if phase is not None:
            phase.save_end(module, trainer)
        best = trainer.checkpoint_callback.best_model_path or None
        trainer.validate(module, ckpt_path=best, verbose=False)
        results = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        trainer.test(module, ckpt_path=best, verbose=False)
        results.update({k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1})
        return report(cfg, module, data, out, logger, results)
    finally:
        interrupt.restore()
        finish(logger)
