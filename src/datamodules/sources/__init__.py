"""Data sources: plug-ins chosen by ``_target_`` in ``conf/data/`` that load raw bars.

Each is a frozen dataclass (a :class:`BarSource`) holding the shared pipeline settings and
its own knobs; ``source.build()`` runs the pipeline. Light: importing this package imports
neither torch nor pandera.
"""

from __future__ import annotations

from datamodules.columns import BAR_COLUMNS, LOAD_COLUMNS
from datamodules.sources.base import BarSource
from datamodules.sources.files import FileSource
from datamodules.sources.sample import SAMPLE_TICKERS, SampleSource, load_sample, sample_path
from datamodules.sources.sql import SQLSource
from datamodules.sources.synthetic import SyntheticSource

__all__ = [
    "BAR_COLUMNS",
    "LOAD_COLUMNS",
    "SAMPLE_TICKERS",
    "BarSource",
    "FileSource",
    "SQLSource",
    "SampleSource",
    "SyntheticSource",
    "load_sample",
    "sample_path",
]
