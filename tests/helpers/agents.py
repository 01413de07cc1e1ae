"""Helpers of the RL agent tests (PPO, DQN, the agent base): small agents on the ``agent_data``
market of conftest, a quiet Trainer, and a recorder of what each training iteration logged.
Kept out of conftest so that other tests do not import Lightning."""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from datamodules.pipeline import MarketData
from helpers.envs import env_cfg, env_factory
from modules.agents.base import Evaluation
from modules.agents.dqn import DQNModule
from modules.agents.ppo import PPOModule

# Short episodes, so that training episodes end inside one small collector batch.
ENV = env_cfg(episode={"length": 10})
SMALL_NET = {"hidden_sizes": (16,), "recurrent_size": 8}


def env_and_evaluation(data: MarketData, num_envs: int = 8, seed: int = 0, env: dict = ENV):
    """A training env over the train split and the evaluation on val/test, as the run builds
    them from the env config."""
    factory = env_factory(data.market, env)
    trading = factory(data.split.train, num_envs=num_envs, seed=seed)
    return trading, Evaluation(factory, data.split.val, data.split.test, seed)


def ppo(
    data: MarketData,
    iterations: int | None = 1,
    frames_per_env: int = 16,
    num_envs: int = 8,
    network: dict | None = None,
    loss: dict | None = None,
    optim: dict | None = None,
    length: dict | None = None,
    seed: int = 0,
) -> PPOModule:
    """A small PPO agent: 8 envs x 16 frames, 2 epochs of 2 minibatches per iteration;
    ``length`` (a collector length such as ``{"episodes": 20}``) replaces ``iterations``."""
    torch.manual_seed(seed)
    env, evaluation = env_and_evaluation(data, num_envs, seed)
    return PPOModule(
        env,
        evaluation,
        network={**SMALL_NET, **(network or {})},
        collector={"frames_per_env": frames_per_env, **(length or {"iterations": iterations})},
        loss=loss or {},
        optim={"epochs": 2, "minibatch_size": 64, **(optim or {})},
    )


def dqn(
    data: MarketData,
    iterations: int = 1,
    frames_per_env: int = 8,
    num_envs: int = 8,
    learning_starts: int = 0,
    network: dict | None = None,
    loss: dict | None = None,
    replay: dict | None = None,
    optim: dict | None = None,
    exploration: dict | None = None,
    seed: int = 0,
) -> DQNModule:
    """A small DQN agent: 8 envs x 8 frames, 16 updates of 32 transitions per iteration."""
    torch.manual_seed(seed)
    env, evaluation = env_and_evaluation(data, num_envs, seed)
    return DQNModule(
        env,
        evaluation,
        network={**SMALL_NET, **(network or {})},
        collector={
            "frames_per_env": frames_per_env,
            "iterations": iterations,
            "learning_starts": learning_starts,
        },
        loss=loss or {},
        replay={"size": 1000, "batch_size": 32, **(replay or {})},
        optim={"updates_per_frame": 0.25, **(optim or {})},
        exploration={"decay_frames": 200, **(exploration or {})},
    )


def trainer(max_epochs: int, val_every: int | None = None, callbacks=()) -> pl.Trainer:
    """A quiet Trainer: no logger, checkpoints or sanity validation; validation every
    ``val_every`` iterations (None = never)."""
    return pl.Trainer(
        max_epochs=max_epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=val_every if val_every is not None else max_epochs + 1,
        log_every_n_steps=1,
        callbacks=list(callbacks),
    )


class Recorder(pl.Callback):
    """The metrics logged by each training iteration (a plain Lightning callback)."""

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append({k: float(v) for k, v in trainer.logged_metrics.items()})

    def series(self, key: str) -> list[float]:
        return [step[key] for step in self.steps]


def fit(module, iterations: int, val_every: int | None = None) -> Recorder:
    """Train ``module`` for ``iterations``; what each iteration logged."""
    recorder = Recorder()
    trainer(iterations, val_every, [recorder]).fit(module)
    return recorder


def snapshot(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}
