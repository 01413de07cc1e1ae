"""The sample source: real daily prices of AAPL, GOOG, IBM and MSFT shipped in the package.

Split- and dividend-adjusted daily OHLCV from 2000-03 to 2013-03 (Quandl WIKI, public
domain); ``src/datamodules/data/SAMPLE_DATA.md`` has the provenance and the data-quality
report, and ``scripts/build_sample_data.py`` rebuilds the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import ClassVar

import polars as pl

from datamodules.cache import file_fingerprint
from datamodules.columns import LOAD_COLUMNS
from datamodules.errors import DataError
from datamodules.sources.base import BarSource

SAMPLE_TICKERS = ("AAPL", "GOOG", "IBM", "MSFT")


def sample_path() -> Path:
    """Path of the shipped Parquet file of real daily prices (see SAMPLE_DATA.md)."""
    return Path(str(resources.files("datamodules") / "data" / "sample_stocks.parquet"))


def load_sample(tickers: Sequence[str]) -> pl.DataFrame:
    """Split-adjusted daily OHLCV of AAPL, GOOG, IBM, MSFT (2000-03 to 2013-03, Quandl WIKI)."""
    _check_tickers(tickers)
    path = sample_path()
    frame = pl.read_parquet(path).filter(pl.col("ticker").is_in(list(tickers)))
    frame = frame.with_columns(
        pl.lit(f"{path.name}").alias("_file"),
        (pl.int_range(pl.len()).over("ticker") + 1).alias("_row"),
    )
    return frame.select(*LOAD_COLUMNS)


@dataclass(frozen=True, kw_only=True)
class SampleSource(BarSource):
    """The shipped real daily prices; ``tickers`` must be some of :data:`SAMPLE_TICKERS`.

    The bars are daily, so ``bar_size`` is 1d (finer bar sizes are refused).
    """

    bar_size: str = "1d"

    name: ClassVar[str] = "sample"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_tickers(self.tickers)

    def load(self) -> pl.DataFrame:
        return load_sample(self.tickers)

    def fingerprint(self) -> dict:
        return {"files": [file_fingerprint(str(sample_path()))]}


def _check_tickers(tickers: Sequence[str]) -> None:
    unknown = [t for t in tickers if t not in SAMPLE_TICKERS]
    if unknown:
        raise DataError(
            f"env.tickers asks for {', '.join(unknown)}, but data=sample only has "
            f"{', '.join(SAMPLE_TICKERS)}. Set env.tickers to some of those, or use "
            "data=synthetic (any ticker name) or data=csv with your own files."
        )
