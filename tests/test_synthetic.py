"""The synthetic market: deterministic per seed, valid bars, planted signal and correlation."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from datamodules.errors import ConfigError
from datamodules.schema import validate_bars
from datamodules.sources import SyntheticSource
from datamodules.synthetic import SyntheticConfig, generate_bars


def _wide(frame: pl.DataFrame, column: str) -> np.ndarray:
    tickers = frame["ticker"].unique(maintain_order=True).to_list()
    return np.stack([frame.filter(pl.col("ticker") == t)[column].to_numpy() for t in tickers], 1)


def test_same_seed_gives_the_identical_frame_and_another_seed_a_different_one():
    cfg = SyntheticConfig(sessions=50)
    a = generate_bars(["X", "Y"], 15, 42, cfg)
    assert a.equals(generate_bars(["X", "Y"], 15, 42, cfg))
    b = generate_bars(["X", "Y"], 15, 43, cfg)
    assert a["timestamp"].equals(b["timestamp"])
    assert not np.allclose(a["close"].to_numpy(), b["close"].to_numpy())


def test_same_seed_gives_the_same_market_through_the_pipeline():
    kw = dict(
        tickers=["X"],
        bar_size="30min",
        window=16,
        synthetic={"sessions": 40},
        cache_dir=None,
    )
    a = SyntheticSource(seed=5, **kw).build().market
    b = SyntheticSource(seed=5, **kw).build().market
    c = SyntheticSource(seed=6, **kw).build().market
    np.testing.assert_array_equal(a.features, b.features)
    assert not np.array_equal(a.close, c.close)
    assert a.synthetic and a.source == "synthetic"
    assert a.sessions_per_year == 252.0 and a.bars_per_session == 13.0


@pytest.mark.parametrize(
    ("bar", "cfg"),
    [
        (15, SyntheticConfig(sessions=30)),
        (60, SyntheticConfig(sessions=30)),  # 390-min session: a 30-min last bar
        (1440, SyntheticConfig(sessions=300, tail_df=2.5, planted_strength=0.5)),
        (60, SyntheticConfig(sessions=20, session_minutes=1440, session_open="00:00")),
    ],
)
def test_bars_pass_validation(bar, cfg):
    frame = generate_bars(["A", "B", "C"], bar, 1, cfg)
    assert validate_bars(frame).height == frame.height
    per_session = 1 if bar == 1440 else -(-cfg.session_minutes // bar)
    assert frame.height == 3 * cfg.sessions * per_session
    assert (frame["volume"] >= 0).all() and (frame["low"] > 0).all()


def test_sessions_are_business_days_from_the_start_date_at_the_open():
    frame = generate_bars(["A"], 30, 0, SyntheticConfig(sessions=10, start_date="2024-01-05"))
    stamps = frame["timestamp"].to_list()
    assert stamps[0] == dt.datetime(2024, 1, 5, 9, 30)
    assert stamps[13] == dt.datetime(2024, 1, 8, 9, 30)  # Friday, then Monday
    assert {s.weekday() for s in stamps} <= {0, 1, 2, 3, 4}


def _planted_corr(strength: float, sessions: int) -> float:
    frame = generate_bars(
        ["A"], 15, 0, SyntheticConfig(sessions=sessions, planted_strength=strength)
    )
    o, c = _wide(frame, "open")[:, 0], _wide(frame, "close")[:, 0]
    logret = np.log(c[1:] / c[:-1])  # bar t's return, t = 1..
    next_oc = np.log(c[2:] / o[2:])  # open-to-close return of bar t+1
    return float(np.corrcoef(logret[:-1], next_oc)[0, 1])


def test_planted_strength_makes_the_next_bar_predictable_from_this_bars_return():
    assert _planted_corr(0.3, 400) > 0.2
    assert abs(_planted_corr(0.0, 400)) < 0.05


def test_open_to_close_returns_of_tickers_have_the_configured_correlation():
    for rho in (0.0, 0.5, 0.8):
        frame = generate_bars(["A", "B"], 15, 2, SyntheticConfig(sessions=300, correlation=rho))
        oc = np.log(_wide(frame, "close") / _wide(frame, "open"))
        assert np.corrcoef(oc.T)[0, 1] == pytest.approx(rho, abs=0.05)


def test_daily_returns_of_tickers_have_the_configured_correlation():
    frame = generate_bars(["A", "B"], 1440, 2, SyntheticConfig(sessions=4000, correlation=0.5))
    close = _wide(frame, "close")
    logret = np.diff(np.log(close), axis=0)
    assert np.corrcoef(logret.T)[0, 1] == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"planted_strength": 1.0}, "data.synthetic.planted_strength"),
        ({"planted_strength": -0.1}, "data.synthetic.planted_strength"),
        ({"correlation": 1.0}, "data.synthetic.correlation"),
        ({"correlation": -0.6}, "data.synthetic.correlation"),  # 3 tickers: > -1/2
        ({"tail_df": 2.0}, "data.synthetic.tail_df"),
    ],
)
def test_out_of_range_knobs_are_config_errors_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key):
        generate_bars(["A", "B", "C"], 15, 0, SyntheticConfig(sessions=5, **override))


def test_unknown_synthetic_key_is_a_config_error():
    with pytest.raises(ConfigError, match="data.synthetic has unknown key"):
        SyntheticSource(
            tickers=["A"],
            bar_size="15min",
            synthetic={"session": 10},
            cache_dir=None,
        )
