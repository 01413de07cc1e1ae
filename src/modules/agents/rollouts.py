"""The TorchRL collector as Lightning's data source, and episode bookkeeping.

One Lightning epoch is one training iteration: :class:`Rollouts` yields exactly one collector
batch (``num_envs x frames_per_env`` frames, shaped ``[num_envs, frames_per_env]``), the
module learns from it, and the epoch ends. Checkpoints therefore fall between iterations,
where everything needed to continue exactly (weights, optimizers, env and collector state,
RNG, replay buffer) is at rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from tensordict import TensorDictBase


class Rollouts:
    """An iterable of length 1 per epoch: the next batch of the collector, made on demand."""

    def __init__(self, collect: Callable[[], TensorDictBase]) -> None:
        self.collect = collect

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[TensorDictBase]:
        yield self.collect()


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
