"""Learning-rate schedules built by Hydra with ``_partial_: true``."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


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
