"""The market-data type handed upward to the simulator, the envs and the forecasters."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Market:
    """Aligned bars of several tickers on one time axis, with features known at each bar's close.

    Arrays are indexed ``[time, asset]`` (``features``: ``[time, asset, feature]``). Row ``t``
    holds what was known at the close of bar ``t``: its OHLCV, and features built from bars
    ``<= t``. ``sigma`` (std of per-bar log returns) and ``adv`` (mean shares per bar) are
    trailing estimates known at the close of bar ``t``; the simulator uses them for the
    square-root market impact of a trade decided at ``t`` and filled at the open of ``t+1``.
    """

    tickers: tuple[str, ...]
    timestamps: np.ndarray  # (T,) datetime64[us], bar start, in the data's timezone (naive)
    open: np.ndarray  # (T, A) float64, price units
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray  # (T, A) float64, shares per bar
    session: np.ndarray  # (T,) int64, index of the trading session (calendar day) of each bar
    bar_minutes: float  # bar length in minutes (1440 for daily bars)
    bars_per_session: float  # median number of bars in a session
    sessions_per_year: float  # 252 for equities, about 260 for FX, 365 for crypto
    features: np.ndarray  # (T, A, F) float32, per-ticker features (normalised when fitted)
    feature_names: tuple[str, ...]
    time_features: np.ndarray  # (T, G) float32, market-wide calendar encodings
    time_feature_names: tuple[str, ...]
    sigma: np.ndarray  # (T, A) trailing std of per-bar log returns (fraction per bar)
    adv: np.ndarray  # (T, A) trailing mean volume per bar (shares)
    synthetic: bool = False
    source: str = ""
    normalisation: dict = field(default_factory=dict)  # feature -> (mean, std) per ticker

    @property
    def num_bars(self) -> int:
        return int(self.close.shape[0])

    @property
    def num_assets(self) -> int:
        return len(self.tickers)

    @property
    def periods_per_year(self) -> float:
        """Bars per year: bars per session times sessions per year (annualisation factor)."""
        return float(self.bars_per_session * self.sessions_per_year)

    def slice(self, start: int, stop: int) -> Market:
        """Bars ``start`` to ``stop - 1``, with every per-bar array cut the same way."""
        cut = slice(start, stop)
        return Market(
            tickers=self.tickers,
            timestamps=self.timestamps[cut],
            open=self.open[cut],
            high=self.high[cut],
            low=self.low[cut],
            close=self.close[cut],
            volume=self.volume[cut],
            session=self.session[cut],
            bar_minutes=self.bar_minutes,
            bars_per_session=self.bars_per_session,
            sessions_per_year=self.sessions_per_year,
            features=self.features[cut],
            feature_names=self.feature_names,
            time_features=self.time_features[cut],
            time_feature_names=self.time_feature_names,
            sigma=self.sigma[cut],
            adv=self.adv[cut],
            synthetic=self.synthetic,
            source=self.source,
            normalisation=self.normalisation,
        )
