"""Per-ticker features known at each bar's close, computed with polars, and normalisation.

Every feature at bar t uses bars <= t only (backward rolling windows and recursive EMAs),
so a change to any later bar leaves it untouched; tests check that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from datamodules.errors import ConfigError


@dataclass(frozen=True)
class FeatureConfig:
    """Feature knobs (``data.features.*``); windows and horizons are in bars.

    Default: 5 log-return horizons + RSI + 2 EMA ratios + VWAP deviation + volatility +
    volume z-score + bar range = 12 features per ticker; intraday bars add 4 market-wide
    calendar encodings (time of day, day of week, as sin/cos).
    """

    return_horizons: tuple[int, ...] = (1, 3, 5, 10, 20)
    rsi_window: int = 14
    ema_spans: tuple[int, ...] = (10, 30)
    vwap_window: int = 20
    volatility_window: int = 20
    volume_window: int = 20
    liquidity_window: int = 20
    calendar: bool = True
    warmup_bars: int = field(default=0)  # extra bars dropped at the start, beyond the windows

    def __post_init__(self) -> None:
        for name in ("return_horizons", "ema_spans"):
            values = getattr(self, name)
            if isinstance(values, (str, int)) or not hasattr(values, "__iter__"):
                raise ConfigError(
                    f"data.features.{name} is {values!r}; it must be a list of bars, e.g. [1, 5]."
                )
            values = tuple(values)
            object.__setattr__(self, name, values)
            if not values:
                raise ConfigError(f"data.features.{name} is empty; list at least one window.")
            for v in values:
                _check_bars(f"data.features.{name}", v, 1)
            if len(set(values)) != len(values):
                raise ConfigError(
                    f"data.features.{name} is {list(values)}; each value may appear only once "
                    "(each gives one feature column)."
                )
        _check_bars("data.features.rsi_window", self.rsi_window, 1)
        _check_bars("data.features.vwap_window", self.vwap_window, 1)
        for name in ("volatility_window", "volume_window", "liquidity_window"):
            # a standard deviation over one bar is undefined
            _check_bars(f"data.features.{name}", getattr(self, name), 2)
        _check_bars("data.features.warmup_bars", self.warmup_bars, 0)
        if not isinstance(self.calendar, bool):
            raise ConfigError(f"data.features.calendar is {self.calendar!r}; use true or false.")

    @property
    def warmup(self) -> int:
        """Bars dropped at the start so every window and EMA has history."""
        longest = max(
            max(self.return_horizons),
            self.rsi_window * 3,
            max(self.ema_spans) * 2,
            self.vwap_window,
            self.volatility_window + 1,
            self.volume_window,
            self.liquidity_window + 1,
        )
        return longest + self.warmup_bars

    def names(self) -> list[str]:
        """Per-ticker feature names, in the order of the feature axis."""
        return (
            [f"logret_{h}" for h in self.return_horizons]
            + [f"rsi_{self.rsi_window}"]
            + [f"ema_ratio_{s}" for s in self.ema_spans]
            + [f"vwap_dev_{self.vwap_window}", f"volatility_{self.volatility_window}"]
            + [f"volume_z_{self.volume_window}", "range"]
        )


def _check_bars(key: str, value: object, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"{key} is {value!r}; it must be a whole number of bars >= {least}.")


CALENDAR_NAMES = ("tod_sin", "tod_cos", "dow_sin", "dow_cos")


def add_features(frame: pl.DataFrame, cfg: FeatureConfig) -> pl.DataFrame:
    """Add feature columns, ``sigma`` and ``adv`` (trailing, for impact) per ticker."""
    c = pl.col("close")
    logret = (c / c.shift(1)).log()
    typical = (pl.col("high") + pl.col("low") + c) / 3
    gain = logret.clip(lower_bound=0).fill_null(0)
    loss = (-logret).clip(lower_bound=0).fill_null(0)
    alpha = 1.0 / cfg.rsi_window
    avg_gain = gain.ewm_mean(alpha=alpha, adjust=False)
    avg_loss = loss.ewm_mean(alpha=alpha, adjust=False)
    total = avg_gain + avg_loss
    rsi = pl.when(total > 0).then(avg_gain / total).otherwise(0.5) - 0.5
    log_volume = (pl.col("volume") + 1).log()
    vol_std = log_volume.rolling_std(cfg.volume_window)
    exprs = [(c / c.shift(h)).log().alias(f"logret_{h}") for h in cfg.return_horizons]
    exprs.append(rsi.alias(f"rsi_{cfg.rsi_window}"))
    exprs += [
        (c / c.ewm_mean(span=s, adjust=False) - 1).alias(f"ema_ratio_{s}") for s in cfg.ema_spans
    ]
    vwap = (typical * pl.col("volume")).rolling_sum(cfg.vwap_window) / pl.col("volume").rolling_sum(
        cfg.vwap_window
    )
    exprs.append(
        pl.when(vwap > 0).then(c / vwap - 1).otherwise(0.0).alias(f"vwap_dev_{cfg.vwap_window}")
    )
    exprs.append(
        logret.rolling_std(cfg.volatility_window).alias(f"volatility_{cfg.volatility_window}")
    )
    exprs.append(
        pl.when(vol_std > 0)
        .then((log_volume - log_volume.rolling_mean(cfg.volume_window)) / vol_std)
        .otherwise(0.0)
        .alias(f"volume_z_{cfg.volume_window}")
    )
    exprs.append((pl.col("high") / pl.col("low")).log().alias("range"))
    exprs.append(logret.rolling_std(cfg.liquidity_window).alias("sigma"))
    exprs.append(pl.col("volume").rolling_mean(cfg.liquidity_window).alias("adv"))
    out = frame.sort("ticker", "timestamp").with_columns(*(e.over("ticker") for e in exprs))
    position = pl.int_range(pl.len()).over("ticker")
    return out.filter(position >= cfg.warmup)


def calendar_features(timestamps: np.ndarray) -> np.ndarray:
    """(T, 4) time-of-day and day-of-week encodings, each on the unit circle."""
    minutes = (timestamps - timestamps.astype("datetime64[D]")) / np.timedelta64(1, "m")
    days = timestamps.astype("datetime64[D]").astype(np.int64)
    dow = (days + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    tod = 2 * math.pi * minutes / 1440.0
    week = 2 * math.pi * dow / 7.0
    return np.stack([np.sin(tod), np.cos(tod), np.sin(week), np.cos(week)], axis=1).astype(
        np.float32
    )


def fit_normalisation(
    features: np.ndarray, rows: slice | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std per (asset, feature) over ``rows`` only (a slice, or the bar indices, of
    the training split)."""
    train = features[rows].astype(np.float64)
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    return mean, std
