"""Plain config mappings -> frozen dataclasses, with errors that name the config key."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import MISSING, fields
from typing import Any

from datamodules.errors import ConfigError


def dataclass_from(cls: type, values: Any, key: str):
    """``cls(**values)``; unknown keys raise ConfigError naming ``key`` and the known ones.

    ``values`` may be a mapping (a plain dict or an OmegaConf node), ``None`` (all defaults)
    or already an instance of ``cls`` (returned as is). Lists become tuples, so frozen
    dataclasses stay hashable. A missing required key is a ConfigError naming it.
    """
    if isinstance(values, cls):
        return values
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError(
            f"{key} must be a mapping of {cls.__name__} keys; got {values!r} "
            f"({type(values).__name__})."
        )
    known = {f.name: f for f in fields(cls) if f.init}
    unknown = sorted(str(k) for k in set(values) - set(known))
    if unknown:
        raise ConfigError(
            f"{key} has unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}."
        )
    missing = sorted(
        name
        for name, f in known.items()
        if name not in values and f.default is MISSING and f.default_factory is MISSING
    )
    if missing:
        raise ConfigError(
            f"{key} is missing the required key(s) {', '.join(f'{key}.{m}' for m in missing)}."
        )
    return cls(**{k: _plain(v) for k, v in values.items()})


def _plain(value: Any) -> Any:
    """Lists (and list-like config nodes) become tuples; everything else is kept as is."""
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return tuple(value)
    return value
