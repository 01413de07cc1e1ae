"""The inference path of a forecaster, as the small ``nn.Module`` every export format holds:
``window (B, L, F_in)`` float32 (normalised features, asset-major, then calendar features), and
for nets that use it ``age (B, L)`` float32 minutes before the decision bar ->
``probabilities (B, A, C)`` (softmax of the logits)."""

from __future__ import annotations

import torch
from torch import nn


class ForecasterInference(nn.Module):
    """Window of normalised features (and, if the net uses it, ages in minutes) -> class
    probabilities ``(B, A, C)``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.uses_age = bool(net.uses_age)

    def forward(self, window: torch.Tensor, age: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(window, age if self.uses_age else None).softmax(-1)
