"""The base of every data source: the pipeline settings all sources share, and what one loads.

A data source is a frozen dataclass chosen by ``_target_`` in ``conf/data/``: its fields are
the shared pipeline settings below plus its own knobs, all at ``data.*``. It only loads the
long frame of raw bars; :func:`datamodules.pipeline.build_market_data` validates, aligns,
resamples, adds features (cached), splits and normalises them. Writing a new source (in
this package or in your own) is one subclass that implements :meth:`BarSource.load` and
:meth:`BarSource.fingerprint`, and one config file that names it in ``_target_``.

This module is light: importing it imports neither torch nor pandera.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from datamodules.bars import bar_minutes
from datamodules.config import dataclass_from
from datamodules.errors import ConfigError
from datamodules.features import FeatureConfig
from datamodules.quality import QualityConfig
from datamodules.splits import SplitConfig
from datamodules.timerange import TimeRange

if TYPE_CHECKING:
    import polars as pl

    from datamodules.pipeline import MarketData


@dataclass(frozen=True, kw_only=True)
class BarSource(ABC):
    """Base of every data source: the pipeline settings every source shares (``data.*``).

    ``tickers`` to load (from ``env.tickers``); ``bar_size`` such as 15min, 1h or 1d (never
    finer than the data); ``window`` bars in each forecaster input window; ``batch_size``
    windows per training batch; ``num_workers`` DataLoader worker processes;
    ``sessions_per_year`` for annualisation (None = inferred from the data: about 252 for
    equities, 260 for FX, 365 for crypto); ``min_aligned_share`` of each ticker's bars that
    aligning the tickers on common timestamps must keep (a share in [0, 1]); ``cache_dir``
    of the feature cache (None = off); ``start`` and ``end``: the time range read, both ends
    included, in the data's own time (``YYYY-MM-DD`` or ``YYYY-MM-DD HH:MM``; None = no
    bound; see :mod:`datamodules.timerange`); ``features``, ``split`` and ``quality`` (the
    data-quality report's checks and thresholds) knobs.

    The range is applied to what :meth:`load` returns, for every source; a source that can
    read less (the SQL source pushes it into its query) reads :attr:`time_range` itself.

    A subclass sets ``name`` (the tag of runs on it and ``Market.source``; the class name
    when left unset), ``is_synthetic`` (runs on it are tagged synthetic) and implements
    :meth:`load` and :meth:`fingerprint`. Checks that need only the config belong in
    ``__post_init__`` (call ``super().__post_init__()`` first), so a config is refused before
    any data is touched.
    """

    tickers: tuple[str, ...]
    bar_size: str = "15min"
    window: int = 64
    batch_size: int = 256
    num_workers: int = 0
    sessions_per_year: float | None = None
    min_aligned_share: float = 0.8
    cache_dir: str | None = None
    start: str | None = None
    end: str | None = None
    features: FeatureConfig = field(default_factory=FeatureConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)

    name: ClassVar[str] = ""
    is_synthetic: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__

    def __post_init__(self) -> None:
        _set(self, "tickers", _tickers(self.tickers))
        bar_minutes(self.bar_size)  # raises a ConfigError naming data.bar_size
        _whole(self.window, "data.window", 1, "bars in each forecaster input window")
        _whole(self.batch_size, "data.batch_size", 1, "windows per training batch")
        _whole(
            self.num_workers,
            "data.num_workers",
            0,
            "DataLoader worker processes; 0 = load in the main process",
        )
        per_year = self.sessions_per_year
        if per_year is not None:
            if (
                isinstance(per_year, bool)
                or not isinstance(per_year, (int, float))
                or per_year <= 0
            ):
                raise ConfigError(
                    f"data.sessions_per_year is {per_year!r}; it must be > 0 (252 for equities, "
                    "260 for FX, 365 for crypto), or null to infer it from the data."
                )
            _set(self, "sessions_per_year", float(per_year))
        share = self.min_aligned_share
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
            raise ConfigError(
                f"data.min_aligned_share is {share!r}; it is the least share of each ticker's "
                "bars that aligning the tickers must keep, in [0, 1]."
            )
        if self.cache_dir is not None:
            if not isinstance(self.cache_dir, (str, Path)):
                raise ConfigError(
                    f"data.cache_dir is {self.cache_dir!r}; give a folder, or null to turn the "
                    "feature cache off."
                )
            _set(self, "cache_dir", str(self.cache_dir) or None)
        _set(self, "features", dataclass_from(FeatureConfig, self.features, "data.features"))
        _set(self, "split", dataclass_from(SplitConfig, self.split, "data.split"))
        _set(self, "quality", dataclass_from(QualityConfig, self.quality, "data.quality"))
        _set(self, "_range", TimeRange.from_config(self.start, self.end))

    @property
    def time_range(self) -> TimeRange:
        """``start`` and ``end`` as a half-open range ``[lower, upper)``."""
        return self._range

    @abstractmethod
    def load(self) -> pl.DataFrame:
        """The raw bars of ``tickers``, one row per (ticker, timestamp), in :data:`LOAD_COLUMNS`.

        ``ticker`` (String), ``timestamp`` (naive Datetime, in the data's timezone), ``open``,
        ``high``, ``low``, ``close`` (price units) and ``volume`` (shares per bar), all
        Float64, plus ``_file`` (String) and ``_row`` (Int64, 1-based) naming where each row
        came from, so validation errors can point at it. Bars need not be aligned across
        tickers nor at ``bar_size``: the pipeline does both.
        """

    @abstractmethod
    def fingerprint(self) -> dict:
        """A JSON-able description of the raw bars :meth:`load` returns, for the cache key.

        It must change whenever the bars would: e.g. each file's path, size and modification
        time, or the seed and the generator's knobs. The pipeline adds its own settings.
        """

    def build(self) -> MarketData:
        """The validated, aligned, featured, split and normalised market of this source."""
        from datamodules.pipeline import build_market_data  # heavy (pandera): only when built

        return build_market_data(self)


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)  # coercion inside a frozen dataclass's __post_init__


def _tickers(tickers: object) -> tuple[str, ...]:
    if isinstance(tickers, str) or not _is_list(tickers):
        raise ConfigError(
            f"env.tickers is {tickers!r}; it must be a list of ticker names, e.g. [MSFT] or "
            "[NVDA, MSFT]."
        )
    names = list(tickers)
    if any(isinstance(t, (bool, float)) or not isinstance(t, (str, int)) for t in names):
        raise ConfigError(f"env.tickers is {names}; ticker names must be strings.")
    names = [str(t) for t in names]
    if not names or len(set(names)) != len(names) or not all(t.strip() for t in names):
        raise ConfigError(f"env.tickers must list distinct tickers; got {names}.")
    return tuple(names)


def _is_list(value: object) -> bool:
    return not isinstance(value, (str, bytes, Mapping)) and hasattr(value, "__iter__")


def _whole(value: object, key: str, least: int, meaning: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"{key} is {value!r}; it must be a whole number >= {least} ({meaning}).")
