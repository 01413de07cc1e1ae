"""The TorchRL collector as Lightning's data source, the run's length, and episode bookkeeping.

One Lightning epoch is one training iteration: :class:`Rollouts` yields exactly one collector
batch (``num_envs x frames_per_env`` frames, shaped ``[num_envs, frames_per_env]``), the
module learns from it, and the epoch ends. Checkpoints therefore fall between iterations,
where everything needed to continue exactly (weights, optimizers, env and collector state,
RNG, replay buffer) is at rest.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from tensordict import TensorDictBase

from datamodules.errors import ConfigError


class Rollouts:
    """An iterable of length 1 per epoch: the next batch of the collector, made on demand."""

    def __init__(self, collect: Callable[[], TensorDictBase]) -> None:
        self.collect = collect

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[TensorDictBase]:
        yield self.collect()


@dataclass(frozen=True)
class RunLength:
    """How long an agent trains. The first of these that is set wins: ``iterations`` (collector
    batches; every process runs that many), then ``total_frames`` (env steps summed over envs
    and processes, rounded up to whole iterations), then ``episodes`` (completed training
    episodes summed over processes; the run stops at the end of the iteration that completes
    them). ``max_iterations`` takes the frames of one iteration over all processes."""

    iterations: int | None = None
    total_frames: int | None = None
    episodes: int | None = None

    def __post_init__(self) -> None:
        for key in ("iterations", "total_frames", "episodes"):
            value = getattr(self, key)
            if value is not None and int(value) < 1:
                raise ConfigError(f"model.collector.{key} is {value}; use a number >= 1 or null.")
        if self.iterations is None and self.total_frames is None and self.episodes is None:
            raise ConfigError(
                "Set one of model.collector.iterations, model.collector.total_frames or "
                "model.collector.episodes to say how long the agent trains."
            )

    def max_iterations(self, frames_per_batch: int) -> int | None:
        """Iterations to run, or None when the length is in episodes (open-ended)."""
        if self.iterations is not None:
            return int(self.iterations)
        if self.total_frames is not None:
            return max(1, math.ceil(int(self.total_frames) / frames_per_batch))
        return None

    @property
    def describe(self) -> str:
        if self.iterations is not None:
            return f"{self.iterations} iterations"
        if self.total_frames is not None:
            return f"{self.total_frames:,} frames"
        return f"{self.episodes} episodes"


class EpisodeTracker:
    """Running returns of every env across batches; the returns of episodes that ended."""

    def __init__(self, num_envs: int, device: torch.device) -> None:
        self.running = torch.zeros(num_envs, device=device)
        self.completed = 0

    def update(self, reward: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        """``reward`` and ``done`` shaped (N, T, 1): the returns of the episodes that ended."""
        reward, done = reward.squeeze(-1), done.squeeze(-1)
        finished = []
        running = self.running
        for t in range(reward.shape[1]):
            running = running + reward[:, t]
            ended = done[:, t]
            finished.append(torch.where(ended, running, torch.full_like(running, torch.nan)))
            running = torch.where(ended, torch.zeros_like(running), running)
        self.running = running
        returns = torch.stack(finished, dim=1)
        returns = returns[~torch.isnan(returns)]
        self.completed += int(returns.numel())
        return returns

    def state(self) -> dict:
        return {"running": self.running.clone(), "completed": self.completed}

    def load(self, state: dict) -> None:
        self.running = state["running"].to(self.running.device)
        self.completed = int(state["completed"])
