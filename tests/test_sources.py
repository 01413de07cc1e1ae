"""Sources of raw bars: user CSV/Parquet files (formats, column names, timezones) and the sample."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from datamodules.errors import DataError, UserInputError
from datamodules.pipeline import build_market_data
from datamodules.sources import SAMPLE_TICKERS, load_files, load_sample

OUT_COLUMNS = ["ticker", "timestamp", "open", "high", "low", "close", "volume", "_file", "_row"]


def _bars(n: int, start: dt.datetime, step: dt.timedelta, seed: int = 0) -> pl.DataFrame:
    """Valid OHLCV bars with our column names (timestamp as Datetime)."""
    rng = np.random.default_rng(seed)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = close * np.exp(rng.normal(0, 0.004, n))
    return pl.DataFrame(
        {
            "timestamp": [start + step * i for i in range(n)],
            "open": open_,
            "high": np.maximum(open_, close) * 1.003,
            "low": np.minimum(open_, close) * 0.997,
            "close": close,
            "volume": rng.integers(100, 10_000, n).astype(float),
        }
    )


def test_csv_with_non_iso_timestamps_and_renamed_columns_loads_and_ignores_extra_columns(tmp_path):
    bars = _bars(6, dt.datetime(2024, 3, 4, 9, 30), dt.timedelta(minutes=5))
    path = tmp_path / "msft.csv"
    bars.select(
        pl.col("timestamp").dt.strftime("%d/%m/%Y %H:%M").alias("When"),
        pl.col("open").alias("First"),
        pl.col("high").alias("Top"),
        pl.col("low").alias("Bottom"),
        pl.col("close").alias("Last"),
        pl.col("volume").alias("Qty"),
        pl.lit("ignore me").alias("Notes"),
        (pl.col("close") * 0.9).alias("Adj Close"),
    ).write_csv(path)

    frame = load_files(
        {"MSFT": str(path)},
        ["MSFT"],
        "csv",
        columns={
            "timestamp": "When",
            "open": "First",
            "high": "Top",
            "low": "Bottom",
            "close": "Last",
            "volume": "Qty",
        },
        timestamp_format="%d/%m/%Y %H:%M",
    )

    assert frame.columns == OUT_COLUMNS
    assert frame["timestamp"].dtype == pl.Datetime("us")
    assert frame["timestamp"].to_list() == bars["timestamp"].to_list()
    for name in ("open", "high", "low", "close", "volume"):
        assert frame[name].dtype == pl.Float64
        np.testing.assert_allclose(frame[name].to_numpy(), bars[name].to_numpy(), rtol=1e-12)
    assert frame["ticker"].unique().to_list() == ["MSFT"]
    assert frame["_row"].to_list() == [1, 2, 3, 4, 5, 6]
    assert frame["_file"][0] == str(path)


def test_unmapped_column_names_match_case_insensitively(tmp_path):
    bars = _bars(4, dt.datetime(2024, 1, 2), dt.timedelta(days=1))
    path = tmp_path / "x.csv"
    bars.rename({c: c.upper() for c in bars.columns}).write_csv(path)
    frame = load_files({"X": str(path)}, ["X"], "csv")
    np.testing.assert_allclose(frame["close"].to_numpy(), bars["close"].to_numpy())


def test_one_file_with_a_ticker_column_splits_by_ticker_and_keeps_only_asked_tickers(tmp_path):
    a = _bars(5, dt.datetime(2024, 1, 2), dt.timedelta(days=1), seed=1).with_columns(
        pl.lit("AAA").alias("symbol")
    )
    b = _bars(5, dt.datetime(2024, 1, 2), dt.timedelta(days=1), seed=2).with_columns(
        pl.lit("BBB").alias("symbol")
    )
    c = _bars(5, dt.datetime(2024, 1, 2), dt.timedelta(days=1), seed=3).with_columns(
        pl.lit("CCC").alias("symbol")
    )
    # Long format, interleaved by time as such files usually are.
    pl.concat([a, b, c]).sort("timestamp", "symbol").write_csv(tmp_path / "all.csv")

    frame = load_files(str(tmp_path / "all.csv"), ["BBB", "AAA"], "csv", ticker_column="symbol")

    assert sorted(frame["ticker"].unique().to_list()) == ["AAA", "BBB"]
    got_b = frame.filter(pl.col("ticker") == "BBB").sort("timestamp")
    np.testing.assert_allclose(got_b["close"].to_numpy(), b["close"].to_numpy())
    # _row points at the row of the shared file: BBB is the 2nd of every 3 rows.
    assert got_b["_row"].to_list() == [2, 5, 8, 11, 14]


def test_one_file_without_ticker_column_setting_is_refused(tmp_path):
    _bars(3, dt.datetime(2024, 1, 2), dt.timedelta(days=1)).write_csv(tmp_path / "x.csv")
    with pytest.raises(DataError, match="data.ticker_column"):
        load_files(str(tmp_path / "x.csv"), ["X"], "csv")


def test_parquet_file_with_date_timestamps_and_integer_volume_loads(tmp_path):
    bars = _bars(5, dt.datetime(2024, 1, 2), dt.timedelta(days=1)).with_columns(
        pl.col("timestamp").dt.date(), pl.col("volume").cast(pl.Int64)
    )
    path = tmp_path / "ibm.parquet"
    bars.write_parquet(path)
    frame = load_files({"IBM": str(path)}, ["IBM"], "parquet")
    assert frame.columns == OUT_COLUMNS
    assert frame["timestamp"].dtype == pl.Datetime("us")
    assert frame["timestamp"][0] == dt.datetime(2024, 1, 2)
    assert frame["volume"].dtype == pl.Float64
    np.testing.assert_allclose(frame["volume"].to_numpy(), bars["volume"].to_numpy())


def test_parquet_source_builds_a_market(tmp_path):
    bars = _bars(200, dt.datetime(2021, 1, 1), dt.timedelta(days=1))
    path = tmp_path / "x.parquet"
    bars.write_parquet(path)
    market = build_market_data(
        source="parquet",
        tickers=["X"],
        bar_size="1d",
        files={"X": str(path)},
        window=8,
        sessions_per_year=365,
        cache_dir=None,
    ).market
    assert market.source == "parquet"
    assert not market.synthetic
    np.testing.assert_allclose(market.close[:, 0], bars["close"].to_numpy()[-market.num_bars :])


def test_timezone_aware_parquet_timestamps_are_converted_to_the_data_timezone(tmp_path):
    utc = [dt.datetime(2024, 1, 2, 14, 30), dt.datetime(2024, 7, 2, 13, 30)]  # winter, summer
    bars = _bars(2, utc[0], dt.timedelta(days=1)).with_columns(
        pl.Series("timestamp", utc).dt.replace_time_zone("UTC")
    )
    path = tmp_path / "tz.parquet"
    bars.write_parquet(path)

    ny = load_files({"X": str(path)}, ["X"], "parquet", timezone="America/New_York")
    # 14:30 UTC is 09:30 EST; 13:30 UTC is 09:30 EDT. Naive, in New York time.
    assert ny["timestamp"].dtype == pl.Datetime("us")
    assert ny["timestamp"].to_list() == [
        dt.datetime(2024, 1, 2, 9, 30),
        dt.datetime(2024, 7, 2, 9, 30),
    ]

    default = load_files({"X": str(path)}, ["X"], "parquet")
    assert default["timestamp"].to_list() == utc  # no timezone: UTC


def test_csv_timestamps_with_utc_offset_are_converted(tmp_path):
    bars = _bars(3, dt.datetime(2024, 1, 2, 14, 30), dt.timedelta(minutes=5))
    path = tmp_path / "offset.csv"
    bars.with_columns(pl.col("timestamp").dt.strftime("%Y-%m-%dT%H:%M:%S+00:00")).write_csv(path)
    frame = load_files({"X": str(path)}, ["X"], "csv", timezone="America/New_York")
    assert frame["timestamp"][0] == dt.datetime(2024, 1, 2, 9, 30)


def test_naive_timestamps_are_kept_as_given_whatever_the_timezone(tmp_path):
    bars = _bars(3, dt.datetime(2024, 1, 2, 9, 30), dt.timedelta(minutes=5))
    bars.write_csv(tmp_path / "x.csv")
    frame = load_files({"X": str(tmp_path / "x.csv")}, ["X"], "csv", timezone="Asia/Tokyo")
    assert frame["timestamp"].to_list() == bars["timestamp"].to_list()


def test_sample_msft_has_3270_daily_rows_from_2000_03_01_to_2013_03_01():
    frame = load_sample(["MSFT"])
    assert frame.columns == OUT_COLUMNS
    assert frame.height == 3270
    assert frame["ticker"].unique().to_list() == ["MSFT"]
    assert frame["timestamp"].min() == dt.datetime(2000, 3, 1)
    assert frame["timestamp"].max() == dt.datetime(2013, 3, 1)
    assert frame["timestamp"].is_sorted()
    assert frame["_row"].to_list()[:3] == [1, 2, 3]
    assert set(SAMPLE_TICKERS) == {"AAPL", "GOOG", "IBM", "MSFT"}


# --- bad input: every message names what the user must fix -------------------------------


def test_unknown_sample_ticker_names_it_and_the_available_ones():
    with pytest.raises(DataError) as err:
        load_sample(["MSFT", "TSLA"])
    msg = str(err.value)
    assert "TSLA" in msg and "env.tickers" in msg and "data=sample" in msg
    assert all(t in msg for t in SAMPLE_TICKERS)


def test_unknown_csv_ticker_in_files_mapping_names_it_and_the_key(tmp_path):
    _bars(3, dt.datetime(2024, 1, 2), dt.timedelta(days=1)).write_csv(tmp_path / "a.csv")
    with pytest.raises(DataError) as err:
        load_files({"A": str(tmp_path / "a.csv")}, ["A", "ZZZ"], "csv")
    msg = str(err.value)
    assert "ZZZ" in msg and "data.files" in msg and "env.tickers" in msg


def test_unknown_ticker_in_ticker_column_names_it_the_column_and_the_file(tmp_path):
    path = tmp_path / "all.csv"
    _bars(3, dt.datetime(2024, 1, 2), dt.timedelta(days=1)).with_columns(
        pl.lit("AAA").alias("sym")
    ).write_csv(path)
    with pytest.raises(DataError) as err:
        load_files(str(path), ["AAA", "QQQ"], "csv", ticker_column="sym")
    msg = str(err.value)
    assert "QQQ" in msg and "'sym'" in msg and str(path) in msg and "AAA" in msg


def test_missing_file_names_the_config_key_and_the_path(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(DataError) as err:
        load_files({"MSFT": str(missing)}, ["MSFT"], "csv")
    msg = str(err.value)
    assert "data.files.MSFT" in msg and "nope.csv" in msg and "does not exist" in msg


def test_missing_column_names_the_file_the_column_and_the_config_key(tmp_path):
    path = tmp_path / "novol.csv"
    _bars(3, dt.datetime(2024, 1, 2), dt.timedelta(days=1)).drop("volume").write_csv(path)
    with pytest.raises(DataError) as err:
        load_files({"X": str(path)}, ["X"], "csv")
    msg = str(err.value)
    assert str(path) in msg and "'volume'" in msg and "data.columns.volume" in msg
    assert "timestamp, open, high, low, close" in msg  # the columns the file does have


def test_mapped_column_that_is_absent_is_named(tmp_path):
    path = tmp_path / "x.csv"
    _bars(3, dt.datetime(2024, 1, 2), dt.timedelta(days=1)).write_csv(path)
    with pytest.raises(DataError, match=r"no column 'Last' for close \(data.columns.close\)"):
        load_files({"X": str(path)}, ["X"], "csv", columns={"close": "Last"})


def test_timestamp_not_matching_the_format_names_row_value_and_format(tmp_path):
    path = tmp_path / "x.csv"
    bars = _bars(5, dt.datetime(2024, 1, 2, 9, 30), dt.timedelta(minutes=5))
    text = bars["timestamp"].dt.strftime("%d/%m/%Y %H:%M").to_list()
    text[3] = "2024-01-02 09:45"  # ISO in a day-first file
    bars.with_columns(pl.Series("timestamp", text)).write_csv(path)
    with pytest.raises(DataError) as err:
        load_files({"X": str(path)}, ["X"], "csv", timestamp_format="%d/%m/%Y %H:%M")
    msg = str(err.value)
    assert str(path) in msg and "row 4" in msg and "2024-01-02 09:45" in msg
    assert "data.timestamp_format='%d/%m/%Y %H:%M'" in msg


def test_unparseable_iso_timestamp_suggests_setting_a_format(tmp_path):
    path = tmp_path / "x.csv"
    bars = _bars(3, dt.datetime(2024, 1, 2), dt.timedelta(days=1))
    text = bars["timestamp"].dt.strftime("%Y-%m-%d").to_list()
    text[2] = "yesterday"
    bars.with_columns(pl.Series("timestamp", text)).write_csv(path)
    with pytest.raises(DataError) as err:
        load_files({"X": str(path)}, ["X"], "csv")
    msg = str(err.value)
    assert "row 3" in msg and "'yesterday'" in msg and "data.timestamp_format" in msg


def test_non_numeric_price_names_file_column_row_and_value(tmp_path):
    path = tmp_path / "x.csv"
    bars = _bars(4, dt.datetime(2024, 1, 2), dt.timedelta(days=1))
    close = [f"{v:.4f}" for v in bars["close"]]
    close[1] = "12,5"
    bars.with_columns(pl.Series("close", close)).write_csv(path)
    with pytest.raises(DataError) as err:
        load_files({"X": str(path)}, ["X"], "csv")
    msg = str(err.value)
    assert str(path) in msg and "'close'" in msg and "row 2" in msg and "'12,5'" in msg
    assert isinstance(err.value, UserInputError)


def test_timestamp_column_of_numbers_in_parquet_is_refused(tmp_path):
    path = tmp_path / "x.parquet"
    _bars(3, dt.datetime(2024, 1, 2), dt.timedelta(days=1)).with_columns(
        pl.Series("timestamp", [1, 2, 3])
    ).write_parquet(path)
    with pytest.raises(DataError, match="column 'timestamp' has type"):
        load_files({"X": str(path)}, ["X"], "parquet")


def test_empty_and_unreadable_files_are_refused(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("timestamp,open,high,low,close,volume\n")
    with pytest.raises(DataError, match="no rows"):
        load_files({"X": str(empty)}, ["X"], "csv")
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"this is not parquet")
    with pytest.raises(DataError, match="cannot be read as parquet"):
        load_files({"X": str(junk)}, ["X"], "parquet")
