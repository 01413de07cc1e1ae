"""The config groups of the RL agents (``model.*``), as frozen dataclasses with their checks.

A light module (no torch): the run's config check constructs these from the composed config
before anything heavy is imported, so a bad value is one paragraph naming its key in well
under two seconds. The agents take the same classes (or plain mappings, coerced with
:func:`datamodules.config.dataclass_from`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from datamodules.errors import ConfigError

ACTIVATIONS = ("tanh", "relu", "elu", "gelu")
NETWORK_KINDS = ("mlp", "gru", "lstm")
LR_SCHEDULES = ("constant", "linear", "cosine")
CRITIC_LOSSES = ("smooth_l1", "l2")
TARGET_UPDATES = ("soft", "hard")
EPSILON_SCHEDULES = ("linear", "exponential")


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} is '{value}'; choose one of {', '.join(allowed)}.")


def _at_least(key: str, value, low, unit: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= low:
        raise ConfigError(f"{key} is {value}; use a number >= {low}{unit}.")


@dataclass(frozen=True)
class NetworkConfig:
    """``model.network``: ``kind`` mlp | gru | lstm; ``hidden_sizes``: widths of the encoder
    MLP's layers; ``activation``: tanh | relu | elu | gelu; ``layer_norm``: LayerNorm after each
    encoder layer; ``dropout``: dropout rate after each encoder layer (0 = off);
    ``recurrent_size`` and ``recurrent_layers``: the GRU/LSTM core (ignored for mlp);
    ``dueling``: Q-networks only, a value and an advantage stream."""

    kind: str = "mlp"
    hidden_sizes: tuple[int, ...] = field(default=(64, 64))
    activation: str = "tanh"
    layer_norm: bool = False
    dropout: float = 0.0
    recurrent_size: int = 64
    recurrent_layers: int = 1
    dueling: bool = False

    def __post_init__(self) -> None:
        _choice("model.network.kind", self.kind, NETWORK_KINDS)
        _choice("model.network.activation", self.activation, ACTIVATIONS)
        if not self.hidden_sizes or any(int(h) < 1 for h in self.hidden_sizes):
            raise ConfigError(
                f"model.network.hidden_sizes is {list(self.hidden_sizes)}; give one or more "
                "positive layer widths, e.g. [64, 64]."
            )
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"model.network.dropout is {self.dropout}; use a rate in [0, 1).")
        if self.recurrent and (int(self.recurrent_size) < 1 or int(self.recurrent_layers) < 1):
            raise ConfigError(
                "model.network.recurrent_size and recurrent_layers must be >= 1 for a "
                f"{self.kind} core."
            )

    @property
    def recurrent(self) -> bool:
        return self.kind != "mlp"

    @property
    def state_shape(self) -> tuple[int, int]:
        """Shape of one env's recurrent state: (layers x (1 for GRU, 2 for LSTM), hidden)."""
        per_layer = 2 if self.kind == "lstm" else 1
        return (int(self.recurrent_layers) * per_layer, int(self.recurrent_size))


@dataclass(frozen=True)
class CollectorConfig:
    """``model.collector``: ``frames_per_env`` steps per env per iteration (an iteration
    collects this x env.num_envs frames per process) and the run's length. The first of these
    that is set wins: ``iterations`` (collector batches; every process runs that many), then
    ``total_frames`` (env steps summed over envs and processes, rounded up to whole
    iterations), then ``episodes`` (completed training episodes summed over processes; the run
    stops at the end of the iteration that completes them)."""

    frames_per_env: int = 64
    total_frames: int | None = None
    iterations: int | None = None
    episodes: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.frames_per_env, bool) or not (
            isinstance(self.frames_per_env, int) and self.frames_per_env >= 1
        ):
            raise ConfigError(
                f"model.collector.frames_per_env is {self.frames_per_env}; use >= 1 steps per env."
            )
        for key in ("iterations", "total_frames", "episodes"):
            value = getattr(self, key)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ConfigError(f"model.collector.{key} is {value}; use a number >= 1 or null.")
        if self.iterations is None and self.total_frames is None and self.episodes is None:
            raise ConfigError(
                "Set one of model.collector.iterations, model.collector.total_frames or "
                "model.collector.episodes to say how long the agent trains."
            )

    def max_iterations(self, frames_per_batch: int) -> int | None:
        """Iterations to run given the frames of one iteration over all processes, or None
        when the length is in episodes (open-ended)."""
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


