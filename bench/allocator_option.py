"""The ``--keep-freed-mib`` option the benches share: the allocator setting every row of a bench
runs under (``experiments.runtime.allocator``), by default the one a run of the app sets."""

from __future__ import annotations

import argparse


def add_keep_freed_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--keep-freed-mib`` to a bench's parser."""
    parser.add_argument(
        "--keep-freed-mib",
        default="config",
        help="MiB of freed memory the process keeps (experiments.runtime.allocator), for every "
        "row: 'config' (default) = conf/hardware/cpu.yaml's hardware.keep_freed_mib, as a run "
        "of the app sets it; 'none' = glibc's defaults",
    )


def keep_freed_setting(value: str) -> int | None:
    """``--keep-freed-mib``: 'config' (conf/hardware/cpu.yaml's), 'none', or a number of MiB."""
    if value == "config":
        from omegaconf import OmegaConf

        from experiments.config.groups import CONF_DIR

        return OmegaConf.load(CONF_DIR / "hardware" / "cpu.yaml").get("keep_freed_mib")
    return None if value == "none" else int(value)
