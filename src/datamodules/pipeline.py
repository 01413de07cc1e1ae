"""From a data source to a validated, aligned, featured and normalised :class:`Market`.

source.load() -> validate (pandera) -> align tickers -> resample -> features (cached) ->
split -> normalisation fitted on the training split only.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np
import polars as pl

from datamodules.bars import align, bar_minutes, resample, session_stats, sessions
from datamodules.cache import cache_key, cached_frame
from datamodules.columns import BAR_COLUMNS, LOAD_COLUMNS
from datamodules.errors import DataError
from datamodules.features import (
    CALENDAR_NAMES,
    FeatureConfig,
    add_features,
    calendar_features,
    fit_normalisation,
)
from datamodules.market import Market
from datamodules.schema import validate_bars
from datamodules.splits import Split, SplitConfig

log = logging.getLogger(__name__)


@runtime_checkable
class Source(Protocol):
    """What the pipeline reads of a data source (:class:`datamodules.sources.base.BarSource`
    is the base every source of the project derives from)."""

    tickers: tuple[str, ...]
    bar_size: str
    window: int
    batch_size: int
    num_workers: int
    sessions_per_year: float | None
    min_aligned_share: float
    cache_dir: str | None
    features: FeatureConfig
    split: SplitConfig
    name: ClassVar[str]
    is_synthetic: ClassVar[bool]

    def load(self) -> pl.DataFrame: ...

    def fingerprint(self) -> dict: ...


@dataclass(frozen=True)
class MarketData:
    """A normalised market, its time split and the window settings for forecasters."""

    market: Market
    split: Split
    window: int
    batch_size: int
    num_workers: int = 0


def build_market_data(source: Source) -> MarketData:
    """Build the run's market from a data source (the ``data`` node, see ``conf/data/``).

    The source loads the raw bars; everything after that is the same for every source:
    validation, alignment, resampling, features (cached in ``source.cache_dir`` under a key
    made of ``source.fingerprint()`` and the settings that shape the features), the time
    split and the normalisation fitted on the training split only.
    """
    if not isinstance(source, Source):
        raise TypeError(
            "build_market_data takes a data source such as "
            "datamodules.sources.SyntheticSource(tickers=[...]) (a BarSource); got "
            f"{type(source).__name__} {source!r}."
        )
    tickers = list(source.tickers)
    minutes = bar_minutes(source.bar_size)
    feature_cfg = source.features
    describe = {
        "source": f"{type(source).__module__}.{type(source).__qualname__}",
        "raw": source.fingerprint(),
        "tickers": tickers,
        "bar_size": minutes,
        "features": asdict(feature_cfg),
        "min_aligned_share": source.min_aligned_share,
    }

    def build() -> pl.DataFrame:
        raw = validate_bars(_conform(source.load(), source))
        aligned = align(raw, tickers, source.min_aligned_share)
        bars = resample(aligned, minutes, source.bar_size)
        return add_features(bars, feature_cfg)

    frame = cached_frame(source.cache_dir, cache_key(describe), build)
    market = _to_market(frame, source, minutes)
    parts = source.split.cut(market.num_bars, source.window + 2)
    market = normalise(market, parts)
    log.info(
        "market: %s, %d bars of %s, %s; train %s val %s test %s",
        ", ".join(tickers),
        market.num_bars,
        source.bar_size,
        source.name,
        parts.train,
        parts.val,
        parts.test,
    )
    return MarketData(
        market=market,
        split=parts,
        window=source.window,
        batch_size=source.batch_size,
        num_workers=source.num_workers,
    )


def normalise(market: Market, split: Split) -> Market:
    """Z-score each (ticker, feature) with statistics of the training split only."""
    mean, std = fit_normalisation(market.features, slice(*split.train))
    feats = ((market.features - mean) / std).astype(np.float32)
    stats = {
        name: {"mean": mean[:, j].tolist(), "std": std[:, j].tolist()}
        for j, name in enumerate(market.feature_names)
    }
    return Market(
        **{
            **{f.name: getattr(market, f.name) for f in fields(Market)},
            "features": feats,
            "normalisation": stats,
        }
    )


def _conform(raw: object, source: Source) -> pl.DataFrame:
    """The loaded frame in :data:`LOAD_COLUMNS` order and types, or a DataError saying why not.

    Built-in sources already return exactly that; a user's source may leave out ``_file``
    and ``_row`` (then the source's name and the row number per ticker stand in), return
    Date timestamps or integer volumes.
    """
    who = f"data source {type(source).__name__} (data._target_)"
    if not isinstance(raw, pl.DataFrame):
        raise DataError(
            f"{who} returned a {type(raw).__name__} from load(); it must return a polars "
            f"DataFrame with columns {', '.join(LOAD_COLUMNS)}."
        )
    missing = [c for c in ("ticker", *BAR_COLUMNS) if c not in raw.columns]
    if missing:
        raise DataError(
            f"{who} returned no column(s) {', '.join(missing)}; its columns are "
            f"{', '.join(raw.columns)}, and a source returns {', '.join(LOAD_COLUMNS)}."
        )
    if "_file" not in raw.columns:
        raw = raw.with_columns(pl.lit(f"{source.name}").alias("_file"))
    if "_row" not in raw.columns:
        raw = raw.with_columns((pl.int_range(pl.len()).over("ticker") + 1).alias("_row"))
    raw = raw.with_columns(pl.col("ticker").cast(pl.String))
    present = set(raw["ticker"].unique().to_list())
    absent = [t for t in source.tickers if t not in present]
    if absent:
        raise DataError(
            f"env.tickers asks for {', '.join(absent)}, but {who} returned no bars of "
            f"{'it' if len(absent) == 1 else 'them'}."
        )
    raw = raw.filter(pl.col("ticker").is_in(list(source.tickers)))
    stamp = raw.schema["timestamp"]
    naive = stamp == pl.Date or (isinstance(stamp, pl.Datetime) and stamp.time_zone is None)
    if not naive:
        raise DataError(
            f"{who} returned column 'timestamp' of type {stamp}; it must be a naive Datetime "
            "(or Date) in the data's timezone, e.g. .dt.convert_time_zone(zone)"
            ".dt.replace_time_zone(None) of aware times."
        )
    for name in BAR_COLUMNS[1:]:
        if not raw.schema[name].is_numeric():
            raise DataError(
                f"{who} returned column '{name}' of type {raw.schema[name]}; it must be numeric."
            )
    return raw.with_columns(
        pl.col("timestamp").cast(pl.Datetime("us")),
        *(pl.col(c).cast(pl.Float64) for c in BAR_COLUMNS[1:]),
        pl.col("_file").cast(pl.String),
        pl.col("_row").cast(pl.Int64),
    ).select(*LOAD_COLUMNS)


def _to_market(frame: pl.DataFrame, source: Source, minutes: int) -> Market:
    tickers = list(source.tickers)
    cfg = source.features
    names = cfg.names()
    per_ticker = {t: frame.filter(pl.col("ticker") == t).sort("timestamp") for t in tickers}
    lengths = {t: f.height for t, f in per_ticker.items()}
    if len(set(lengths.values())) != 1 or min(lengths.values()) == 0:
        raise DataError(f"After features, the tickers have different numbers of bars: {lengths}.")
    stamps = per_ticker[tickers[0]]["timestamp"].to_numpy().astype("datetime64[us]")

    def stack(col: str) -> np.ndarray:
        return np.stack([per_ticker[t][col].to_numpy() for t in tickers], axis=1).astype(np.float64)

    feats = np.stack(
        [np.stack([per_ticker[t][n].to_numpy() for n in names], axis=1) for t in tickers], axis=1
    ).astype(np.float32)
    if not np.isfinite(feats).all():
        bad = np.argwhere(~np.isfinite(feats))[0]
        raise DataError(
            f"Feature {names[bad[2]]} of {tickers[bad[1]]} is not finite at {stamps[bad[0]]}; "
            "the data likely has a zero price or volume run there."
        )
    session = sessions(stamps)
    per_session, per_year = session_stats(stamps, session, source.sessions_per_year)
    intraday = minutes < 1440 and per_session > 1
    time_feats = (
        calendar_features(stamps)
        if (intraday and cfg.calendar)
        else np.zeros((len(stamps), 0), np.float32)
    )
    return Market(
        tickers=tuple(tickers),
        timestamps=stamps,
        open=stack("open"),
        high=stack("high"),
        low=stack("low"),
        close=stack("close"),
        volume=stack("volume"),
        session=session,
        bar_minutes=float(minutes),
        bars_per_session=per_session,
        sessions_per_year=per_year,
        features=feats,
        feature_names=tuple(names),
        time_features=time_feats,
        time_feature_names=CALENDAR_NAMES if time_feats.shape[1] else (),
        sigma=np.nan_to_num(stack("sigma")),
        adv=np.nan_to_num(stack("adv")),
        synthetic=source.is_synthetic,
        source=source.name,
    )
