"""Validation of raw bars: each broken rule is a DataError naming file, ticker, row, column, check."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from datamodules.errors import ConfigError, DataError, UserInputError
from datamodules.schema import validate_bars
from datamodules.sources import FileSource
from datamodules.synthetic import SyntheticConfig, generate_bars


def _bars(n: int = 12, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = close * np.exp(rng.normal(0, 0.004, n))
    return pl.DataFrame(
        {
            "timestamp": [
                dt.datetime(2024, 1, 2, 9, 30) + dt.timedelta(minutes=5 * i) for i in range(n)
            ],
            "open": open_,
            "high": np.maximum(open_, close) * 1.003,
            "low": np.minimum(open_, close) * 0.997,
            "close": close,
            "volume": rng.integers(100, 10_000, n).astype(float),
        }
    )


def _set(frame: pl.DataFrame, column: str, index: int, value) -> pl.DataFrame:
    values = frame[column].to_list()
    values[index] = value
    return frame.with_columns(pl.Series(column, values, dtype=frame[column].dtype))


def _build_error(tmp_path, frames: dict[str, pl.DataFrame]) -> str:
    """Write one CSV per ticker, build through the pipeline, return the error message."""
    files = {}
    for ticker, frame in frames.items():
        path = tmp_path / f"{ticker.lower()}.csv"
        frame.write_csv(path)
        files[ticker] = str(path)
    with pytest.raises(DataError) as err:
        FileSource(tickers=list(frames), bar_size="5min", files=files, cache_dir=None).build()
    assert isinstance(err.value, UserInputError)
    return str(err.value)


def test_valid_bars_pass_validation_unchanged():
    frame = generate_bars(["A", "B"], 15, 3, SyntheticConfig(sessions=5))
    assert validate_bars(frame).equals(frame)


def test_null_price_names_file_ticker_row_column_and_check(tmp_path):
    msg = _build_error(tmp_path, {"ABC": _set(_bars(), "close", 3, None)})
    assert "abc.csv" in msg and "ticker ABC" in msg and "line 5" in msg
    assert "column 'close'" in msg and "not_nullable" in msg


def test_empty_cell_in_csv_is_a_null_value_error(tmp_path):
    path = tmp_path / "x.csv"
    _bars().write_csv(path)
    lines = path.read_text().splitlines()
    cells = lines[6].split(",")
    cells[5] = ""  # volume of data row 6
    lines[6] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as err:
        FileSource(tickers=["X"], bar_size="5min", files={"X": str(path)}, cache_dir=None).build()
    msg = str(err.value)
    assert "line 7" in msg and "column 'volume'" in msg and "not_nullable" in msg


def test_non_increasing_timestamps_name_the_row_and_check(tmp_path):
    frame = _bars()
    stamps = frame["timestamp"].to_list()
    stamps[4], stamps[5] = stamps[5], stamps[4]
    msg = _build_error(tmp_path, {"X": frame.with_columns(pl.Series("timestamp", stamps))})
    assert "x.csv" in msg and "ticker X" in msg and "line 7" in msg
    assert "column 'timestamp'" in msg and "timestamps strictly increasing" in msg
    assert "sort the file" in msg


def test_duplicate_timestamps_name_the_first_row_and_check(tmp_path):
    frame = _bars()
    stamps = frame["timestamp"].to_list()
    stamps[7] = stamps[6]
    msg = _build_error(tmp_path, {"X": frame.with_columns(pl.Series("timestamp", stamps))})
    assert "line 8" in msg and "column 'timestamp'" in msg and "no duplicate timestamps" in msg
    assert "2 row(s) fail it" in msg
    # A duplicate is reported as such, not also as a non-increasing timestamp.
    assert "strictly increasing" not in msg


def test_high_below_low_is_refused_naming_the_high(tmp_path):
    frame = _bars()
    low = frame["low"][5]
    msg = _build_error(tmp_path, {"X": _set(frame, "high", 5, low * 0.9)})
    assert "line 7" in msg and "column 'high'" in msg and "high >= max(open, close)" in msg


def test_high_below_close_is_refused(tmp_path):
    frame = _bars()
    close, open_ = frame["close"][2], frame["open"][2]
    high = min(close, open_) + 0.5 * abs(close - open_)  # between open and close
    frame = _set(frame, "high", 2, high)
    msg = _build_error(tmp_path, {"X": frame})
    assert "line 4" in msg and "column 'high'" in msg and f"value {high!r}" in msg


def test_low_above_open_is_refused_naming_the_low(tmp_path):
    frame = _bars()
    top = max(frame["open"][8], frame["close"][8])
    msg = _build_error(tmp_path, {"X": _set(frame, "low", 8, top * 1.001)})
    assert "line 10" in msg and "column 'low'" in msg and "low <= min(open, close)" in msg


def test_non_positive_price_and_negative_volume_are_refused(tmp_path):
    frame = _set(_set(_bars(), "open", 1, 0.0), "volume", 9, -5.0)
    msg = _build_error(tmp_path, {"X": frame})
    assert "line 3" in msg and "column 'open'" in msg
    assert "line 11" in msg and "column 'volume'" in msg


def test_error_in_second_ticker_names_that_ticker_and_its_file(tmp_path):
    good = _bars(seed=1)
    bad = _set(_bars(seed=2), "close", 10, None)
    msg = _build_error(tmp_path, {"GOOD": good, "BAD": bad})
    assert "bad.csv" in msg and "ticker BAD" in msg and "line 12" in msg
    assert "good.csv" not in msg


def test_user_input_errors_are_value_errors_with_two_kinds():
    assert issubclass(DataError, UserInputError) and issubclass(ConfigError, UserInputError)
    assert issubclass(UserInputError, ValueError)
