"""What a run prints: the resolved config as a tree, and metrics beside buy-and-hold."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import rich
import rich.syntax
import rich.tree
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

ORDER = ("data", "env", "model", "curriculum", "hardware", "logger", "paths")
PIPED_WIDTH = 160  # columns of a table printed to a file or a pipe (rich's default there: 80)


def table_console() -> Console:
    """A console for tables: the terminal's width, or :data:`PIPED_WIDTH` columns when the
    output is a file or a pipe (a log, CI), where 80 columns would wrap every row."""
    console = Console()
    return console if console.is_terminal else Console(width=PIPED_WIDTH)


def config_tree(cfg: DictConfig, save_to: Path | None = None, show: bool = True) -> None:
    """Print the resolved config, a branch per group, and save the same text with the run."""
    tree = rich.tree.Tree("config", style="bold")
    keys = [k for k in ORDER if k in cfg] + [k for k in cfg if k not in ORDER]
    for key in keys:
        branch = tree.add(str(key), style="bold cyan")
        value = cfg[key]
        text = (
            OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        )
        branch.add(rich.syntax.Syntax(text, "yaml", theme="ansi_dark", background_color="default"))
    if show:
        rich.print(tree)
    if save_to is not None:
        save_to.parent.mkdir(parents=True, exist_ok=True)
        with open(save_to, "w") as fh:
            rich.print(tree, file=fh)


def metrics_table(
    title: str,
    columns: Mapping[str, Mapping[str, float]],
    keys: list[str],
    intervals: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
) -> None:
    """Print metric rows with one column per strategy (e.g. ours vs buy-and-hold); where
    ``intervals[column][key]`` gives ``(low, high)``, the value is followed by ``[low, high]``."""
    table = Table(title=title)
    table.add_column("metric")
    for name in columns:
        table.add_column(name, justify="right")
    for key in keys:
        row = [key]
        for name, values in columns.items():
            v = values.get(key)
            text = "-" if v is None or math.isnan(v) else f"{v:.4f}"
            bounds = (intervals or {}).get(name, {}).get(key)
            if bounds is not None and all(b is not None and math.isfinite(b) for b in bounds):
                text += f" [{bounds[0]:.2f}, {bounds[1]:.2f}]"
            row.append(text)
        table.add_row(*row)
    table_console().print(table)
