"""Learning-rate schedules built by Hydra with ``_partial_: true``."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from datamodules.errors import ConfigError
from modules.agents.config import LR_SCHEDULES


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_fraction: float = 0.05,
    min_lr_ratio: float = 0.05,
) -> LambdaLR:
    """Linear warm-up over ``warmup_fraction`` of the optimizer steps, then cosine decay.

    The learning rate goes from ~0 to the optimizer's lr, then down to ``min_lr_ratio`` x lr
    at ``total_steps`` (the Trainer's estimated stepping batches). Stepped every batch.
    """
    total = max(int(total_steps), 1)
    warmup = max(int(total * warmup_fraction), 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


SCHEDULES = LR_SCHEDULES


def lr_lambda(kind: str, total_steps: int | None, key: str):
    """The factor of an agent's learning rate per iteration, or None for ``constant``.

    ``linear`` goes from 1 to 0 over ``total_steps`` iterations, ``cosine`` from 1 to 0 along
    half a cosine. A run whose length is in episodes has no known end, so only ``constant``
    applies to it.
    """
    if kind not in SCHEDULES:
        raise ConfigError(f"{key} is '{kind}'; choose one of {', '.join(SCHEDULES)}.")
    if kind == "constant":
        return None
    if total_steps is None:
        raise ConfigError(
            f"{key} is '{kind}', but the run's length is in episodes, so it has no known last "
            "iteration. Set model.collector.total_frames or iterations, or use constant."
        )
    total = max(int(total_steps), 1)
    if kind == "linear":
        return lambda step: max(0.0, 1.0 - step / total)
    return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step / total, 1.0)))
