"""Curriculum phases as data: parsing and checking ``conf/curriculum/NAME.yaml``.

A phase has a ``name``, exactly one length (a unit the model family declares in its
``lengths``: agents ``frames`` | ``iterations`` | ``episodes``, forecasters ``epochs`` |
``steps``), a list of ``overrides`` (Hydra override strings) and optionally
``reset_optimizer``. ``scale`` multiplies every length (rounded up). A light module: the config
check parses the phases before anything heavy is imported.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from datamodules.errors import ConfigError

#: The length units of the families that ship with the project (a family of your own may
#: declare others in its ``lengths``).
SHIPPED_UNITS = ("frames", "iterations", "episodes", "epochs", "steps")
PHASE_KEYS = ("name", "overrides", "reset_optimizer")


@dataclass(frozen=True)
class Phase:
    """One phase: ``length`` of ``unit``, the Hydra ``overrides`` it applies, and whether it
    starts its optimizer afresh."""

    name: str
    unit: str
    length: int
    overrides: tuple[str, ...]
    reset_optimizer: bool = False

    def length_overrides(self, family: type, scale: float) -> list[str]:
        """The overrides that set this phase's (scaled) length for a model ``family`` (its
        class: :meth:`modules.family.ModelFamily.length_overrides`)."""
        if self.unit not in family.lengths:
            raise ConfigError(
                f"curriculum phase '{self.name}' has a length in {self.unit}, which "
                f"{family.__name__} does not use; give one of {', '.join(family.lengths)}."
            )
        return family.length_overrides(self.unit, max(1, math.ceil(self.length * scale)))


def parse_phases(curriculum: Mapping, units: Iterable[str] | None = None) -> list[Phase]:
    """The phases of ``cfg.curriculum``, checked; one paragraph naming the phase if wrong.
    ``units``: the model's length units (default: those of the shipped families)."""
    name = curriculum.get("name", "?")
    where = f"conf/curriculum/{name}.yaml"
    units = tuple(units) if units is not None else SHIPPED_UNITS
    lengths = tuple(dict.fromkeys([*units, *SHIPPED_UNITS]))  # units of any family
    phases: list[Phase] = []
    for i, raw in enumerate(curriculum.get("phases") or []):
        label = f"{where}, phase {i + 1}"
        if not isinstance(raw, Mapping) or not raw.get("name"):
            raise ConfigError(f"{label}: a phase needs a name, a length and overrides.")
        title = f"{label} ('{raw['name']}')"
        given = [u for u in lengths if raw.get(u) is not None]
        if len(given) != 1:
            raise ConfigError(
                f"{title}: give exactly one length, one of {', '.join(units)}; "
                f"got {', '.join(given) or 'none'}."
            )
        unit = given[0]
        if unit not in units:
            raise ConfigError(
                f"{title}: its length is in {unit}, which this model does not use; give one "
                f"of {', '.join(units)} (the units its family declares)."
            )
        length = raw.get(unit)
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ConfigError(f"{title}: {unit} is {length}; use a whole number >= 1.")
        overrides = raw.get("overrides") or []
        if (
            isinstance(overrides, str)
            or not isinstance(overrides, Sequence)
            or not all(isinstance(o, str) and "=" in o for o in overrides)
        ):
            raise ConfigError(
                f"{title}: overrides must be a list of Hydra override strings such as "
                "'env.costs.scale=0.5'."
            )
        unknown = set(raw.keys()) - {*PHASE_KEYS, *lengths}
        if unknown:
            raise ConfigError(f"{title}: unknown keys {', '.join(sorted(map(str, unknown)))}.")
        reset = raw.get("reset_optimizer", False)
        if not isinstance(reset, bool):
            raise ConfigError(f"{title}: reset_optimizer is {reset!r}; use true or false.")
        phases.append(Phase(str(raw["name"]), unit, int(length), tuple(overrides), reset))
    names = [p.name for p in phases]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: phase names must differ; got {', '.join(names)}.")
    scale = curriculum.get("scale", 1.0)
    if isinstance(scale, bool) or not (isinstance(scale, int | float) and scale > 0):
        raise ConfigError(f"curriculum.scale is {scale}; use a number > 0 (1 = full length).")
    return phases


def phase_folder(root: Path, index: int, phase: Phase) -> Path:
    """``<run>/phases/NN_name``: the phase's own run folder."""
    return root / "phases" / f"{index + 1:02d}_{phase.name}"
