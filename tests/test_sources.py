"""Data sources: user CSV/Parquet files (formats, column names, timezones), the sample, the
synthetic market, and a user's own source class chosen by ``_target_``."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from datamodules.cache import file_fingerprint
from datamodules.config import dataclass_from
from datamodules.errors import ConfigError, DataError, UserInputError
from datamodules.features import FeatureConfig
from datamodules.sources import (
    LOAD_COLUMNS,
    SAMPLE_TICKERS,
    BarSource,
    FileSource,
    SampleSource,
    SyntheticSource,
    load_sample,
)

CONF = Path(__file__).resolve().parents[1] / "conf"
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


def _load(files, tickers: list[str], **kw) -> pl.DataFrame:
    """The raw bars the file source reads (before validation and alignment)."""
    return FileSource(tickers=tickers, files=files, **kw).load()


# --- the file source: CSV and Parquet through one loader ---------------------------------


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

    frame = _load(
        {"MSFT": str(path)},
        ["MSFT"],
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
    assert frame["_row"].to_list() == [2, 3, 4, 5, 6, 7]  # editor lines: header = 1
    assert frame["_file"][0] == str(path)


def test_unmapped_column_names_match_case_insensitively(tmp_path):
    bars = _bars(4, dt.datetime(2024, 1, 2), dt.timedelta(days=1))
    path = tmp_path / "x.csv"
    bars.rename({c: c.upper() for c in bars.columns}).write_csv(path)
    frame = _load({"X": str(path)}, ["X"])
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

    frame = _load(str(tmp_path / "all.csv"), ["BBB", "AAA"], ticker_column="symbol")

    assert sorted(frame["ticker"].unique().to_list()) == ["AAA", "BBB"]
    got_b = frame.filter(pl.col("ticker") == "BBB").sort("timestamp")
    np.testing.assert_allclose(got_b["close"].to_numpy(), b["close"].to_numpy())
    # _row is the line of the shared file: BBB is the 2nd of every 3 rows, after the header.
    assert got_b["_row"].to_list() == [3, 6, 9, 12, 15]


def test_one_file_without_ticker_column_setting_is_refused(tmp_path):
    _bars(3, dt.datetime(2024, 1, 2), dt.timedelta(days=1)).write_csv(tmp_path / "x.csv")
    with pytest.raises(DataError, match="data.ticker_column"):
        _load(str(tmp_path / "x.csv"), ["X"])


def test_parquet_file_with_date_timestamps_and_integer_volume_loads(tmp_path):
    bars = _bars(5, dt.datetime(2024, 1, 2), dt.timedelta(days=1)).with_columns(
        pl.col("timestamp").dt.date(), pl.col("volume").cast(pl.Int64)
    )
    path = tmp_path / "ibm.parquet"
    bars.write_parquet(path)
    frame = _load({"IBM": str(path)}, ["IBM"])
    assert frame.columns == OUT_COLUMNS
    assert frame["timestamp"].dtype == pl.Datetime("us")
    assert frame["timestamp"][0] == dt.datetime(2024, 1, 2)
    assert frame["volume"].dtype == pl.Float64
    np.testing.assert_allclose(frame["volume"].to_numpy(), bars["volume"].to_numpy())


def test_parquet_source_builds_a_market(tmp_path):
    bars = _bars(200, dt.datetime(2021, 1, 1), dt.timedelta(days=1))
    path = tmp_path / "x.parquet"
    bars.write_parquet(path)
    source = FileSource(
        tickers=["X"],
        bar_size="1d",
        files={"X": str(path)},
        window=8,
        sessions_per_year=365,
        cache_dir=None,
    )
    market = source.build().market
    assert market.source == "files"
    assert not market.synthetic
    np.testing.assert_allclose(market.close[:, 0], bars["close"].to_numpy()[-market.num_bars :])


def test_csv_csv_gz_and_parquet_of_the_same_bars_build_the_same_market_through_one_loader(
    tmp_path,
):
    bars = _bars(200, dt.datetime(2021, 1, 1), dt.timedelta(days=1))
    bars.write_csv(tmp_path / "a.csv")
    bars.write_parquet(tmp_path / "b.parquet")
    (tmp_path / "c.csv.gz").write_bytes(gzip.compress(bars.write_csv().encode()))
    bars.write_parquet(tmp_path / "d.pq")

    def market(name: str):
        source = FileSource(
            tickers=["X"],
            bar_size="1d",
            files={"X": str(tmp_path / name)},
            window=8,
            sessions_per_year=365,
            cache_dir=None,
        )
        return source.build().market

    from_csv = market("a.csv")
    np.testing.assert_allclose(from_csv.close[:, 0], bars["close"].to_numpy()[-from_csv.num_bars :])
    for name in ("b.parquet", "c.csv.gz", "d.pq"):
        other = market(name)
        np.testing.assert_array_equal(other.timestamps, from_csv.timestamps)
        np.testing.assert_allclose(other.close, from_csv.close, rtol=1e-12)
        np.testing.assert_allclose(other.features, from_csv.features, rtol=1e-5, atol=1e-6)
        assert other.source == "files"


def test_tickers_may_come_from_files_of_different_formats(tmp_path):
    a = _bars(5, dt.datetime(2024, 1, 2), dt.timedelta(days=1), seed=1)
    b = _bars(5, dt.datetime(2024, 1, 2), dt.timedelta(days=1), seed=2)
    a.write_csv(tmp_path / "a.csv")
    b.write_parquet(tmp_path / "b.parquet")
    frame = _load({"A": str(tmp_path / "a.csv"), "B": str(tmp_path / "b.parquet")}, ["A", "B"])
    assert frame.columns == OUT_COLUMNS
    got_b = frame.filter(pl.col("ticker") == "B")
    np.testing.assert_allclose(got_b["close"].to_numpy(), b["close"].to_numpy())
    assert got_b["_file"][0] == str(tmp_path / "b.parquet")


def test_an_unknown_extension_needs_data_format_which_then_reads_the_file(tmp_path):
    bars = _bars(4, dt.datetime(2024, 1, 2), dt.timedelta(days=1))
    path = tmp_path / "prices.txt"
    bars.write_csv(path)
    with pytest.raises(ConfigError) as err:
        FileSource(tickers=["X"], files={"X": str(path)})
    msg = str(err.value)
    assert "data.files.X" in msg and "prices.txt" in msg and "data.format=csv" in msg
    frame = _load({"X": str(path)}, ["X"], format="csv")
    np.testing.assert_allclose(frame["close"].to_numpy(), bars["close"].to_numpy())
    # an explicit format wins over the extension: a CSV named .parquet reads as CSV
    misnamed = tmp_path / "really_csv.parquet"
    bars.write_csv(misnamed)
    np.testing.assert_allclose(
        _load({"X": str(misnamed)}, ["X"], format="csv")["close"].to_numpy(),
        bars["close"].to_numpy(),
    )
    with pytest.raises(DataError, match="cannot be read as parquet"):
        _load({"X": str(misnamed)}, ["X"])


def test_timezone_aware_parquet_timestamps_are_converted_to_the_data_timezone(tmp_path):
    utc = [dt.datetime(2024, 1, 2, 14, 30), dt.datetime(2024, 7, 2, 13, 30)]  # winter, summer
    bars = _bars(2, utc[0], dt.timedelta(days=1)).with_columns(
        pl.Series("timestamp", utc).dt.replace_time_zone("UTC")
    )
    path = tmp_path / "tz.parquet"
    bars.write_parquet(path)

    ny = _load({"X": str(path)}, ["X"], timezone="America/New_York")
    # 14:30 UTC is 09:30 EST; 13:30 UTC is 09:30 EDT. Naive, in New York time.
    assert ny["timestamp"].dtype == pl.Datetime("us")
    assert ny["timestamp"].to_list() == [
        dt.datetime(2024, 1, 2, 9, 30),
        dt.datetime(2024, 7, 2, 9, 30),
    ]

    default = _load({"X": str(path)}, ["X"])
    assert default["timestamp"].to_list() == utc  # no timezone: UTC


def test_csv_timestamps_with_utc_offset_are_converted(tmp_path):
    bars = _bars(3, dt.datetime(2024, 1, 2, 14, 30), dt.timedelta(minutes=5))
    path = tmp_path / "offset.csv"
    bars.with_columns(pl.col("timestamp").dt.strftime("%Y-%m-%dT%H:%M:%S+00:00")).write_csv(path)
    frame = _load({"X": str(path)}, ["X"], timezone="America/New_York")
    assert frame["timestamp"][0] == dt.datetime(2024, 1, 2, 9, 30)


def test_naive_timestamps_are_kept_as_given_whatever_the_timezone(tmp_path):
    bars = _bars(3, dt.datetime(2024, 1, 2, 9, 30), dt.timedelta(minutes=5))
    bars.write_csv(tmp_path / "x.csv")
    frame = _load({"X": str(tmp_path / "x.csv")}, ["X"], timezone="Asia/Tokyo")
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
        _load({"A": str(tmp_path / "a.csv")}, ["A", "ZZZ"])
    msg = str(err.value)
    assert "ZZZ" in msg and "data.files" in msg and "env.tickers" in msg


def test_unknown_ticker_in_ticker_column_names_it_the_column_and_the_file(tmp_path):
    path = tmp_path / "all.csv"
    _bars(3, dt.datetime(2024, 1, 2), dt.timedelta(days=1)).with_columns(
        pl.lit("AAA").alias("sym")
    ).write_csv(path)
    with pytest.raises(DataError) as err:
        _load(str(path), ["AAA", "QQQ"], ticker_column="sym")
    msg = str(err.value)
    assert "QQQ" in msg and "'sym'" in msg and str(path) in msg and "AAA" in msg


def test_missing_file_names_the_config_key_and_the_path(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(DataError) as err:
        _load({"MSFT": str(missing)}, ["MSFT"])
    msg = str(err.value)
    assert "data.files.MSFT" in msg and "nope.csv" in msg and "does not exist" in msg


def test_missing_column_names_the_file_the_column_and_the_config_key(tmp_path):
    path = tmp_path / "novol.csv"
    _bars(3, dt.datetime(2024, 1, 2), dt.timedelta(days=1)).drop("volume").write_csv(path)
    with pytest.raises(DataError) as err:
        _load({"X": str(path)}, ["X"])
    msg = str(err.value)
    assert str(path) in msg and "'volume'" in msg and "data.columns.volume" in msg
    assert "timestamp, open, high, low, close" in msg  # the columns the file does have


def test_mapped_column_that_is_absent_is_named(tmp_path):
    path = tmp_path / "x.csv"
    _bars(3, dt.datetime(2024, 1, 2), dt.timedelta(days=1)).write_csv(path)
    with pytest.raises(DataError, match=r"no column 'Last' for close \(data.columns.close\)"):
        _load({"X": str(path)}, ["X"], columns={"close": "Last"})


def test_timestamp_not_matching_the_format_names_row_value_and_format(tmp_path):
    path = tmp_path / "x.csv"
    bars = _bars(5, dt.datetime(2024, 1, 2, 9, 30), dt.timedelta(minutes=5))
    text = bars["timestamp"].dt.strftime("%d/%m/%Y %H:%M").to_list()
    text[3] = "2024-01-02 09:45"  # ISO in a day-first file
    bars.with_columns(pl.Series("timestamp", text)).write_csv(path)
    with pytest.raises(DataError) as err:
        _load({"X": str(path)}, ["X"], timestamp_format="%d/%m/%Y %H:%M")
    msg = str(err.value)
    assert str(path) in msg and "line 5" in msg and "2024-01-02 09:45" in msg
    assert "data.timestamp_format='%d/%m/%Y %H:%M'" in msg


def test_unparseable_iso_timestamp_suggests_setting_a_format(tmp_path):
    path = tmp_path / "x.csv"
    bars = _bars(3, dt.datetime(2024, 1, 2), dt.timedelta(days=1))
    text = bars["timestamp"].dt.strftime("%Y-%m-%d").to_list()
    text[2] = "yesterday"
    bars.with_columns(pl.Series("timestamp", text)).write_csv(path)
    with pytest.raises(DataError) as err:
        _load({"X": str(path)}, ["X"])
    msg = str(err.value)
    assert "line 4" in msg and "'yesterday'" in msg and "data.timestamp_format" in msg


def test_non_numeric_price_names_file_column_row_and_value(tmp_path):
    path = tmp_path / "x.csv"
    bars = _bars(4, dt.datetime(2024, 1, 2), dt.timedelta(days=1))
    close = [f"{v:.4f}" for v in bars["close"]]
    close[1] = "12,5"
    bars.with_columns(pl.Series("close", close)).write_csv(path)
    with pytest.raises(DataError) as err:
        _load({"X": str(path)}, ["X"])
    msg = str(err.value)
    assert str(path) in msg and "'close'" in msg and "line 3" in msg and "'12,5'" in msg
    assert isinstance(err.value, UserInputError)


def test_timestamp_column_of_numbers_in_parquet_is_refused(tmp_path):
    path = tmp_path / "x.parquet"
    _bars(3, dt.datetime(2024, 1, 2), dt.timedelta(days=1)).with_columns(
        pl.Series("timestamp", [1, 2, 3])
    ).write_parquet(path)
    with pytest.raises(DataError, match="column 'timestamp' has type"):
        _load({"X": str(path)}, ["X"])


def test_empty_and_unreadable_files_are_refused(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("timestamp,open,high,low,close,volume\n")
    with pytest.raises(DataError, match="no rows"):
        _load({"X": str(empty)}, ["X"])
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"this is not parquet")
    with pytest.raises(DataError, match="cannot be read as parquet"):
        _load({"X": str(junk)}, ["X"])


# --- config-only errors: refused when the source is constructed, before any file is read -----


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        ({"format": "xlsx"}, ConfigError, "data.format is 'xlsx'"),
        ({"files": None}, ConfigError, "data=files needs data.files"),
        ({"files": {}, "format": "csv"}, ConfigError, "data=csv needs data.files"),
        ({"files": {}, "format": "parquet"}, ConfigError, "data=parquet needs data.files"),
        ({"columns": {"close": "Last", "adj": "Adj"}}, ConfigError, "data.columns has unknown"),
        ({"timezone": "Mars/Olympus"}, ConfigError, "data.timezone is 'Mars/Olympus'"),
        ({"timestamp_format": "dd/mm/yyyy"}, ConfigError, "data.timestamp_format"),
        ({"tickers": ["X", "Y"]}, DataError, "data.files only maps X"),
        ({"files": "JUNK"}, DataError, "data.ticker_column"),
        ({"files": {"X": "nowhere/x.parquet"}}, DataError, "data.files.X: file"),
        ({"bar_size": "fortnight"}, ConfigError, "data.bar_size"),
        ({"tickers": []}, ConfigError, "env.tickers"),
        ({"tickers": "X"}, ConfigError, "env.tickers is 'X'"),
        ({"split": {"train": 0.9, "val": 0.2}}, ConfigError, "data.split.train"),
        ({"split": {"fold": 2}}, ConfigError, "data.split.fold=2"),
        ({"split": {"folds": 3, "fold": 3}}, ConfigError, "data.split.fold=3"),
        ({"features": {"volatility_window": 1}}, ConfigError, "data.features.volatility_window"),
        ({"features": {"return_horizons": []}}, ConfigError, "data.features.return_horizons"),
        ({"window": 0}, ConfigError, "data.window"),
        ({"min_aligned_share": 1.5}, ConfigError, "data.min_aligned_share"),
        ({"sessions_per_year": 0}, ConfigError, "data.sessions_per_year"),
    ],
)
def test_file_source_config_errors_are_raised_at_construction(tmp_path, kwargs, error, needle):
    junk = tmp_path / "x.parquet"
    junk.write_bytes(b"not parquet: reading this file would fail")
    args = {"tickers": ["X"], "files": {"X": str(junk)}, "cache_dir": None, **kwargs}
    if args["files"] == "JUNK":
        args["files"] = str(junk)
    with pytest.raises(error) as err:
        FileSource(**args)
    assert needle in str(err.value)
    assert isinstance(err.value, UserInputError)
    # The junk file itself is only found out when it is read.
    source = FileSource(tickers=["X"], files={"X": str(junk)}, cache_dir=None)
    with pytest.raises(DataError, match="cannot be read as parquet"):
        source.load()


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        ({"synthetic": {"planted_strength": 1.0}}, ConfigError, "data.synthetic.planted_strength"),
        ({"synthetic": {"correlation": -0.6}}, ConfigError, "with 3 tickers"),
        ({"synthetic": {"tail_df": 2}}, ConfigError, "data.synthetic.tail_df"),
        ({"synthetic": {"sessions": 0}}, ConfigError, "data.synthetic.sessions"),
        ({"synthetic": {"session_open": "9h30"}}, ConfigError, "data.synthetic.session_open"),
        ({"synthetic": {"session_minutes": 1440}}, ConfigError, "runs past midnight"),
        ({"synthetic": {"start_date": "soon"}}, ConfigError, "data.synthetic.start_date"),
        ({"synthetic": {"regime_vol": [1.0]}}, ConfigError, "data.synthetic.regime_vol"),
        ({"synthetic": {"sesions": 10}}, ConfigError, "data.synthetic has unknown key(s) sesions"),
        ({"seed": -1}, ConfigError, "data.seed"),
        ({"tickers": ["A", "A", "B"]}, ConfigError, "env.tickers must list distinct tickers"),
        ({"batch_size": 0}, ConfigError, "data.batch_size"),
        ({"num_workers": -1}, ConfigError, "data.num_workers"),
        ({"features": {"rsi": 3}}, ConfigError, "data.features has unknown key(s) rsi"),
        ({"split": {"gap_bars": -1}}, ConfigError, "data.split.gap_bars"),
    ],
)
def test_synthetic_source_config_errors_are_raised_at_construction(kwargs, error, needle):
    args = {"tickers": ["A", "B", "C"], "cache_dir": None, **kwargs}
    with pytest.raises(error) as err:
        SyntheticSource(**args)
    assert needle in str(err.value)


def test_sample_source_refuses_unknown_tickers_at_construction():
    with pytest.raises(DataError, match="data=sample only has"):
        SampleSource(tickers=["MSFT", "NVDA"])
    source = SampleSource(tickers=["MSFT"])
    assert source.bar_size == "1d" and source.name == "sample" and not source.is_synthetic


def test_a_source_is_a_frozen_config_with_nested_configs_coerced():
    source = SyntheticSource(
        tickers=["A"],
        features={"ema_spans": [5, 15]},
        split={"gap_bars": 4},
        synthetic={"regime_vol": [0.5, 2.0]},
    )
    assert source.tickers == ("A",)
    assert source.features.ema_spans == (5, 15) and source.features.rsi_window == 14
    assert source.split.gap_bars == 4 and source.split.train == 0.7
    assert source.synthetic.regime_vol == (0.5, 2.0)
    assert source.sessions_per_year == 252.0 and source.seed == 0
    with pytest.raises(AttributeError):
        source.window = 8  # type: ignore[misc]
    with pytest.raises(TypeError):
        BarSource(tickers=["A"])  # abstract: a source implements load and fingerprint


def test_nested_configs_may_be_instances_and_a_missing_required_key_is_named():
    features = FeatureConfig(rsi_window=7)
    assert SyntheticSource(tickers=["A"], features=features).features is features
    with pytest.raises(ConfigError, match="data.features must be a mapping"):
        SyntheticSource(tickers=["A"], features=[7])
    with pytest.raises(ConfigError, match=r"data is missing the required key\(s\) data.tickers"):
        dataclass_from(SyntheticSource, {"seed": 1}, "data")
    built = dataclass_from(SyntheticSource, {"tickers": ["A"], "seed": 1}, "data")
    assert built == SyntheticSource(tickers=("A",), seed=1)


# --- a user's own source, chosen by _target_ -----------------------------------------------


@dataclass(frozen=True, kw_only=True)
class JsonLinesSource(BarSource):
    """A user's own source: one JSON object per line with ticker, day and OHLCV (shares)."""

    path: str
    name: ClassVar[str] = "jsonl"

    def load(self) -> pl.DataFrame:
        frame = pl.read_ndjson(self.path)
        return frame.select(
            pl.col("ticker"),
            pl.col("day").str.to_date().alias("timestamp"),  # a Date: the pipeline takes it
            *(pl.col(c) for c in ("open", "high", "low", "close")),
            pl.col("shares").alias("volume"),  # integers: cast to Float64 by the pipeline
            pl.lit(self.path).alias("_file"),
            pl.int_range(1, pl.len() + 1).alias("_row"),  # the line of the file
        )

    def fingerprint(self) -> dict:
        return file_fingerprint(self.path)


