"""A deterministic synthetic market: correlated, fat-tailed, regime-switching bars.

Not real data: runs on it are tagged ``synthetic``. An optional planted component makes
the open-to-close return of bar t+1 predictable: it correlates with bar t's shock at
``planted_strength`` (a little less with bar t's observed return, which adds drift and the
volatility regime), so tests can check that a model learns exactly what is there.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from datamodules.errors import ConfigError

TRADING_DAYS = 252
_CLOCK = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*$")


@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the synthetic market (``data.synthetic.*``).

    ``annual_vol`` is the typical annualised volatility (fraction); ``correlation`` the
    pairwise correlation of the tickers' returns; ``regime_vol`` the volatility multipliers of
    the calm and the stressed regime, switched per session with ``regime_switch_prob``;
    ``tail_df`` the degrees of freedom of the Student-t shocks (lower = fatter tails);
    ``planted_strength`` in [0, 1): correlation between bar t's shock and bar t+1's
    open-to-close return; ``overnight_share`` of daily variance that falls in the overnight gap.
    """

    sessions: int = 600
    session_minutes: int = 390
    session_open: str = "09:30"
    start_date: str = "2020-01-02"
    annual_vol: float = 0.25
    annual_drift: float = 0.05
    correlation: float = 0.5
    regime_vol: tuple[float, float] = (0.7, 1.6)
    regime_switch_prob: float = 0.05
    tail_df: float = 4.0
    planted_strength: float = 0.0
    overnight_share: float = 0.2
    base_volume: float = 1_000_000.0

    def __post_init__(self) -> None:
        try:
            regime_vol = tuple(float(v) for v in self.regime_vol)
        except (TypeError, ValueError):
            regime_vol = ()
        if not 0.0 <= self.planted_strength < 1.0:
            raise ConfigError(
                f"data.synthetic.planted_strength is {self.planted_strength}; it is a "
                "correlation and must be in [0, 1)."
            )
        if not -1.0 < self.correlation < 1.0:
            raise ConfigError(
                f"data.synthetic.correlation is {self.correlation}; with n tickers it must be "
                "in (-1/(n-1), 1)."
            )
        if self.tail_df <= 2:
            raise ConfigError("data.synthetic.tail_df must be > 2 so the shocks have a variance.")
        sessions = self.sessions
        if isinstance(sessions, bool) or not isinstance(sessions, int) or sessions < 1:
            raise ConfigError(
                f"data.synthetic.sessions is {sessions!r}; it must be a whole number of "
                "trading days >= 1."
            )
        minutes = self.session_minutes
        if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= 1440:
            raise ConfigError(
                f"data.synthetic.session_minutes is {minutes!r}; it must be a whole number of "
                "minutes in 1..1440 (390 = 09:30-16:00, 1440 = round the clock)."
            )
        match = _CLOCK.match(str(self.session_open))
        if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
            raise ConfigError(
                f"data.synthetic.session_open is {self.session_open!r}; write the time of day "
                'of the first bar as HH:MM, e.g. "09:30".'
            )
        open_minute = int(match.group(1)) * 60 + int(match.group(2))
        if open_minute + minutes > 1440:
            raise ConfigError(
                f"data.synthetic.session_open {self.session_open} plus session_minutes "
                f"{minutes} runs past midnight, but a session is one calendar day. Use an "
                "earlier session_open (00:00 for a round-the-clock market) or fewer "
                "session_minutes."
            )
        try:
            np.datetime64(str(self.start_date), "D")
        except ValueError:
            raise ConfigError(
                f"data.synthetic.start_date is {self.start_date!r}; write a date as YYYY-MM-DD."
            ) from None
        if self.annual_vol <= 0:
            raise ConfigError(
                f"data.synthetic.annual_vol is {self.annual_vol}; it must be > 0 (a fraction, "
                "0.25 = 25% a year)."
            )
        if len(regime_vol) != 2 or min(regime_vol) <= 0:
            raise ConfigError(
                f"data.synthetic.regime_vol is {self.regime_vol!r}; give two positive "
                "volatility multipliers [calm, stressed], e.g. [0.7, 1.6]."
            )
        object.__setattr__(self, "regime_vol", regime_vol)
        if not 0.0 <= self.regime_switch_prob <= 1.0:
            raise ConfigError(
                f"data.synthetic.regime_switch_prob is {self.regime_switch_prob}; it is a "
                "probability per session and must be in [0, 1]."
            )
        if not 0.0 <= self.overnight_share < 1.0:
            raise ConfigError(
                f"data.synthetic.overnight_share is {self.overnight_share}; it is a share of "
                "the daily variance and must be in [0, 1)."
            )
        if self.base_volume <= 0:
            raise ConfigError(
                f"data.synthetic.base_volume is {self.base_volume}; it must be > 0 (shares per "
                "session)."
            )