@dataclass(frozen=True)
class ReplayCollectorConfig(CollectorConfig):
    """``model.collector`` of an off-policy agent: also ``learning_starts``, frames (summed
    over processes) of uniformly random actions before the first update."""

    learning_starts: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least("model.collector.learning_starts", self.learning_starts, 0, " frames")


@dataclass(frozen=True)
class EvalConfig:
    """``model.eval``: a deterministic validation pass every ``every_n_iterations``
    iterations (it picks the best checkpoint by ``val/score``)."""

    every_n_iterations: int = 25

    def __post_init__(self) -> None:
        _at_least("model.eval.every_n_iterations", self.every_n_iterations, 1)


@dataclass(frozen=True)
class CheckpointConfig:
    """``model.checkpoint``: save ``last.ckpt`` (the resume point) every
    ``every_n_iterations`` iterations and after the last one."""

    every_n_iterations: int = 25

    def __post_init__(self) -> None:
        _at_least("model.checkpoint.every_n_iterations", self.every_n_iterations, 1)


@dataclass(frozen=True)
class PPOLossConfig:
    """``model.loss`` of PPO: ``gamma`` discount per bar; ``gae_lambda`` GAE's lambda;
    ``clip_epsilon`` the ratio clip; ``entropy_coef`` and ``critic_coef`` the loss weights;
    ``normalize_advantage`` per minibatch; ``clip_value``: clip the new value to within this of
    the old one (reward units; null = off); ``critic_loss``: smooth_l1 | l2."""

    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_epsilon: float = 0.2
    entropy_coef: float = 0.01
    critic_coef: float = 0.5
    normalize_advantage: bool = True
    clip_value: float | None = None
    critic_loss: str = "smooth_l1"

    def __post_init__(self) -> None:
        for key in ("gamma", "gae_lambda"):
            value = getattr(self, key)
            if not 0.0 <= float(value) <= 1.0:
                raise ConfigError(f"model.loss.{key} is {value}; use a number in [0, 1].")
        if not float(self.clip_epsilon) > 0:
            raise ConfigError(f"model.loss.clip_epsilon is {self.clip_epsilon}; use > 0.")
        for key in ("entropy_coef", "critic_coef"):
            _at_least(f"model.loss.{key}", getattr(self, key), 0)
        if self.clip_value is not None and not float(self.clip_value) > 0:
            raise ConfigError(f"model.loss.clip_value is {self.clip_value}; use > 0 or null.")
        _choice("model.loss.critic_loss", self.critic_loss, CRITIC_LOSSES)


@dataclass(frozen=True)
class PPOOptimConfig:
    """``model.optim`` of PPO: ``actor_lr``/``critic_lr`` AdamW learning rates; ``epochs``
    passes over each batch; ``critic_epochs`` extra critic-only passes; ``minibatch_size`` in
    frames (``auto``: a quarter of an iteration's frames; recurrent networks round it to whole
    env rows); ``max_grad_norm`` per optimizer (null = off); ``target_kl``: stop an
    iteration's epochs once their mean approximate KL exceeds it (null = off);
    ``lr_schedule``: constant | linear | cosine over the run's iterations; ``weight_decay``
    (AdamW, decoupled)."""

    actor_lr: float = 3e-4
    critic_lr: float = 1e-3
    epochs: int = 4
    critic_epochs: int = 0
    minibatch_size: int | Literal["auto"] = 1024
    max_grad_norm: float | None = 0.5
    target_kl: float | None = None
    lr_schedule: str = "constant"
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        for key in ("actor_lr", "critic_lr"):
            value = getattr(self, key)
            if not float(value) >= 0:
                raise ConfigError(
                    f"model.optim.{key} is {value}; use a learning rate >= 0 (0 = frozen)."
                )
        _at_least("model.optim.epochs", self.epochs, 1)
        _at_least("model.optim.critic_epochs", self.critic_epochs, 0)
        if self.minibatch_size != "auto":
            _at_least("model.optim.minibatch_size", self.minibatch_size, 1, " frames (or auto)")
        _choice("model.optim.lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _at_least("model.optim.weight_decay", self.weight_decay, 0)


@dataclass(frozen=True)
class DQNLossConfig:
    """``model.loss`` of DQN: ``gamma`` discount per bar; ``n_steps`` bars of rewards per
    target (1 = one-step TD); ``double_dqn``; ``loss_function``: smooth_l1 | l2;
    ``target_update``: soft (Polyak, ``tau`` per update) | hard (copy every
    ``hard_update_period`` updates)."""

    gamma: float = 0.99
    n_steps: int = 3
    double_dqn: bool = True
    loss_function: str = "smooth_l1"
    target_update: str = "soft"
    tau: float = 0.005
    hard_update_period: int = 1000

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.gamma) <= 1.0:
            raise ConfigError(f"model.loss.gamma is {self.gamma}; use a number in [0, 1].")
        _at_least("model.loss.n_steps", self.n_steps, 1)
        _choice("model.loss.loss_function", self.loss_function, CRITIC_LOSSES)
        _choice("model.loss.target_update", self.target_update, TARGET_UPDATES)
        if not 0.0 < float(self.tau) <= 1.0:
            raise ConfigError(f"model.loss.tau is {self.tau}; use a number in (0, 1].")
        _at_least("model.loss.hard_update_period", self.hard_update_period, 1)


