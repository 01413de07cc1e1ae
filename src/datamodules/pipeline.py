"""From a data config to a validated, aligned, featured and normalised :class:`Market`.

source -> validate (pandera) -> align tickers -> resample -> features (cached) -> split ->
normalisation fitted on the training split only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import polars as pl

from datamodules.bars import align, bar_minutes, resample, session_stats, sessions
from datamodules.cache import cache_key, cached_frame, file_fingerprint
from datamodules.config import dataclass_from
from datamodules.errors import ConfigError, DataError
from datamodules.features import (
    CALENDAR_NAMES,
    FeatureConfig,
    add_features,
    calendar_features,
    fit_normalisation,
)
from datamodules.market import Market
from datamodules.schema import validate_bars
from datamodules.sources import load_files, load_sample, sample_path
from datamodules.splits import Split, time_split, walk_forward
from datamodules.synthetic import SyntheticConfig, generate_bars

log = logging.getLogger(__name__)

SOURCES = ("synthetic", "sample", "csv", "parquet")


@dataclass(frozen=True)
class MarketData:
    """A normalised market, its time split and the window settings for forecasters."""

    market: Market
    split: Split
    window: int
    batch_size: int
    num_workers: int = 0


def build_market_data(
    *,
    source: str,
    tickers: Sequence[str],
    bar_size: str,
    seed: int = 0,
    window: int = 64,
    batch_size: int = 256,
    num_workers: int = 0,
    split: Mapping | None = None,
    features: Mapping | None = None,
    synthetic: Mapping | None = None,
    files: str | Mapping[str, str] | Sequence[str] | None = None,
    columns: Mapping[str, str] | None = None,
    ticker_column: str | None = None,
    timestamp_format: str | None = None,
    timezone: str | None = None,
    sessions_per_year: float | None = None,
    min_aligned_share: float = 0.8,
    cache_dir: str | None = None,
) -> MarketData:
    """Build the run's market from the ``data`` config group (see ``conf/data/*.yaml``)."""
    if source not in SOURCES:
        raise ConfigError(f"data.source is '{source}'; choose one of {', '.join(SOURCES)}.")
    tickers = list(tickers)
    if not tickers or len(set(tickers)) != len(tickers):
        raise ConfigError(f"env.tickers must list distinct tickers; got {tickers}.")
    minutes = bar_minutes(bar_size)
    feature_cfg = dataclass_from(FeatureConfig, features or {}, "data.features")
    synth_cfg = dataclass_from(SyntheticConfig, synthetic or {}, "data.synthetic")
    if source == "synthetic" and sessions_per_year is None:
        sessions_per_year = 252
    if source in ("csv", "parquet") and not files:
        raise ConfigError(f"data={source} needs data.files (ticker -> path, or one path).")

    describe: dict = {
        "source": source,
        "tickers": tickers,
        "bar_size": minutes,
        "features": feature_cfg.__dict__,
        "timezone": timezone,
        "min_aligned_share": min_aligned_share,
    }
    if source == "synthetic":
        describe.update(seed=seed, synthetic=synth_cfg.__dict__)
    elif source == "sample":
        describe["files"] = [file_fingerprint(str(sample_path()))]
    else:
        if isinstance(files, Mapping):  # which file is which ticker is part of the key
            prints = {t: file_fingerprint(p) for t, p in files.items() if _exists(p)}
        else:
            paths = [files] if isinstance(files, str) else list(files)
            prints = [file_fingerprint(p) for p in paths if _exists(p)]
        describe.update(
            files=prints,
            columns=dict(columns or {}),
            ticker_column=ticker_column,
            timestamp_format=timestamp_format,
        )

    def build() -> pl.DataFrame:
        if source == "synthetic":
            raw = generate_bars(tickers, minutes, seed, synth_cfg)
        elif source == "sample":
            raw = load_sample(tickers)
        else:
            raw = load_files(
                files, tickers, source, columns, ticker_column, timestamp_format, timezone
            )
        raw = validate_bars(raw)
        aligned = align(raw, tickers, min_aligned_share)
        bars = resample(aligned, minutes, bar_size)
        return add_features(bars, feature_cfg)

    frame = cached_frame(cache_dir, cache_key(describe), build)
    market = _to_market(frame, tickers, minutes, feature_cfg, sessions_per_year, source)
    split_cfg = dict(split or {})
    parts = _split(market.num_bars, split_cfg, window + 2)
    market = normalise(market, parts)
    log.info(
        "market: %s, %d bars of %s, %s; train %s val %s test %s",
        ", ".join(tickers),
        market.num_bars,
        bar_size,
        source,
        parts.train,
        parts.val,
        parts.test,
    )
    return MarketData(
        market=market, split=parts, window=window, batch_size=batch_size, num_workers=num_workers
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


def _split(num_bars: int, cfg: dict, min_bars: int) -> Split:
    train = float(cfg.get("train", 0.7))
    val = float(cfg.get("val", 0.15))
    gap = int(cfg.get("gap_bars", 0))
    folds = cfg.get("folds")
    fold = cfg.get("fold")
    if folds:
        all_folds = walk_forward(num_bars, int(folds), train, val, gap, min_bars)
        k = int(fold or 0)
        if not 0 <= k < len(all_folds):
            raise ConfigError(f"data.split.fold={fold} but data.split.folds={folds}.")
        return all_folds[k]
    return time_split(num_bars, train, val, gap, min_bars)


def _to_market(
    frame: pl.DataFrame,
    tickers: list[str],
    minutes: int,
    cfg: FeatureConfig,
    sessions_per_year: float | None,
    source: str,
) -> Market:
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
    per_session, per_year = session_stats(stamps, session, sessions_per_year)
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
        synthetic=source == "synthetic",
        source=source,
    )


def _exists(path: str) -> bool:
    return Path(path).is_file()
