"""From a data source to a validated, aligned, featured and normalised :class:`Market`.

source.load() -> time range (data.start, data.end) -> validate (pandera) -> quality report
-> align tickers -> resample -> features (cached, with the quality numbers) -> split ->
normalisation fitted on the training split only.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np
import polars as pl

from datamodules.bars import align, bar_minutes, resample, session_stats, sessions
from datamodules.cache import cache_key, cached_build
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
from datamodules.quality import QualityConfig, assess, failure, measure, summary_line
from datamodules.schema import validate_bars
from datamodules.splits import Split, SplitConfig
from datamodules.timerange import TimeRange

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
    quality: QualityConfig
    time_range: TimeRange
    name: ClassVar[str]
    is_synthetic: ClassVar[bool]

    def load(self) -> pl.DataFrame: ...

    def fingerprint(self) -> dict: ...


@dataclass(frozen=True)
class MarketData:
    """A normalised market, its time split and the window settings for forecasters.

    ``quality`` is the data-quality report of the raw bars (:func:`datamodules.quality.assess`;
    None when ``data.quality.enabled`` is false); ``cache_hit`` says whether the features came
    from the feature cache.
    """

    market: Market
    split: Split
    window: int
    batch_size: int
    num_workers: int = 0
    quality: dict | None = None
    cache_hit: bool = False
    cache_key: str = ""  # the feature-cache key: identifies the bars and features by content


def build_market_data(source: Source) -> MarketData:
    """Build the run's market from a data source (the ``data`` node, see ``conf/data/``).

    The source loads the raw bars; everything after that is the same for every source:
    the time range (``data.start``, ``data.end``), validation, the data-quality report (one
    log line; a check above its ``data.quality.fail`` threshold raises
    :class:`~datamodules.quality.QualityError`), alignment, resampling, features (cached in
    ``source.cache_dir`` under a key made of ``source.fingerprint()`` and the settings that
    shape the features), the time split and the normalisation fitted on the training split.
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
        "range": source.time_range.key(),
        "quality": source.quality.measuring() if source.quality.enabled else None,
    }

    def build() -> tuple[pl.DataFrame, dict]:
        loaded = _conform(source.load(), source)
        raw = validate_bars(source.time_range.apply(loaded, tickers, f"the {source.name} data"))
        measured = measure(raw, source.quality) if source.quality.enabled else None
        aligned = align(raw, tickers, source.min_aligned_share)
        bars = resample(aligned, minutes, source.bar_size)
        counts = {str(t): int(n) for t, n in bars.group_by("ticker").len().iter_rows()}
        return add_features(bars, feature_cfg), {"quality": measured, "bars": counts}

    key = cache_key(describe)
    frame, record = cached_build(source.cache_dir, key, build)
    if source.cache_dir:
        log.info("features: %s (cache key %s)", "from the cache" if record["hit"] else "built", key)
    quality = None
    if source.quality.enabled:
        quality = assess(record["quality"], source.quality, source.name)
        line = summary_line(quality)
        (log.info if quality["status"] == "ok" else log.warning)("%s", line)
        if (failed := failure(quality)) is not None:
            raise failed
    market = _to_market(frame, source, minutes, record.get("bars"))
    parts = source.split.cut(market.num_bars, source.window + 2, source.window)
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
        quality=quality,
        cache_hit=bool(record["hit"]),
        cache_key=key,
    )


def normalise(market: Market, split: Split) -> Market:
    """Z-score each (ticker, feature) with statistics of the training split only (the bars of
    its spans, when it has several)."""
    rows = np.concatenate([np.arange(a, b) for a, b in split.spans("train")])
    mean, std = fit_normalisation(market.features, rows)
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


def too_short(source: Source, ticker: str, bars: int | None) -> DataError:
    """The paragraph for data too short for the features' warm-up and the window: how many
    bars there are and how many are needed."""
    warmup = source.features.warmup
    part = source.window + 2
    had = f"{bars} bars" if bars is not None else f"at most {warmup} bars"
    return DataError(
        f"{ticker} has {had} of {source.bar_size} ({source.name}) after alignment and "
        f"resampling; the features' warm-up uses the first {warmup} (data.features: the longest "
        "lookback plus data.features.warmup_bars), and each split part (train, val, test) "
        f"needs at least {part} more (data.window={source.window}, plus 2): at least "
        f"{warmup + 3 * part} bars are needed. Give more data (a longer file, an earlier "
        "data.start), or shorten data.window or the features' lookbacks."
    )


def _to_market(
    frame: pl.DataFrame, source: Source, minutes: int, bars: dict[str, int] | None = None
) -> Market:
    tickers = list(source.tickers)
    cfg = source.features
    names = cfg.names()
    per_ticker = {t: frame.filter(pl.col("ticker") == t).sort("timestamp") for t in tickers}
    lengths = {t: f.height for t, f in per_ticker.items()}
    if min(lengths.values()) == 0:
        short = min(lengths, key=lengths.get)
        raise too_short(source, short, (bars or {}).get(short))
    if len(set(lengths.values())) != 1:
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