@dataclass(frozen=True, kw_only=True)
class BareJsonLinesSource(JsonLinesSource):
    """The same, without ``_file``/``_row`` and without naming itself."""

    def load(self) -> pl.DataFrame:
        return super().load().drop("_file", "_row")


@dataclass(frozen=True, kw_only=True)
class NoVolumeSource(JsonLinesSource):
    def load(self) -> pl.DataFrame:
        return super().load().drop("volume")


def _jsonl(path: Path, days: int = 240, skip_b: tuple[int, ...] = (), bad: int | None = None):
    """Daily bars of A and B interleaved by day; B lacks the days in ``skip_b``."""
    lines, closes = [], {}
    for j, ticker in enumerate(("A", "B")):
        bars = _bars(days, dt.datetime(2022, 1, 3), dt.timedelta(days=1), seed=10 + j)
        closes[ticker] = bars
    for i in range(days):
        for ticker in ("A", "B"):
            if ticker == "B" and i in skip_b:
                continue
            row = closes[ticker].row(i, named=True)
            high = row["low"] * 0.9 if (ticker == "B" and i == bad) else row["high"]
            lines.append(
                {
                    "ticker": ticker,
                    "day": row["timestamp"].date().isoformat(),
                    "open": row["open"],
                    "high": high,
                    "low": row["low"],
                    "close": row["close"],
                    "shares": int(row["volume"]),
                }
            )
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return closes, lines