@dataclass(frozen=True)
class ReplayConfig:
    """``model.replay``: ``size`` transitions kept; ``prioritized`` sampling by |TD error|^alpha
    with importance weights of exponent ``beta``; ``batch_size`` transitions per update."""

    size: int = 100_000
    prioritized: bool = True
    alpha: float = 0.6
    beta: float = 0.4
    batch_size: int = 256

    def __post_init__(self) -> None:
        if not (1 <= int(self.batch_size) <= int(self.size)):
            raise ConfigError(
                f"model.replay.size ({self.size}) must be >= model.replay.batch_size "
                f"({self.batch_size}) >= 1."
            )
        for key in ("alpha", "beta"):
            _at_least(f"model.replay.{key}", getattr(self, key), 0)


@dataclass(frozen=True)
class DQNOptimConfig:
    """``model.optim`` of DQN: ``lr`` (AdamW); ``updates_per_frame``: gradient updates per
    collected frame (fractions allowed, carried over); ``max_grad_norm`` (null = off);
    ``lr_schedule``: constant | linear | cosine; ``weight_decay``; ``compile``: trace the TD
    loss and its backward into one inductor graph at the first update (CPU runs with a
    dropout-free network and 32-bit precision; gradients equal eager's to about 1e-7): true,
    false, or auto (the default): compiled where it can be and the run plans at least
    ``compile_min_updates`` gradient updates per process, eager otherwise (a run whose length
    is in episodes plans none); the choice is logged."""

    lr: float = 5e-4
    updates_per_frame: float = 0.03125
    max_grad_norm: float | None = 10.0
    lr_schedule: str = "constant"
    weight_decay: float = 0.0
    compile: bool | str = "auto"
    compile_min_updates: int = 40_000

    def __post_init__(self) -> None:
        if not float(self.lr) >= 0:
            raise ConfigError(
                f"model.optim.lr is {self.lr}; use a learning rate >= 0 (0 = frozen)."
            )
        if not float(self.updates_per_frame) > 0:
            raise ConfigError("model.optim.updates_per_frame must be > 0.")
        _choice("model.optim.lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _at_least("model.optim.weight_decay", self.weight_decay, 0)
        if not isinstance(self.compile, bool) and self.compile != "auto":
            raise ConfigError(
                f"model.optim.compile is {self.compile!r}; choose auto, true or false."
            )
        _at_least("model.optim.compile_min_updates", self.compile_min_updates, 0, " updates")


@dataclass(frozen=True)
class ExplorationConfig:
    """``model.exploration``: epsilon from ``eps_start`` to ``eps_end``; ``schedule`` linear
    (reaching ``eps_end`` after ``decay_frames`` frames) | exponential (the gap to ``eps_end``
    shrinks by e every ``decay_frames`` frames)."""

    schedule: str = "linear"
    eps_start: float = 1.0
    eps_end: float = 0.05
    decay_frames: int = 100_000

    def __post_init__(self) -> None:
        _choice("model.exploration.schedule", self.schedule, EPSILON_SCHEDULES)
        for key in ("eps_start", "eps_end"):
            value = getattr(self, key)
            if not 0.0 <= float(value) <= 1.0:
                raise ConfigError(f"model.exploration.{key} is {value}; use a probability.")
        _at_least("model.exploration.decay_frames", self.decay_frames, 1, " frames")

    def epsilon(self, frames: int) -> float:
        gap = self.eps_start - self.eps_end
        if self.schedule == "linear":
            return self.eps_start - gap * min(frames / max(self.decay_frames, 1), 1.0)
        return self.eps_end + gap * math.exp(-frames / max(self.decay_frames, 1))
