"""Plain config mappings -> frozen dataclasses, with errors that name the config key."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields

from datamodules.errors import ConfigError


def dataclass_from(cls: type, values: Mapping, key: str):
    """``cls(**values)``; unknown keys raise ConfigError naming ``key`` and the known ones.

    Lists become tuples, so frozen dataclasses stay hashable.
    """
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"{key} has unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}."
        )
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
