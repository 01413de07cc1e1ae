"""The config groups of the forecasters (``model.*``), as frozen dataclasses with their checks.

A light module (no torch): the run's config check constructs these before anything heavy is
imported. :class:`modules.forecasters.module.ForecastModule` takes the same classes (or plain
mappings, coerced with :func:`modules.agents.config.from_config`).
"""

from __future__ import annotations

from dataclasses import dataclass

from datamodules.errors import ConfigError

SIGNALS = ("argmax", "expected")


@dataclass(frozen=True)
class TaskConfig:
    """``model.task``: ``num_classes`` 2 (down/up) or 3 (down/flat/up); with 3 classes a
    return whose |value| is under ``flat_threshold_bps`` basis points is flat."""

    num_classes: int = 2
    flat_threshold_bps: float = 0.0

    def __post_init__(self) -> None:
        if self.num_classes not in (2, 3):
            raise ConfigError(
                f"model.task.num_classes is {self.num_classes}; use 2 (down/up) or 3 "
                "(down/flat/up)."
            )
        if not float(self.flat_threshold_bps) >= 0:
            raise ConfigError(
                f"model.task.flat_threshold_bps is {self.flat_threshold_bps}; use >= 0 bps."
            )


@dataclass(frozen=True)
class SignalConfig:
    """``model.signal``: how class probabilities become target positions. ``mode``: argmax
    (long if up, short if down, flat if flat) | expected (P(up) - P(down)); ``long_only``
    clips shorts to flat. Each asset gets at most 1/A of equity."""

    mode: str = "argmax"
    long_only: bool = False

    def __post_init__(self) -> None:
        if self.mode not in SIGNALS:
            raise ConfigError(
                f"model.signal.mode is '{self.mode}'; choose one of {', '.join(SIGNALS)}."
            )


@dataclass(frozen=True)
class TrainerConfig:
    """``model.trainer``: ``max_epochs`` passes over the training windows (-1 = no limit);
    ``max_steps`` optimizer steps (null = no limit; the first limit reached wins);
    ``gradient_clip_val`` (null = off); ``log_every_n_steps``; ``early_stopping_patience``:
    epochs without a lower val/loss before stopping (null = off); ``limit_train_batches``:
    batches per epoch (an int, or a fraction; null = all)."""

    max_epochs: int = 6
    max_steps: int | None = None
    gradient_clip_val: float | None = 1.0
    log_every_n_steps: int = 10
    early_stopping_patience: int | None = None
    limit_train_batches: int | float | None = None

    def __post_init__(self) -> None:
        if not (self.max_epochs == -1 or self.max_epochs >= 1):
            raise ConfigError(
                f"model.trainer.max_epochs is {self.max_epochs}; use >= 1 (or -1 with max_steps)."
            )
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"model.trainer.max_steps is {self.max_steps}; use >= 1 or null.")
        if self.max_epochs == -1 and self.max_steps is None:
            raise ConfigError(
                "model.trainer.max_epochs is -1 and max_steps is null: the run would never end. "
                "Set one of them."
            )
        if self.gradient_clip_val is not None and not float(self.gradient_clip_val) > 0:
            raise ConfigError(
                f"model.trainer.gradient_clip_val is {self.gradient_clip_val}; use > 0 or null."
            )
        if self.log_every_n_steps < 1:
            raise ConfigError(
                f"model.trainer.log_every_n_steps is {self.log_every_n_steps}; use >= 1."
            )
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ConfigError(
                "model.trainer.early_stopping_patience is "
                f"{self.early_stopping_patience}; use >= 1 epochs or null."
            )
        limit = self.limit_train_batches
        if limit is not None and not limit > 0:
            raise ConfigError(
                f"model.trainer.limit_train_batches is {limit}; use a count >= 1, a fraction "
                "in (0, 1], or null."
            )
