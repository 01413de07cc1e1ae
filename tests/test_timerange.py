"""``data.start`` and ``data.end``: the time range a run reads, honoured by every source (files,
the sample, the synthetic market here; the SQL source pushes it into its query, test_sql.py),
both ends included, in the data's own time."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from datamodules.errors import ConfigError, DataError
from datamodules.sources import FileSource, SampleSource, SyntheticSource, load_sample
from datamodules.timerange import TimeRange


def first_last(market) -> tuple[str, str]:
    return str(market.timestamps[0])[:19], str(market.timestamps[-1])[:19]


def test_the_sample_keeps_the_days_from_start_to_end_both_included():
    data = SampleSource(
        tickers=["MSFT"], cache_dir=None, start="2006-01-01", end="2008-12-31"
    ).build()
    warmup = data.market.num_bars  # features drop their warm-up bars at the start
    days = load_sample(["MSFT"]).filter(
        pl.col("timestamp").is_between(dt.datetime(2006, 1, 1), dt.datetime(2008, 12, 31))
    )
    assert str(data.market.timestamps[-1])[:10] == "2008-12-31"
    assert warmup < days.height and str(days["timestamp"].min())[:10] == "2006-01-03"
    assert data.quality["tickers"]["MSFT"]["first"] == "2006-01-03"
    assert data.quality["tickers"]["MSFT"]["bars"] == days.height


def test_files_honour_the_range_to_the_minute(tmp_path):
    raw = load_sample(["IBM"]).drop("_file", "_row", "ticker")
    path = tmp_path / "ibm.parquet"
    raw.write_parquet(path)
    whole = FileSource(tickers=["IBM"], files={"IBM": str(path)}, bar_size="1d", cache_dir=None)
    cut = FileSource(
        tickers=["IBM"],
        files={"IBM": str(path)},
        bar_size="1d",
        cache_dir=None,
        start="2004-01-01",
        end="2010-06-30 00:00",  # a time: bars up to and including it
    )
    assert first_last(cut.build().market)[1] == "2010-06-30T00:00:00"
    assert whole.build().market.num_bars > cut.build().market.num_bars


def test_the_synthetic_market_is_cut_after_it_is_generated():
    kw = {"tickers": ["A"], "bar_size": "15min", "cache_dir": None, "synthetic": {"sessions": 120}}
    full = SyntheticSource(**kw).build().market
    part = SyntheticSource(**kw, start="2020-03-02", end="2020-04-30").build().market
    assert first_last(part)[1] == "2020-04-30T15:45:00"
    # the same bars as the whole market's over that range: cutting changes no price
    at = np.searchsorted(full.timestamps, part.timestamps[0])
    np.testing.assert_array_equal(full.close[at : at + part.num_bars], part.close)


def test_the_range_is_part_of_the_cache_key(tmp_path):
    kw = {"tickers": ["MSFT"], "cache_dir": str(tmp_path)}
    a = SampleSource(**kw, start="2005-01-01").build()
    b = SampleSource(**kw, start="2007-01-01").build()
    assert not b.cache_hit and b.market.num_bars < a.market.num_bars
    assert SampleSource(**kw, start="2007-01-01").build().cache_hit


def test_a_ticker_without_bars_in_the_range_is_named_with_its_own_span(tmp_path):
    ibm = load_sample(["IBM"]).drop("_file", "_row", "ticker")
    old = ibm.filter(pl.col("timestamp") < dt.datetime(2005, 1, 1))
    paths = {"IBM": tmp_path / "ibm.csv", "OLD": tmp_path / "old.csv"}
    ibm.write_csv(paths["IBM"])
    old.write_csv(paths["OLD"])
    source = FileSource(
        tickers=["IBM", "OLD"],
        files={k: str(v) for k, v in paths.items()},
        bar_size="1d",
        cache_dir=None,
        start="2008-01-01",
    )
    with pytest.raises(DataError) as err:
        source.build()
    text = str(err.value)
    assert text.startswith("OLD: no bars from data.start=2008-01-01 in the files data")
    assert "OLD's bars run from 2000-03-01 00:00:00 to 2004-12-31 00:00:00" in text


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("2010-01-01", "2009-12-31", "data.start=2010-01-01 is after data.end=2009-12-31"),
        ("01/02/2010", None, "data.start is '01/02/2010', which is not a date or time"),
        (None, "2010-01-01T10:00+02:00", "data.end is '2010-01-01T10:00+02:00', with a time zone"),
        (20100101, None, "data.start is 20100101; give YYYY-MM-DD"),
    ],
)
def test_a_bad_range_is_a_config_error(start, end, message):
    with pytest.raises(ConfigError) as err:
        TimeRange.from_config(start, end)
    assert message in str(err.value)
    with pytest.raises(ConfigError):
        SyntheticSource(tickers=["A"], start=start, end=end)


def test_the_range_is_half_open_inside():
    whole_day = TimeRange.from_config("2010-01-04", "2010-01-05")
    assert whole_day.lower == dt.datetime(2010, 1, 4) and whole_day.upper == dt.datetime(2010, 1, 6)
    to_the_minute = TimeRange.from_config(None, "2010-01-05 16:00")
    assert to_the_minute.upper == dt.datetime(2010, 1, 5, 16, 0, 0, 1)
