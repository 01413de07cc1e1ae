"""Command-line overrides of config keys checked before Hydra runs the command.

Hydra rejects an override of a key the composed config does not have (``model.optim.lrr=1``,
a typo) with its struct error and the advice to add the key with ``+``, which would only make
the typo a silently ignored setting. :func:`unknown_key_error` composes the config of the
command line's group choices first (in-process, about 0.1 s, no heavy import; only when the
command line sets a plain key) and returns one paragraph naming the key, the config file of
its group, the keys that are there and the nearest spellings.

Not checked (Hydra reports them as it does): ``hydra.*`` keys, keys added with ``+``/``++``
or deleted with ``~``, list items, and a command line with another primary config
(``--config-name``/``--config-path``/``--config-dir``). A sweep over a group is checked
with its first option; every option's job is composed again by Hydra itself.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path

from datamodules.errors import ConfigError
from experiments.config.groups import CONF_DIR, conf_dirs, options, searchpath_from_args

# Hydra flags that choose another primary config or print help (the check composes
# conf/config.yaml, so it stands aside for those), and flags whose next argument is a value,
# not an override.
_OTHER_PRIMARY = {"-cn", "--config-name", "-cp", "--config-path", "-cd", "--config-dir"} | {
    "--info",
    "-i",
    "--help",
    "-h",
    "--hydra-help",
}
_VALUE_FLAGS = {"-c", "--cfg", "-p", "--package"}
_SHOWN_KEYS = 12  # keys of the parent listed in the message


def unknown_key_error(args: Sequence[str]) -> ConfigError | None:
    """The error for the first override in ``args`` (a command line after the program name)
    of a key its composed config lacks; None when every key is there or nothing is checked."""
    if any(arg.split("=", 1)[0] in _OTHER_PRIMARY for arg in args):
        return None
    words, skip = [], False
    for arg in args:
        if not skip and not arg.startswith("-"):
            words.append(arg)
        skip = arg in _VALUE_FLAGS
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    try:
        parsed = OverridesParser.create().parse_overrides(words)
    except Exception:  # noqa: BLE001 - a syntax error: Hydra's own message says where
        return None
    dirs = conf_dirs(searchpath_from_args(words))
    multirun = any(arg in ("-m", "--multirun") for arg in args)
    groups: list[str] = []
    swept: dict[str, str] = {}  # group (dotted) -> its sweep as typed, left out of a multirun
    keys: list[tuple[str, str]] = []  # (key, the override as typed)
    for word, override in zip(words, parsed, strict=True):
        key = override.key_or_group
        if key == "hydra.searchpath":
            groups.append(word)
        elif key.startswith("hydra") or override.type == OverrideType.DEL:
            continue
        elif multirun and override.is_sweep_override() and options(key.replace(".", "/"), dirs):
            swept[key.replace("/", ".")] = word  # Hydra composes a multirun without it
        elif options(key.replace(".", "/"), dirs):
            first = (
                next(iter(override.sweep_string_iterator()))
                if override.is_sweep_override()
                else override.get_value_element_as_str()
            )
            groups.append(f"{override.get_key_element()}={first}")
        elif override.type == OverrideType.CHANGE:
            keys.append((key, word))
    if not keys:
        return None
    cfg = _compose(groups)
    if cfg is None:
        return None
    for key, word in keys:
        err = _missing(cfg, key, word, dirs, swept)
        if err is not None:
            return err
    return None


def _compose(groups: list[str]):
    """The config of these group choices (and search path), or None if it does not compose."""
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=groups, return_hydra_config=True)
    except Exception:  # noqa: BLE001 - a bad group choice: Hydra's message lists the options
        return None


def _missing(
    cfg, key: str, word: str, dirs: list[Path], swept: dict[str, str]
) -> ConfigError | None:
    """The error for ``key`` if ``cfg`` lacks it (a parent that is not a mapping: None)."""
    from omegaconf import DictConfig

    parts = key.split(".")
    node, depth = cfg, 0
    while depth < len(parts):
        if not isinstance(node, DictConfig):
            return None  # a list item or a value: Hydra reports it
        if parts[depth] not in set(node.keys()):  # (``in`` is False for a ??? value too)
            break
        node = node._get_node(parts[depth])
        depth += 1
    else:
        return None
    part = parts[depth]
    group = next((g for g in swept if key.startswith(f"{g}.")), None)
    if group is not None:
        return ConfigError(
            f"The override {word} sets {key}, inside {group}, which this multirun sweeps "
            f"({swept[group]}): Hydra composes a multirun before it chooses {group}, so a "
            f"plain override of a key inside it fails. Write ++{word} to set it in every job."
        )
    return _paragraph(cfg, key, parts[:depth], part, node, word, dirs)


def _paragraph(
    cfg, key: str, parent: list[str], part: str, node, word: str, dirs: list[Path]
) -> ConfigError:
    """One paragraph: the override, where the key is missing, what is there, the way out."""
    choices = options(part, dirs) if not parent else []
    if choices:  # a group nobody chose (model: +model=NAME)
        return ConfigError(
            f"The override {word} sets {key}, but no {part} is chosen: choose one with "
            f"+{part}=NAME ({', '.join(choices)}) on the same command line."
        )
    where = ".".join(parent)
    known = sorted(str(k) for k in set(node.keys()) if str(k) != "hydra")
    near = difflib.get_close_matches(part, known, n=3, cutoff=0.6)
    shown = ", ".join(known[:_SHOWN_KEYS]) + (", ..." if len(known) > _SHOWN_KEYS else "")
    lacks = f"{where} has no key {part}" if where else f"the config has no top-level key {part}"
    has = f"{where or 'the config'}{_source(cfg, parent, dirs)} has {shown or 'no keys'}"
    hint = f"Did you mean {' or '.join('.'.join([*parent, n]) for n in near)}? " if near else ""
    value = word.split("=", 1)[1] if "=" in word else ""
    return ConfigError(
        f"The override {word} sets {key}, but {lacks}: {has}. {hint}Fix the spelling, or "
        f"write +{key}={value} to add a new key on purpose."
    )


def _source(cfg, parent: list[str], dirs: list[Path]) -> str:
    """`` (conf/GROUP/CHOICE.yaml)`` for the deepest config group the key lies in, else ''."""
    choices = cfg.hydra.runtime.choices
    for depth in range(len(parent), 0, -1):
        group = "/".join(parent[:depth])
        choice = choices.get(group)
        if choice is None:
            continue
        for folder in dirs:
            path = Path(folder) / group / f"{choice}.yaml"
            if path.is_file():
                shown = path.relative_to(CONF_DIR.parent) if path.is_relative_to(CONF_DIR) else path
                return f" (from {shown})"
    return ""
