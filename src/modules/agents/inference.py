"""The inference paths of the RL agents, as the small ``nn.Module`` every export format holds.

- policy (MLP): ``observation (B, D)`` float32 -> ``action (B,)`` int64 (argmax),
  ``logits (B, N)``.
- recurrent policy (GRU/LSTM): ``observation (B, D)``, ``state (B, S, H)`` (zeros at the start
  of an episode) -> ``action``, ``logits``, ``new_state (B, S, H)``.
- Q-network: ``observation (B, D)`` -> ``action (B,)`` int64, ``q_values (B, N)``.
"""

from __future__ import annotations

import torch
from torch import nn


class PolicyInference(nn.Module):
    """Feed-forward policy: observation ``(B, D)`` -> (action ``(B,)`` int64, logits ``(B, N)``)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, observation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(observation)
        return logits.argmax(-1), logits


class RecurrentPolicyInference(nn.Module):
    """Recurrent policy, one step: (observation ``(B, D)``, state ``(B, S, H)``) -> (action,
    logits, new state). The caller restarts an episode by passing a zero state."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(
        self, observation: torch.Tensor, state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        is_init = torch.zeros(observation.shape[0], 1, dtype=torch.bool, device=observation.device)
        logits, new_state = self.net(observation, is_init, state)
        return logits.argmax(-1), logits, new_state


class QInference(nn.Module):
    """Q-network: observation ``(B, D)`` -> (greedy action ``(B,)`` int64, Q-values ``(B, N)``)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, observation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q_values = self.net(observation)
        return q_values.argmax(-1), q_values
