"""The inference path of each model family as a small ``nn.Module``, the thing every export
format holds.

- forecaster: ``window (B, L, F_in)`` float32 (normalised features, asset-major, then calendar
  features), and for the Transformer also ``age (B, L)`` float32 minutes before the decision
  bar -> ``probabilities (B, A, C)`` (softmax of the logits).
- policy (PPO, MLP): ``observation (B, D)`` float32 -> ``action (B,)`` int64 (argmax),
  ``logits (B, N)``.
- recurrent policy (PPO, GRU/LSTM): ``observation (B, D)``, ``state (B, S, H)`` (zeros at the
  start of an episode) -> ``action``, ``logits``, ``new_state (B, S, H)``.
- Q-network (DQN): ``observation (B, D)`` -> ``action (B,)`` int64, ``q_values (B, N)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


class ForecasterInference(nn.Module):
    """Window of normalised features (and, if ``uses_age``, ages in minutes) -> class
    probabilities ``(B, A, C)``."""

    def __init__(self, net: nn.Module, uses_age: bool) -> None:
        super().__init__()
        self.net = net
        self.uses_age = uses_age

    def forward(self, window: torch.Tensor, age: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(window, age if self.uses_age else None).softmax(-1)


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


@dataclass(frozen=True)
class Signature:
    """Names and per-sample shapes (without the batch dim) of a wrapper's inputs and outputs."""

    inputs: dict[str, tuple[int, ...]]
    outputs: dict[str, tuple[int, ...]]
    input_dtypes: dict[str, str]
    output_dtypes: dict[str, str]

    def example(self, batch: int = 2) -> tuple[torch.Tensor, ...]:
        """Example inputs (zeros) with batch size ``batch``, for tracing and export."""
        return tuple(torch.zeros(batch, *shape) for shape in self.inputs.values())

    def describe(self) -> dict:
        """JSON-ready: each name with its shape (``"B"`` for the batch dim) and dtype."""
        return {
            "inputs": [
                {"name": k, "shape": ["B", *v], "dtype": self.input_dtypes[k]}
                for k, v in self.inputs.items()
            ],
            "outputs": [
                {"name": k, "shape": ["B", *v], "dtype": self.output_dtypes[k]}
                for k, v in self.outputs.items()
            ],
        }


def forecaster_wrapper(
    net: nn.Module, window: int, input_size: int, num_assets: int, num_classes: int
) -> tuple[nn.Module, Signature]:
    """The inference wrapper of a forecaster net and its signature (``age`` only if the net
    uses it: the Transformer)."""
    uses_age = hasattr(net, "time_encoding")
    inputs = {"window": (window, input_size)}
    if uses_age:
        inputs["age"] = (window,)
    sig = Signature(
        inputs=inputs,
        outputs={"probabilities": (num_assets, num_classes)},
        input_dtypes={k: "float32" for k in inputs},
        output_dtypes={"probabilities": "float32"},
    )
    return ForecasterInference(net, uses_age), sig


def agent_wrapper(
    net: nn.Module,
    obs_dim: int,
    num_actions: int,
    algorithm: str,
    state_shape: tuple[int, int] | None,
) -> tuple[nn.Module, Signature]:
    """The inference wrapper of a policy (``ppo``) or Q-network (``dqn``) and its signature."""
    if algorithm == "dqn":
        return QInference(net), Signature(
            {"observation": (obs_dim,)},
            {"action": (), "q_values": (num_actions,)},
            {"observation": "float32"},
            {"action": "int64", "q_values": "float32"},
        )
    if state_shape is None:
        return PolicyInference(net), Signature(
            {"observation": (obs_dim,)},
            {"action": (), "logits": (num_actions,)},
            {"observation": "float32"},
            {"action": "int64", "logits": "float32"},
        )
    return RecurrentPolicyInference(net), Signature(
        {"observation": (obs_dim,), "state": tuple(state_shape)},
        {"action": (), "logits": (num_actions,), "new_state": tuple(state_shape)},
        {"observation": "float32", "state": "float32"},
        {"action": "int64", "logits": "float32", "new_state": "float32"},
    )
