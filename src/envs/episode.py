"""Episodes of the RL envs: their length, where they start, and what an observation holds.

A light module (no torch import), so the config is checked before torch is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from datamodules.config import dataclass_from
from datamodules.errors import ConfigError


@dataclass(frozen=True)
class EpisodeConfig:
    """``length``: bars per episode (None = to the end of the split); ``random_start``: each
    episode starts at a random bar of the split (else at its first bar); ``window``: bars of
    features in an observation; ``calendar``: add time-of-day/day-of-week features."""

    length: int | None = 390
    random_start: bool = True
    window: int = 1
    calendar: bool = False

    def __post_init__(self) -> None:
        if self.length is not None and int(self.length) < 1:
            raise ConfigError(
                f"env.episode.length is {self.length}; use a number of bars >= 1, or null for the whole split."
            )
        if int(self.window) < 1:
            raise ConfigError(
                f"env.episode.window is {self.window}; an observation needs at least 1 bar of features."
            )

    @classmethod
    def from_config(
        cls,
        values: EpisodeConfig | Mapping[str, int | bool | None] | None,
        key: str = "env.episode",
    ) -> EpisodeConfig:
        """An EpisodeConfig (returned as is), a mapping of its keys (unknown keys are a
        ConfigError naming ``key``) or None (the defaults)."""
        return dataclass_from(cls, values, key)
