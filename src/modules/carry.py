"""Carry a trained network's weights into a new one whose inputs or outputs changed.

A curriculum phase may change the env: other tickers, more of them, a longer window, 3 actions
become 9. The new module is built for the new env, then :func:`carry_weights` fills it from the
previous phase's state dict:

- a tensor whose name and shape match is copied;
- the first encoder layer (``*trunk.encoder.0.weight``, columns = observation columns) is
  rebuilt column by column from the observation names: a column whose name existed before keeps
  its weights, a new input starts at zero weight, so the new network computes exactly what the
  old one did until it learns to use the new inputs;
- an action head (``*head.*`` of a policy, ``*advantage.*`` of a Q-network; rows = actions) is
  rebuilt row by row from the action meanings: an action that existed before (the same targets
  on the same tickers, e.g. "long NVDA" and "long NVDA, flat MSFT") keeps its row, a new action
  copies the row of the old neutral action (hold, or all flat), so its logit or Q-value equals
  the neutral one's: the new head starts neutral about the new actions;
- anything else that does not match keeps the new module's initialisation and is reported.

0-dim tensors (loss coefficients such as the clip epsilon or gamma) are never carried: they come
from the new phase's config.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

INPUT_SUFFIX = "trunk.encoder.0.weight"
ACTION_SUFFIXES = ("head.weight", "head.bias", "advantage.weight", "advantage.bias")


@dataclass(frozen=True)
class Layout:
    """What a network's inputs and outputs mean: a name per observation column and a meaning
    per action (both None for networks without such a layout, e.g. forecasters), and the index
    of the neutral action (hold / all flat) if there is one."""

    inputs: list[str] | None = None
    actions: list[str] | None = None
    neutral: int | None = None

    def to_dict(self) -> dict:
        return {"inputs": self.inputs, "actions": self.actions, "neutral": self.neutral}

    @classmethod
    def from_dict(cls, data: dict | None) -> Layout:
        data = data or {}
        return cls(data.get("inputs"), data.get("actions"), data.get("neutral"))


@dataclass
class CarryReport:
    """Which tensors were copied, rebuilt by name, or left at their new initialisation."""

    copied: list[str] = field(default_factory=list)
    remapped: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)
    new_inputs: list[str] = field(default_factory=list)
    dropped_inputs: list[str] = field(default_factory=list)
    new_actions: list[str] = field(default_factory=list)

    @property
    def shapes_changed(self) -> bool:
        """True when any tensor was rebuilt or reinitialised (optimizer state cannot follow)."""
        return bool(self.remapped or self.fresh)

    def summary(self) -> str:
        parts = [f"{len(self.copied)} tensors copied"]
        if self.remapped:
            parts.append(f"{len(self.remapped)} rebuilt by name")
        if self.new_inputs:
            parts.append(f"{len(self.new_inputs)} new inputs at zero weight")
        if self.dropped_inputs:
            parts.append(f"{len(self.dropped_inputs)} inputs dropped")
        if self.new_actions:
            parts.append(
                f"new actions {', '.join(a or 'flat' for a in self.new_actions)} start neutral"
            )
        if self.fresh:
            parts.append(
                f"{len(self.fresh)} left at their new initialisation: {', '.join(self.fresh)}"
            )
        return "; ".join(parts)

    def to_dict(self) -> dict:
        return {
            "copied": len(self.copied),
            "remapped": self.remapped,
            "fresh": self.fresh,
            "new_inputs": self.new_inputs,
            "dropped_inputs": self.dropped_inputs,
            "new_actions": self.new_actions,
        }


def _input_columns(old: list[str], new: list[str]) -> list[int | None]:
    index = {name: i for i, name in enumerate(old)}
    return [index.get(name) for name in new]


def _action_rows(old: Layout, new: Layout) -> list[int | None]:
    index = {meaning: i for i, meaning in enumerate(old.actions or [])}
    return [index.get(meaning, old.neutral) for meaning in new.actions or []]


def carry_weights(
    module: nn.Module, saved: dict[str, torch.Tensor], old: Layout, new: Layout
) -> CarryReport:
    """Load ``saved`` (an earlier module's state dict) into ``module`` as the module doc says."""
    report = CarryReport()
    target = module.state_dict()
    inputs_differ = old.inputs is not None and new.inputs is not None and old.inputs != new.inputs
    actions_differ = (
        old.actions is not None and new.actions is not None and old.actions != new.actions
    )
    if inputs_differ:
        report.new_inputs = [n for n in new.inputs if n not in set(old.inputs)]
        report.dropped_inputs = [n for n in old.inputs if n not in set(new.inputs)]
    if actions_differ:
        report.new_actions = [a for a in new.actions if a not in set(old.actions)]
    out: dict[str, torch.Tensor] = {}
    for name, current in target.items():
        if current.dim() == 0:
            continue
        before = saved.get(name)
        if before is None:
            report.fresh.append(name)
            continue
        before = before.to(device=current.device, dtype=current.dtype)
        if (
            inputs_differ
            and name.endswith(INPUT_SUFFIX)
            and _fits_inputs(before, current, old, new)
        ):
            rebuilt = torch.zeros_like(current)
            for j, i in enumerate(_input_columns(old.inputs, new.inputs)):
                if i is not None:
                    rebuilt[:, j] = before[:, i]
            out[name] = rebuilt
            report.remapped.append(name)
        elif (
            actions_differ
            and name.endswith(ACTION_SUFFIXES)
            and _fits_actions(before, current, old, new)
        ):
            rows = _action_rows(old, new)
            if any(r is None for r in rows):
                report.fresh.append(name)  # no neutral action to copy from: keep the new init
                continue
            out[name] = before[rows].clone()
            report.remapped.append(name)
        elif before.shape == current.shape:
            out[name] = before
            report.copied.append(name)
        else:
            report.fresh.append(name)
    module.load_state_dict(out, strict=False)
    return report


def _fits_inputs(before: torch.Tensor, current: torch.Tensor, old: Layout, new: Layout) -> bool:
    return (
        before.dim() == 2
        and before.shape == (current.shape[0], len(old.inputs))
        and current.shape[1] == len(new.inputs)
    )


def _fits_actions(before: torch.Tensor, current: torch.Tensor, old: Layout, new: Layout) -> bool:
    return (
        before.shape[0] == len(old.actions)
        and current.shape[0] == len(new.actions)
        and before.shape[1:] == current.shape[1:]
    )