def _user_source(tmp_path: Path, path: Path, cls: type = JsonLinesSource, **overrides):
    """Compose data=jsonl from a user's own config folder and build it by its _target_."""
    user_conf = tmp_path / "user_conf" / "data"
    user_conf.mkdir(parents=True, exist_ok=True)
    (user_conf / "jsonl.yaml").write_text(
        "defaults:\n  - common\n  - _self_\n\n"
        f"_target_: {__name__}.{cls.__name__}\n"
        "path: null                   # the JSON-lines file\n"
        "bar_size: 1d\nwindow: 8\nsessions_per_year: 365\n"
    )
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(
            config_name=None,
            overrides=[
                f"hydra.searchpath=[file://{tmp_path / 'user_conf'}]",
                "+data=jsonl",
                "+env.tickers=[A,B]",
                "+paths.cache_dir=null",
                f"data.path={path}",
                *(f"data.{k}={v}" for k, v in overrides.items()),
            ],
        )
    return instantiate(cfg.data)


def test_a_users_source_class_chosen_by_target_goes_through_the_same_pipeline(tmp_path):
    path = tmp_path / "bars.jsonl"
    bars, _ = _jsonl(path, skip_b=(50, 51, 120))
    source = _user_source(tmp_path, path)
    assert isinstance(source, JsonLinesSource) and source.tickers == ("A", "B")
    assert source.features.rsi_window == 14 and source.split.gap_bars == 20  # from common.yaml
    data = source.build()
    m = data.market
    assert m.source == "jsonl" and not m.synthetic and m.tickers == ("A", "B")
    # aligned: the three days B lacks are dropped from A too, then the feature warm-up
    assert m.num_bars == 240 - 3 - source.features.warmup
    assert m.feature_names == tuple(source.features.names())
    kept = [d for i, d in enumerate(bars["A"]["timestamp"].to_list()) if i not in (50, 51, 120)]
    expected = [d for i, d in enumerate(kept) if i >= source.features.warmup]
    assert m.timestamps.astype(object).tolist() == expected
    close_a = bars["A"].filter(pl.col("timestamp").is_in(expected))["close"].to_numpy()
    np.testing.assert_allclose(m.close[:, 0], close_a)
    assert m.volume.dtype == np.float64 and m.sessions_per_year == 365.0
    train = m.features[slice(*data.split.train)].astype(np.float64)
    np.testing.assert_allclose(train.mean(axis=0), 0.0, atol=1e-4)  # normalised on train