def check_correlation(correlation: float, num_tickers: int) -> None:
    """Refuse a pairwise correlation that no ``num_tickers`` assets can have."""
    if not -1.0 / max(num_tickers - 1, 1) < correlation < 1.0:
        raise ConfigError(
            f"data.synthetic.correlation is {correlation}; with {num_tickers} tickers "
            "it must be in (-1/(n-1), 1)."
        )


def generate_bars(
    tickers: Sequence[str], bar_minutes: int, seed: int, config: SyntheticConfig
) -> pl.DataFrame:
    """Long frame of OHLCV bars for ``tickers``, identical for the same seed and config."""
    check_correlation(config.correlation, len(tickers))
    rng = np.random.default_rng(seed)
    n_assets = len(tickers)
    daily = bar_minutes >= 1440
    per_session = 1 if daily else math.ceil(config.session_minutes / bar_minutes)
    minutes = np.full(per_session, float(config.session_minutes if daily else bar_minutes))
    if not daily:
        minutes[-1] = config.session_minutes - bar_minutes * (per_session - 1)
    n_bars = config.sessions * per_session

    days = np.busday_offset(np.datetime64(config.start_date, "D"), 0, roll="forward")
    days = np.busday_offset(days, np.arange(config.sessions))
    if daily:
        stamps = np.repeat(days.astype("datetime64[us]"), 1)
    else:
        hour, minute = (int(x) for x in config.session_open.split(":"))
        open_at = np.timedelta64(hour * 60 + minute, "m")
        offsets = (np.arange(per_session) * bar_minutes).astype("timedelta64[m]")
        stamps = (days[:, None] + open_at + offsets[None, :]).reshape(-1).astype("datetime64[us]")

    asset_vol = config.annual_vol * rng.uniform(0.7, 1.3, n_assets)
    corr = np.full((n_assets, n_assets), config.correlation)
    np.fill_diagonal(corr, 1.0)
    chol = np.linalg.cholesky(corr)

    # Volatility regime per session (two-state Markov chain).
    regime = np.zeros(config.sessions, dtype=np.int64)
    switches = rng.random(config.sessions) < config.regime_switch_prob
    regime = np.cumsum(switches) % 2
    vol_mult = np.asarray(config.regime_vol)[regime]
    vol_mult = np.repeat(vol_mult, per_session)

    # Multivariate-t shocks with unit variance, correlated across assets.
    normal = rng.standard_normal((n_bars, n_assets)) @ chol.T
    chi = rng.chisquare(config.tail_df, size=(n_bars, 1))
    shocks = (
        normal / np.sqrt(chi / config.tail_df) * math.sqrt((config.tail_df - 2) / config.tail_df)
    )

    intraday_share = 1.0 - config.overnight_share
    bar_frac = np.tile(minutes / config.session_minutes, config.sessions)  # of a session
    day_sigma = asset_vol / math.sqrt(TRADING_DAYS)
    sigma = vol_mult[:, None] * day_sigma[None, :] * np.sqrt(intraday_share * bar_frac)[:, None]

    s = config.planted_strength
    planted = np.zeros_like(shocks)
    planted[1:] = shocks[:-1]
    intrabar = sigma * (s * planted + math.sqrt(1.0 - s * s) * shocks)
    drift = config.annual_drift / (TRADING_DAYS * per_session)
    intrabar = intrabar + drift - 0.5 * sigma**2

    first_of_session = np.zeros(n_bars, dtype=bool)
    first_of_session[::per_session] = True
    gap_sigma = vol_mult[:, None] * day_sigma[None, :] * math.sqrt(config.overnight_share)
    gaps = (
        (rng.standard_normal((n_bars, n_assets)) @ chol.T) * gap_sigma * first_of_session[:, None]
    )
    gaps[0] = 0.0

    log_open = np.empty((n_bars, n_assets))
    log_close = np.empty((n_bars, n_assets))
    start_price = np.log(rng.uniform(20.0, 400.0, n_assets))
    step = gaps + intrabar
    log_close[:] = start_price + np.cumsum(step, axis=0)
    log_open[:] = log_close - intrabar
    open_ = np.exp(log_open)
    close = np.exp(log_close)
    wick = np.abs(rng.standard_normal((2, n_bars, n_assets))) * 0.5 * sigma
    high = np.maximum(open_, close) * np.exp(wick[0])
    low = np.minimum(open_, close) * np.exp(-wick[1])
    volume = (
        config.base_volume
        * bar_frac[:, None]
        * np.exp(0.3 * rng.standard_normal((n_bars, n_assets)) + 0.5 * np.abs(shocks))
    ).round()

    frames = []
    for j, ticker in enumerate(tickers):
        frames.append(
            pl.DataFrame(
                {
                    "ticker": [ticker] * n_bars,
                    "timestamp": stamps,
                    "open": open_[:, j],
                    "high": high[:, j],
                    "low": low[:, j],
                    "close": close[:, j],
                    "volume": volume[:, j],
                    "_file": [f"synthetic(seed={seed})"] * n_bars,
                    "_row": np.arange(1, n_bars + 1),
                }
            )
        )
    return pl.concat(frames).with_columns(pl.col("timestamp").cast(pl.Datetime("us")))
