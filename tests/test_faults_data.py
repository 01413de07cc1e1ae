"""Data messages a user can act on: a file too short for the window and the features' warm-up
says how many bars it has and how many are needed; a non-finite price is called non-finite; a
CSV that cannot be parsed names the line; positions are the line numbers an editor shows."""

from __future__ import annotations

import polars as pl
import pytest
from helpers.markets import daily_bars

from datamodules.errors import DataError
from datamodules.sources import FileSource


def refused(path, **kw) -> str:
    with pytest.raises(DataError) as err:
        FileSource(
            tickers=["GOOGL"],
            bar_size="1d",
            files={"GOOGL": str(path)},
            window=16,
            sessions_per_year=365,
            cache_dir=None,
            **kw,
        ).build()
    return str(err.value)


def test_a_file_too_short_for_the_warmup_and_window_says_how_many_bars_it_needs(tmp_path):
    path = tmp_path / "googl.csv"
    daily_bars(40).write_csv(path)
    message = refused(path)
    assert "GOOGL has 40 bars of 1d" in message
    assert "warm-up uses the first 60" in message and "data.window=16" in message
    assert "at least 114 bars are needed" in message  # 60 + 3 x (16 + 2)
    assert "different numbers of bars" not in message


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_a_non_finite_price_is_called_non_finite_once(tmp_path, value):
    frame = daily_bars(120)
    close = frame["close"].to_list()
    close[9] = value
    path = tmp_path / "googl.csv"
    frame.with_columns(pl.Series("close", close)).write_csv(path)
    message = refused(path)
    assert "line 11, column 'close' fails check 'finite (not inf or NaN)'" in message
    assert "high >= max" not in message and "low <= min" not in message
    assert "greater_than" not in message
    assert path.read_text().splitlines()[10].split(",")[4].lower() in ("inf", "-inf", "nan")


def test_a_ragged_csv_line_is_named(tmp_path):
    path = tmp_path / "googl.csv"
    daily_bars(120).write_csv(path)
    lines = path.read_text().splitlines()
    lines[7] += ",42"
    path.write_text("\n".join(lines) + "\n")
    message = refused(path)
    assert "cannot be read as CSV: line 8 has 7 fields where the header (line 1) has 6" in message


def test_an_unclosed_quote_names_the_line_it_opens_on(tmp_path):
    path = tmp_path / "googl.csv"
    daily_bars(120).write_csv(path)
    lines = path.read_text().splitlines()
    cells = lines[30].split(",")
    cells[1] = '"' + cells[1]
    lines[30] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    assert "cannot be read as CSV: line 31:" in refused(path)


def test_a_bad_value_is_named_by_the_line_an_editor_shows(tmp_path):
    path = tmp_path / "googl.csv"
    daily_bars(120).write_csv(path)
    lines = path.read_text().splitlines()
    cells = lines[41].split(",")
    cells[2] = "12,5".replace(",", ";")  # not a number
    lines[41] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    message = refused(path)
    assert "column 'high', line 42: value '12;5' is not a number" in message
    assert path.read_text().splitlines()[42 - 1].split(",")[2] == "12;5"  # editor line 42


def test_a_parquet_file_is_named_by_row(tmp_path):
    frame = daily_bars(120)
    frame = frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 4).then(0.0).otherwise(pl.col("open")).alias("open")
    )
    path = tmp_path / "googl.parquet"
    frame.write_parquet(path)
    assert "row 5, column 'open'" in refused(path)
