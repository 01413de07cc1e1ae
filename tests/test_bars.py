"""Bar sizes, resampling, ticker alignment and trading sessions."""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import polars as pl
import pytest

from datamodules.bars import align, bar_minutes, resample, session_stats, sessions, source_minutes
from datamodules.errors import ConfigError, DataError
from datamodules.sources import FileSource, SampleSource, load_sample


def _frame(stamps: list[dt.datetime], ticker: str = "X", seed: int = 0) -> pl.DataFrame:
    """Long frame as the sources return it, with valid random OHLCV."""
    n = len(stamps)
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    open_ = close * np.exp(rng.normal(0, 0.001, n))
    return pl.DataFrame(
        {
            "ticker": [ticker] * n,
            "timestamp": stamps,
            "open": open_,
            "high": np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.001, n))),
            "low": np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.001, n))),
            "close": close,
            "volume": rng.integers(1, 1000, n).astype(float),
            "_file": [f"{ticker}.csv"] * n,
            "_row": np.arange(1, n + 1),
        }
    ).with_columns(pl.col("timestamp").cast(pl.Datetime("us")))


def _session_stamps(days: list[dt.date], minutes: int, open_at=(9, 30), length=390):
    out = []
    for day in days:
        start = dt.datetime.combine(day, dt.time(*open_at))
        out += [start + dt.timedelta(minutes=k) for k in range(0, length, minutes)]
    return out


# --- bar sizes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("1min", 1),
        ("5min", 5),
        ("15min", 15),
        ("30m", 30),
        ("1h", 60),
        ("4h", 240),
        ("1d", 1440),
        (" 2 min ", 2),
    ],
)
def test_bar_size_parses_to_minutes(text, minutes):
    assert bar_minutes(text) == minutes


@pytest.mark.parametrize("text", ["", "15", "15s", "0min", "-5min", "1w", "abc", "1.5h"])
def test_unknown_bar_size_is_a_config_error_naming_data_bar_size(text):
    with pytest.raises(ConfigError, match=f"data.bar_size '{text}' is not a bar size"):
        bar_minutes(text)


def test_bar_size_longer_than_a_day_is_refused():
    with pytest.raises(ConfigError, match="data.bar_size '2d' is longer than a day"):
        bar_minutes("2d")


def test_source_minutes_is_the_most_common_step_within_a_day():
    days = [dt.date(2024, 1, 2), dt.date(2024, 1, 3)]
    stamps = _session_stamps(days, 5)
    del stamps[10]  # a missing bar makes one 10-minute step
    assert source_minutes(_frame(stamps)) == 5.0
    daily = [dt.datetime(2024, 1, d) for d in range(2, 12)]
    assert source_minutes(_frame(daily)) == 1440.0


# --- resampling --------------------------------------------------------------------------


def test_resampling_5min_to_15min_gives_first_open_max_high_min_low_last_close_sum_volume():
    days = [dt.date(2024, 1, 2), dt.date(2024, 1, 3)]
    raw = pl.concat(
        [_frame(_session_stamps(days, 5), "A", 1), _frame(_session_stamps(days, 5), "B", 2)]
    )
    out = resample(raw, 15, "15min")

    assert out.height == 2 * 2 * 26  # 2 tickers, 2 sessions of 26 15-min bars
    for ticker in ("A", "B"):
        src = raw.filter(pl.col("ticker") == ticker)
        got = out.filter(pl.col("ticker") == ticker)
        o, h, lo, c, v = (
            src[k].to_numpy().reshape(-1, 3) for k in ("open", "high", "low", "close", "volume")
        )
        np.testing.assert_array_equal(got["open"].to_numpy(), o[:, 0])
        np.testing.assert_array_equal(got["high"].to_numpy(), h.max(axis=1))
        np.testing.assert_array_equal(got["low"].to_numpy(), lo.min(axis=1))
        np.testing.assert_array_equal(got["close"].to_numpy(), c[:, -1])
        np.testing.assert_allclose(got["volume"].to_numpy(), v.sum(axis=1))
        assert got["timestamp"].to_list() == _session_stamps(days, 15)


