"""Check a composed config before anything heavy runs: one paragraph naming the key, what it
got and what is allowed.

Every ``_target_`` in the config is looked up in its source (:mod:`experiments.config.targets`,
nothing is imported); its keys must be parameters of the class or function, each value of
the annotated type (:mod:`experiments.config.types`). A section typed as a dataclass (``costs:
Frictions``) is checked field by field, and when the dataclass lives in a light module (one
that imports no torch, Lightning or W&B) it is also built, so its ``__post_init__`` range
checks run too; a ``_target_`` of a light module that is not ``_partial_`` (a data source,
the reward, the risk rules) is built the same way. The run's own settings are the dataclasses of
:mod:`experiments.config.schema`. The whole check takes well under a second and imports no
torch.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from datamodules.errors import ConfigError, UserInputError
from experiments.config import targets
from experiments.config.types import ANY_SPEC, TypeSpec, dataclass_member, matches, spec_of

HYDRA_KEYS = ("_target_", "_partial_", "_convert_", "_recursive_", "_args_")
SCHEMA = "experiments.config.schema.RunSettings"


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, dict):
        return "a mapping" if value else "an empty mapping"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else str(name)


class Checker:
    """Walks a plain (resolved) config and collects problems, each one sentence."""

    def __init__(self, group_options: Callable[[str], list[str]] | None = None) -> None:
        self.problems: list[str] = []
        self.group_options = group_options or (lambda key: [])

    def fail(self, message: str) -> None:
        self.problems.append(message)

    # ------------------------------------------------------------------ values
    def value(self, value: Any, spec: TypeSpec, key: str) -> None:
        if value == "???":
            self.fail(
                f"{key} must be set: it is ??? (missing) in its conf/ file; give {key}=VALUE."
            )
            return
        if isinstance(value, dict) and "_target_" in value:
            self.target(value, key)
            return
        section = dataclass_member(spec)
        if section is not None and isinstance(value, dict):
            self.section(value, section.symbol, key)
            return
        if not matches(value, spec):
            self.fail(self._mismatch(value, spec, key))
            return
        if isinstance(value, dict):
            inner = spec.args[0] if spec.form == "mapping" and spec.args else ANY_SPEC
            for name, item in value.items():
                self.value(item, inner, _join(key, name))
        elif isinstance(value, list | tuple):
            inner = spec.args[0] if spec.form == "list" and spec.args else ANY_SPEC
            for i, item in enumerate(value):
                if isinstance(item, dict | list):
                    self.value(item, inner, f"{key}[{i}]")

    def _mismatch(self, value: Any, spec: TypeSpec, key: str) -> str:
        message = f"{key} is {_show(value)}; expected {spec.describe()}."
        options = self.group_options(key) if isinstance(value, str | dict) else []
        if options and isinstance(value, dict):
            group = key.replace(".", "/")
            message = (
                f"{key} has no _target_, so it builds nothing: choose one of "
                f"{', '.join(options)} (conf/{group}/) with {group}=NAME, or give it a _target_."
            )
        elif options:
            group = key.replace(".", "/")
            close = difflib.get_close_matches(value, options, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            message = (
                f"{key} is {_show(value)}, which is not one of its config files{hint}: choose "
                f"one of {', '.join(options)} (conf/{group}/), e.g. "
                f"{group}={close[0] if close else options[0]}, or "
                "give a config with a _target_."
            )
        return message

    # ------------------------------------------------------------------ sections and targets
    def _keys(self, values: dict, sig: targets.Signature, key: str, owner: str) -> bool:
        """Unknown keys of ``values`` (a target's or a section's); True when all are known."""
        known = list(sig.params)
        ok = True
        for name in values:
            if str(name).startswith("_") and name in HYDRA_KEYS:
                continue
            if name in sig.params or sig.var_kwargs:
                continue
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            takes = ", ".join(sorted(known)) if known else "no settings"
            where = owner if key else "the config's top level"
            self.fail(
                f"{_join(key, name)} is not a setting of {where}{hint}; it takes {takes}. "
                "Remove or rename the key (in its conf/ file or on the command line)."
            )
            ok = False
        return ok

    def section(self, values: dict, symbol: targets.Symbol, key: str) -> None:
        """A nested config section checked against a dataclass's fields, then built when the
        dataclass is light (its ``__post_init__`` checks run)."""
        sig = targets.signature(symbol)
        if sig is None:
            return
        before = len(self.problems)
        owner = f"{key or 'the config'} ({symbol.qualname})"
        if self._keys(values, sig, key, owner):
            self._params(values, sig, key)
            for name in sig.required:
                if name not in values:
                    self.fail(f"{_join(key, name)} is missing; {owner} needs it.")
        if len(self.problems) == before:
            self.build(symbol, values, key)

    def target(self, node: dict, key: str) -> None:
        label = _join(key, "_target_")
        path = node.get("_target_")
        if not isinstance(path, str):
            self.fail(f"{label} is {_show(path)}; give the dotted path of a class or function.")
            return
        try:
            symbol = targets.resolve_target(path)
        except targets.UnknownTarget as err:
            self.fail(f"{label} is '{path}', which cannot be found: {err}")
            return
        values = {k: v for k, v in node.items() if k not in HYDRA_KEYS}
        sig = targets.signature(symbol)
        if sig is None:  # opaque: only what is nested can be checked
            for name, item in values.items():
                self.value(item, ANY_SPEC, _join(key, name))
            return
        before = len(self.problems)
        if self._keys(values, sig, key, f"{key} ({path})"):
            self._params(values, sig, key)
        partial = bool(node.get("_partial_", False))
        if not partial:
            missing = [n for n in sig.required if n not in values]
            if missing:
                self.fail(
                    f"{key} ({path}) needs {', '.join(missing)}, which the config does not "
                    "give; add them, or set _partial_: true if the run passes them."
                )
        if len(self.problems) == before and not partial and not _nested_target(values):
            self.build(symbol, values, key, dataclass=sig.dataclass)

    def _params(self, values: dict, sig: targets.Signature, key: str) -> None:
        for name, item in values.items():
            param = sig.params.get(name)
            spec = spec_of(param.annotation, param.module) if param is not None else ANY_SPEC
            self.value(item, spec, _join(key, name))

    def build(self, symbol: targets.Symbol, values: dict, key: str, dataclass: bool = True) -> None:
        """Construct ``symbol`` (a class or function of a light module) from ``values`` so its
        own checks run; a dataclass through :func:`datamodules.config.dataclass_from`."""
        module = symbol.module.name
        if targets.heavy_import(module) is not None:
            return
        from datamodules.config import dataclass_from

        try:
            cls = getattr(importlib.import_module(module), symbol.qualname.rsplit(".", 1)[-1])
            if dataclass:
                dataclass_from(cls, values, key or "the config")
            else:
                cls(**values)
        except UserInputError as err:
            self.fail(str(err))
        except (TypeError, ValueError) as err:
            self.fail(f"{key or 'the config'}: {err}")


def _nested_target(value: Any) -> bool:
    """Whether ``value`` holds a ``_target_`` node (it is built by Hydra, not here)."""
    if isinstance(value, dict):
        return "_target_" in value or any(_nested_target(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_nested_target(v) for v in value)
    return False


def plain(cfg: DictConfig | Mapping) -> dict:
    """The config as resolved plain data (without Hydra's own node); an interpolation that
    does not resolve is one paragraph naming it."""
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(dict(cfg))
    try:
        data = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", "") or "?"
        raise ConfigError(
            f"Config error at {key}: {str(err).splitlines()[0]} Fix the interpolation "
            "(${...}) in its conf/ file or on the command line."
        ) from None
    data.pop("hydra", None)
    return data


def check_config(
    cfg: DictConfig | Mapping, group_options: Callable[[str], list[str]] | None = None
) -> None:
    """Raise :class:`ConfigError` (one paragraph) if anything in ``cfg`` is not what its
    ``_target_`` or the run's settings accept."""
    data = plain(cfg)
    checker = Checker(group_options)
    schema = targets.resolve_target(SCHEMA)
    checker.section(data, schema, "")
    if not checker.problems:
        _check_phases(data, checker)
    if checker.problems:
        first = checker.problems[0]
        more = len(checker.problems) - 1
        tail = f" ({more} more problem{'s' if more > 1 else ''} after this one.)" if more else ""
        raise ConfigError(f"Config error: {first}{tail}")


def _check_phases(data: dict, checker: Checker) -> None:
    """The curriculum's phases, with the length units the model's family declares."""
    from experiments.curriculum.phases import parse_phases

    curriculum = data.get("curriculum") or {}
    if not curriculum.get("phases"):
        return
    units = None
    model = data.get("model") or {}
    if isinstance(model, dict) and isinstance(model.get("_target_"), str):
        try:
            symbol = targets.resolve_target(model["_target_"])
            lengths = targets.class_constant(symbol, "lengths")
            units = list(lengths) if isinstance(lengths, dict) else None
        except targets.UnknownTarget:
            units = None
    try:
        parse_phases(curriculum, units)
    except UserInputError as err:
        checker.fail(str(err))
