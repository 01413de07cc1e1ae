"""Raw OHLCV bars -> the normalised feature window a :class:`~experiments.inference.forecaster.Forecaster`
takes, or the observation a :class:`~experiments.inference.policy.Policy` takes, with the training
pipeline's own feature code (:mod:`datamodules.features`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from datamodules.features import FeatureConfig, add_features, calendar_features
from experiments.inference.bundle import InputShapeError

COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")


def _frame(bars: Any, tickers: list[str]) -> pl.DataFrame:
    """Long polars frame (ticker, timestamp, open, high, low, close, volume) from a polars or
    pandas frame, or a dict ticker -> frame / dict of arrays."""
    if isinstance(bars, dict):
        parts = []
        for ticker, part in bars.items():
            frame = part if isinstance(part, pl.DataFrame) else pl.DataFrame(part)
            parts.append(frame.with_columns(pl.lit(ticker).alias("ticker")))
        frame = pl.concat([p.select("ticker", *COLUMNS) for p in parts], how="vertical_relaxed")
    elif isinstance(bars, pl.DataFrame):
        frame = bars
    else:
        frame = pl.from_pandas(bars)
    missing = [c for c in ("ticker", *COLUMNS) if c not in frame.columns]
    if missing:
        raise InputShapeError(
            f"The bars lack column(s) {missing}; give ticker, timestamp, open, high, low, close, "
            "volume (one row per ticker and bar, at the model's bar size)."
        )
    frame = frame.select(
        pl.col("ticker").cast(pl.String),
        pl.col("timestamp").cast(pl.Datetime("us")),
        *(pl.col(c).cast(pl.Float64) for c in COLUMNS[1:]),
    )
    got = sorted(set(frame["ticker"].to_list()))
    if got != sorted(tickers):
        raise InputShapeError(
            f"The bars hold tickers {got}; the forecaster was trained on {tickers}."
        )
    return frame


def latest_features(meta: dict, bars: Any, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The last ``rows`` bars' raw per-ticker features ``(rows, A, F)`` float32 (the pipeline's
    layout) and their timestamps, computed from raw bars by the training feature code."""
    tickers = list(meta["tickers"])
    cfg_values = dict(meta.get("features_config") or {})
    cfg = FeatureConfig(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in cfg_values.items()}
    )
    featured = add_features(_frame(bars, tickers), cfg)
    per = {t: featured.filter(pl.col("ticker") == t).sort("timestamp") for t in tickers}
    stamps = per[tickers[0]]["timestamp"].to_numpy().astype("datetime64[us]")
    for t, f in per.items():
        if f.height != len(stamps) or (f["timestamp"].to_numpy() != stamps).any():
            raise InputShapeError(
                f"The bars of {t} are not on the same timestamps as {tickers[0]}'s; give "
                "aligned bars (the same timestamps for every ticker)."
            )
    if len(stamps) < rows:
        raise InputShapeError(
            f"The bars give {len(stamps)} bars after the {cfg.warmup}-bar feature warm-up; the "
            f"model needs {rows}: give at least {rows + cfg.warmup} bars."
        )
    raw = np.stack(
        [
            np.stack([per[t][n].to_numpy()[-rows:] for n in meta["feature_names"]], axis=1)
            for t in tickers
        ],
        axis=1,
    ).astype(np.float32)  # (rows, A, F), as the pipeline stores them
    if not np.isfinite(raw).all():
        raise InputShapeError("The last bars' features are not finite (zero price or volume).")
    return raw, stamps[-rows:]


def window_from_bars(model, bars: Any) -> tuple[np.ndarray, np.ndarray]:
    """(window ``(L, F_in)`` float32, age ``(L,)`` float32 minutes) of the last ``L`` bars."""
    raw, stamps = latest_features(model.metadata, bars, model.window)
    cols = [model.normalize(raw)]
    if model.metadata.get("time_feature_names"):
        cols.append(calendar_features(stamps))
    window = np.concatenate(cols, axis=1).astype(np.float32)
    minutes = ((stamps - stamps[0]) / np.timedelta64(1, "m")).astype(np.float32)
    return window, (minutes[-1] - minutes).astype(np.float32)


def observation_from_bars(policy, bars: Any, held: Any = None) -> np.ndarray:
    """The observation ``(obs_dim,)`` the env would show at the last bar of ``bars``: the
    normalised features of the last ``window`` bars (oldest first), the weights held per
    ticker (signed fractions of equity; default flat), then calendar features if the policy
    was trained with them."""
    meta = policy.metadata
    tickers = list(meta["tickers"])
    raw, stamps = latest_features(meta, bars, int(meta["window"]))
    weights = np.zeros(len(tickers), np.float32) if held is None else np.asarray(held, np.float32)
    if weights.shape != (len(tickers),):
        raise InputShapeError(
            f"held has shape {weights.shape}; give one weight per ticker {tickers} (signed "
            "fraction of equity, 0 = flat)."
        )
    parts = [policy.normalize(raw).reshape(-1), weights]
    if any(n.startswith("calendar.") for n in policy.observation_names):
        parts.append(calendar_features(stamps[-1:])[0])
    obs = np.concatenate(parts).astype(np.float32)
    if obs.shape != (policy.obs_dim,):
        raise InputShapeError(
            f"The observation built from bars has {obs.size} columns; the policy expects "
            f"{policy.obs_dim} ({policy.folder}/metadata.json observation_names)."
        )
    return obs
