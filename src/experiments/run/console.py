"""What a run prints: the resolved config as a tree, and metrics beside buy-and-hold."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import rich
import rich.syntax
import rich.tree
from omegaconf import DictConfig, OmegaConf
from rich.table import Table

ORDER = ("data", "env", "model", "curriculum", "hardware", "logger", "paths")


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


def metrics_table(title: str, columns: Mapping[str, Mapping[str, float]], keys: list[str]) -> None:
    """Print metric rows with one column per strategy (e.g. ours vs buy-and-hold)."""
    table = Table(title=title)
    table.add_column("metric")
    for name in columns:
        table.add_column(name, justify="right")
    for key in keys:
        row = [key]
        for values in columns.values():
            v = values.get(key)
            row.append("-" if v is None else f"{v:.4f}")
        table.add_row(*row)
    rich.print(table)