def test_resampling_to_1h_keeps_the_short_last_bar_of_the_session():
    days = [dt.date(2024, 1, 2)]
    raw = _frame(_session_stamps(days, 5))
    out = resample(raw, 60, "1h")
    starts = [t.strftime("%H:%M") for t in out["timestamp"]]
    assert starts == ["09:30", "10:30", "11:30", "12:30", "13:30", "14:30", "15:30"]
    assert out["volume"][-1] == raw["volume"].tail(6).sum()  # 15:30-16:00: six 5-min bars


def test_resampling_intraday_to_daily_gives_one_bar_per_day():
    days = [dt.date(2024, 1, 2), dt.date(2024, 1, 3), dt.date(2024, 1, 4)]
    raw = _frame(_session_stamps(days, 15))
    out = resample(raw, 1440, "1d")
    assert out["timestamp"].to_list() == [dt.datetime.combine(d, dt.time()) for d in days]
    assert out["open"].to_list() == raw["open"].to_numpy().reshape(3, -1)[:, 0].tolist()
    assert out["close"].to_list() == raw["close"].to_numpy().reshape(3, -1)[:, -1].tolist()


def test_resampled_bars_follow_the_session_open_when_the_file_starts_mid_session():
    days = [dt.date(2024, 1, 2), dt.date(2024, 1, 3)]
    raw = _frame(_session_stamps(days, 5)[7:])  # the download starts at 10:05 on day one
    out = resample(raw, 15, "15min")
    second_day = out.filter(pl.col("timestamp").dt.date() == days[1])
    assert second_day["timestamp"].to_list() == _session_stamps(days[1:], 15)


def test_resampling_to_the_native_size_returns_the_bars_unchanged():
    raw = _frame(_session_stamps([dt.date(2024, 1, 2)], 15))
    assert resample(raw, 15, "15min").equals(raw)


def test_bar_size_finer_than_daily_data_is_refused_naming_both_sizes_and_the_file(tmp_path):
    stamps = [dt.datetime(2023, 1, 1) + dt.timedelta(days=i) for i in range(30)]
    path = tmp_path / "daily.csv"
    _frame(stamps).drop("ticker", "_file", "_row").write_csv(path)
    with pytest.raises(DataError) as err:
        FileSource(tickers=["X"], bar_size="1h", files={"X": str(path)}, cache_dir=None).build()
    msg = str(err.value)
    assert "data.bar_size=1h" in msg and "finer than the data" in msg and "1d" in msg
    assert "daily.csv" in msg


def test_sample_with_intraday_bar_size_is_refused():
    with pytest.raises(DataError, match="data.bar_size=15min is finer"):
        SampleSource(tickers=["IBM"], bar_size="15min", cache_dir=None).build()


# --- alignment ---------------------------------------------------------------------------


def test_align_drops_timestamps_missing_in_one_ticker_and_reports_it(caplog):
    stamps = [dt.datetime(2024, 1, 1) + dt.timedelta(days=i) for i in range(50)]
    b_stamps = [s for i, s in enumerate(stamps) if i not in (3, 17, 40)]
    raw = pl.concat([_frame(stamps, "A"), _frame(b_stamps, "B")])
    with caplog.at_level(logging.INFO, logger="datamodules.bars"):
        out = align(raw, ["A", "B"], min_share=0.8)
    a = out.filter(pl.col("ticker") == "A")
    b = out.filter(pl.col("ticker") == "B")
    assert a["timestamp"].to_list() == b_stamps == b["timestamp"].to_list()
    assert "A keeps 47 of 50 bars (3 dropped)" in caplog.text
    assert "B keeps 47 of 47 bars (0 dropped)" in caplog.text