def test_a_users_source_bad_row_is_reported_with_its_file_and_row(tmp_path):
    path = tmp_path / "bars.jsonl"
    _, lines = _jsonl(path, bad=30)
    line = next(i for i, x in enumerate(lines, 1) if x["ticker"] == "B" and x["high"] < x["low"])
    with pytest.raises(DataError) as err:
        _user_source(tmp_path, path).build()
    msg = str(err.value)
    assert f"{path}: ticker B, row {line}, column 'high'" in msg
    assert "high >= max(open, close)" in msg


def test_a_users_source_without_file_and_row_is_named_by_its_class(tmp_path):
    path = tmp_path / "bars.jsonl"
    _jsonl(path, bad=30)
    with pytest.raises(DataError) as err:
        _user_source(tmp_path, path, BareJsonLinesSource).build()
    assert "BareJsonLinesSource: ticker B, row 31, column 'high'" in str(err.value)


def test_a_users_source_missing_a_column_is_named(tmp_path):
    path = tmp_path / "bars.jsonl"
    _jsonl(path)
    with pytest.raises(DataError) as err:
        _user_source(tmp_path, path, NoVolumeSource).build()
    msg = str(err.value)
    assert "NoVolumeSource" in msg and "no column(s) volume" in msg
    assert ", ".join(LOAD_COLUMNS) in msg


def test_a_users_source_config_key_reaches_it_and_a_shared_key_is_checked(tmp_path):
    path = tmp_path / "bars.jsonl"
    _jsonl(path)
    assert _user_source(tmp_path, path, window=16).window == 16
    with pytest.raises(InstantiationException) as err:
        _user_source(tmp_path, path, bar_size="fortnight")
    assert isinstance(err.value.__cause__, ConfigError)  # Hydra wraps what the class raised
    assert "data.bar_size 'fortnight' is not a bar size" in str(err.value.__cause__)


# --- light to import ---------------------------------------------------------------------


def test_importing_the_sources_in_a_fresh_interpreter_imports_no_torch_or_pandera():
    heavy = ("torch", "pytorch_lightning", "torchrl", "tensordict", "torchmetrics", "pandera")
    code = (
        "import sys, datamodules.sources, datamodules.features, datamodules.splits, "
        "datamodules.config\n"
        "from datamodules.sources import FileSource, SampleSource, SyntheticSource\n"
        "SyntheticSource(tickers=['A'], synthetic={'sessions': 5})\n"
        "SampleSource(tickers=['MSFT'])\n"
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == ""
