"""The long bar frame every data source loads: its columns, in order, and the check of a
source's ``data.columns`` mapping of them."""

from __future__ import annotations

from collections.abc import Mapping

from datamodules.errors import ConfigError

BAR_COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
# What a source's load() returns, in this order: _file and _row say where each row came from.
LOAD_COLUMNS = ("ticker", *BAR_COLUMNS, "_file", "_row")


def column_mapping(
    columns: object, holder: str, example: str, note: str = ""
) -> dict[str, str | None]:
    """``data.columns`` checked: our bar-column names mapped to the names in ``holder`` (e.g.
    "the file", "the table"), each a non-blank name or null; ``example`` is a mapping to show
    in the message, ``note`` a sentence part added to the list of known keys."""
    if columns is None:
        return {}
    if not isinstance(columns, Mapping):
        raise ConfigError(
            f"data.columns is {columns!r}; map our names to {holder}'s columns, e.g. "
            f"data.columns={example}."
        )
    unknown = sorted(str(k) for k in columns if k not in BAR_COLUMNS)
    if unknown:
        raise ConfigError(
            f"data.columns has unknown key(s) {', '.join(unknown)}; known: "
            f"{', '.join(BAR_COLUMNS)} (our names; the values are {holder}'s column names{note})."
        )
    for ours, theirs in columns.items():
        if theirs is not None and (not isinstance(theirs, str) or not theirs.strip()):
            raise ConfigError(
                f"data.columns.{ours} is {theirs!r}; give {holder}'s column name, or null."
            )
    return dict(columns)
