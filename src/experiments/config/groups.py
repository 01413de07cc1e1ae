"""Config groups on disk: where ``conf/`` is, which options a group has, and the shorthand
``env.actions=sizing`` for the group override ``env/actions=sizing``.

Hydra selects a nested group's option with a slash (``model/network=gru``, ``env/actions=sizing``
); a dot would set the value ``"sizing"`` instead. Before Hydra parses the command line (and
for a curriculum phase's overrides), an override ``a.b=NAME`` (or a sweep ``a.b=X,Y``) whose
``a/b/NAME.yaml`` exists in ``conf/`` or in a ``hydra.searchpath`` folder is rewritten to
``a/b=NAME``, so both spellings compose the same config with the group's own defaults.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parents[3] / "conf"
SHORTHAND = re.compile(r"^(?P<key>[A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)+)=(?P<value>[\w\-,]+)$")


def searchpath_dirs(entries: Iterable[str]) -> list[Path]:
    """Folders of ``hydra.searchpath`` entries (``file://PATH`` or ``pkg://package``)."""
    out = []
    for entry in entries:
        entry = str(entry).strip().strip("'\"")
        if entry.startswith("file://"):
            out.append(Path(entry[len("file://") :]).expanduser())
        elif entry.startswith("pkg://"):
            try:
                out.append(Path(str(resources.files(entry[len("pkg://") :]))))
            except (ModuleNotFoundError, TypeError):
                continue
    return out


def searchpath_from_args(args: Sequence[str]) -> list[Path]:
    """The search path folders given on a command line (``hydra.searchpath=[a,b]``)."""
    found: list[str] = []
    for arg in args:
        key, _, value = arg.lstrip("+~").partition("=")
        if key == "hydra.searchpath":
            found += [v for v in value.strip("[]").split(",") if v.strip()]
    return searchpath_dirs(found)


def conf_dirs(extra: Iterable[Path] = ()) -> list[Path]:
    """``conf/`` and the search path folders, in Hydra's order (ours first)."""
    return [CONF_DIR, *[Path(p) for p in extra]]


def options(group: str, dirs: Iterable[Path]) -> list[str]:
    """The option names (YAML files) of config group ``group`` (``env/actions``)."""
    names: set[str] = set()
    for folder in dirs:
        path = Path(folder) / group
        if path.is_dir():
            names.update(p.stem for p in path.glob("*.yaml"))
    return sorted(names)


def rewrite_shorthand(args: Sequence[str], dirs: Iterable[Path]) -> list[str]:
    """``a.b=NAME`` -> ``a/b=NAME`` where ``a/b/NAME.yaml`` is a config file (see module doc);
    every other argument is kept as it is."""
    dirs = list(dirs)
    out = []
    for arg in args:
        match = SHORTHAND.match(arg)
        if match is not None:
            group = match["key"].replace(".", "/")
            known = set(options(group, dirs))
            values = match["value"].split(",")
            if known and all(v in known for v in values):
                arg = f"{group}={match['value']}"
        out.append(arg)
    return out