def test_align_raises_when_less_than_min_aligned_share_remains():
    stamps = [dt.datetime(2024, 1, 1) + dt.timedelta(days=i) for i in range(50)]
    raw = pl.concat([_frame(stamps, "A"), _frame(stamps[20:], "B")])
    with pytest.raises(DataError) as err:
        align(raw, ["A", "B"], min_share=0.8)
    msg = str(err.value)
    assert "30 of 50 bars of A" in msg and "data.min_aligned_share=0.8" in msg
    assert align(raw, ["A", "B"], min_share=0.5).height == 60


def test_sample_goog_and_msft_cover_different_periods():
    # GOOG starts in 2004: aligning with MSFT keeps 2148 of MSFT's 3270 days (66%).
    raw = load_sample(["GOOG", "MSFT"])
    with pytest.raises(DataError, match="2148 of 3270 bars of MSFT"):
        align(raw, ["GOOG", "MSFT"], min_share=0.8)
    kept = align(raw, ["GOOG", "MSFT"], min_share=0.6)
    assert kept.group_by("ticker").len().sort("ticker")["len"].to_list() == [2148, 2148]


# --- sessions ----------------------------------------------------------------------------


def test_sessions_are_calendar_days():
    stamps = np.array(
        ["2024-01-02T09:30", "2024-01-02T15:45", "2024-01-03T09:30", "2024-01-05T00:00"],
        dtype="datetime64[us]",
    )
    assert sessions(stamps).tolist() == [0, 0, 1, 2]


def test_sample_daily_data_has_about_252_sessions_a_year_of_one_bar():
    stamps = load_sample(["MSFT"])["timestamp"].to_numpy().astype("datetime64[us]")
    per_session, per_year = session_stats(stamps, sessions(stamps), None)
    assert per_session == 1.0
    assert 250 <= per_year <= 254


def test_configured_sessions_per_year_wins():
    stamps = load_sample(["IBM"])["timestamp"].to_numpy().astype("datetime64[us]")
    assert session_stats(stamps, sessions(stamps), 260)[1] == 260.0


def test_too_short_data_asks_for_sessions_per_year():
    stamps = np.arange("2024-01-01", "2024-01-11", dtype="datetime64[D]").astype("datetime64[us]")
    with pytest.raises(DataError, match="data.sessions_per_year"):
        session_stats(stamps, sessions(stamps), None)


def _crypto_csv(path, days: int, seed: int = 0) -> None:
    """Hourly bars round the clock, every calendar day (weekends included)."""
    n = days * 24
    stamps = [dt.datetime(2022, 1, 1) + dt.timedelta(hours=i) for i in range(n)]
    _frame(stamps, seed=seed).drop("ticker", "_file", "_row").write_csv(path)


def test_round_the_clock_hourly_csv_gives_about_365_sessions_of_24_bars(tmp_path):
    path = tmp_path / "btc.csv"
    _crypto_csv(path, 200)
    source = FileSource(
        tickers=["BTC"],
        bar_size="1h",
        files={"BTC": str(path)},
        window=24,
        cache_dir=None,
    )
    market = source.build().market
    assert market.bars_per_session == 24.0
    assert 363 <= market.sessions_per_year <= 367
    assert market.periods_per_year == pytest.approx(24 * market.sessions_per_year)
    # 4h bars of the same file: 6 per session.
    four_hourly = FileSource(
        tickers=["BTC"],
        bar_size="4h",
        files={"BTC": str(path)},
        window=8,
        cache_dir=None,
    )
    market4 = four_hourly.build().market
    assert market4.bars_per_session == 6.0


def test_one_calendar_year_of_round_the_clock_hourly_bars_gives_365_sessions_a_year():
    stamps = np.arange(
        np.datetime64("2022-01-01T00:00"), np.datetime64("2023-01-01T00:00"), np.timedelta64(1, "h")
    ).astype("datetime64[us]")
    assert session_stats(stamps, sessions(stamps), None) == (24.0, 365.0)
