"""The SQL source on real databases: a DuckDB file and a PostgreSQL server (``postgres_server``
in conftest). Bars read from a table or a query equal the bars the file source reads; the
tickers and the time range are bound parameters pushed into the query; long ranges are read in
partitions; appended rows rebuild the feature cache and an unchanged table reuses it; every
bad input is one paragraph naming what to fix."""

from __future__ import annotations

import datetime as dt
import logging
import math

import numpy as np
import polars as pl
import pytest

from datamodules.database.connection import connect
from datamodules.database.tables import write_bars
from datamodules.database.uri import parse_uri
from datamodules.errors import ConfigError, DataError
from datamodules.sources import SampleSource, load_sample
from datamodules.sources.sql import SQLSource

BARS = ["ticker", "timestamp", "open", "high", "low", "close", "volume"]


def sample_table(uri: str, tickers=("AAPL", "IBM", "MSFT"), table: str = "bars") -> pl.DataFrame:
    """The shipped sample of ``tickers`` written to ``table`` of ``uri``; the bars written."""
    bars = load_sample(list(tickers)).select(BARS)
    write_bars(parse_uri(uri), bars, table)
    return bars


def execute(uri: str, *statements: str) -> None:
    with connect(parse_uri(uri), write=True) as db:
        for statement in statements:
            db.execute(statement)
        db.commit()


def source(uri: str, tickers=("MSFT",), **kw) -> SQLSource:
    return SQLSource(tickers=list(tickers), uri=uri, bar_size="1d", cache_dir=None, **kw)


def one_paragraph(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text
    return text


# ------------------------------------------------------------------ reading
def test_a_table_reads_the_same_bars_as_the_shipped_file(database_uri):
    written = sample_table(database_uri)
    got = source(database_uri, ["MSFT", "AAPL"]).load()
    assert got.columns == [
        "ticker",
        "timestamp",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "_file",
        "_row",
    ]
    want = written.filter(pl.col("ticker").is_in(["MSFT", "AAPL"])).sort("ticker", "timestamp")
    assert got.select(BARS).equals(want)
    assert got["_row"].to_list()[:2] == [1, 2] and "table bars" in got["_file"][0]


def test_the_pipeline_gives_the_same_market_as_the_sample_source(database_uri):
    sample_table(database_uri)
    ours = source(database_uri, ["MSFT", "IBM"]).build()
    shipped = SampleSource(tickers=["MSFT", "IBM"], cache_dir=None).build()
    assert ours.market.source == "sql" and not ours.market.synthetic
    np.testing.assert_array_equal(ours.market.features, shipped.market.features)
    np.testing.assert_array_equal(ours.market.close, shipped.market.close)
    assert ours.split == shipped.split and ours.quality["tickers"] == shipped.quality["tickers"]


def test_rows_stored_out_of_order_come_back_sorted_and_numbered(database_uri):
    written = sample_table(database_uri, ["IBM", "MSFT"])
    execute(database_uri, "CREATE TABLE shuffled AS SELECT * FROM bars ORDER BY random()")
    got = source(database_uri, ["MSFT", "IBM"], table="shuffled", partition_days=500).load()
    assert got.select(BARS).equals(written.sort("ticker", "timestamp"))
    assert got.filter(pl.col("ticker") == "MSFT")["_row"].to_list() == list(range(1, 3271))


def test_columns_of_other_names_are_mapped_like_the_file_sources(database_uri):
    bars = load_sample(["IBM"]).select(BARS).with_columns(pl.col("volume").round())
    execute(
        database_uri,
        'CREATE TABLE prices ("Symbol" VARCHAR, ts TIMESTAMP, o DOUBLE PRECISION, '
        "h DOUBLE PRECISION, l DOUBLE PRECISION, c DOUBLE PRECISION, vol BIGINT)",
    )
    with connect(parse_uri(database_uri), write=True) as db:
        db.insert(
            ("prices",),
            bars.rename(
                {
                    "ticker": "Symbol",
                    "timestamp": "ts",
                    "open": "o",
                    "high": "h",
                    "low": "l",
                    "close": "c",
                    "volume": "vol",
                }
            ).with_columns(pl.col("vol").cast(pl.Int64)),
            "writing",
        )
        db.commit()
    got = source(
        database_uri,
        ["IBM"],
        table="PRICES",  # unquoted names fold to lower case: matched case-insensitively
        ticker_column="symbol",
        columns={
            "timestamp": "ts",
            "open": "o",
            "high": "h",
            "low": "l",
            "close": "C",
            "volume": "vol",
        },
    ).load()
    assert got.select(BARS).equals(bars.sort("ticker", "timestamp"))
    assert got.schema["volume"] == pl.Float64


def test_a_query_binds_the_tickers_and_the_range_as_parameters(database_uri):
    sample_table(database_uri)
    query = (
        "SELECT ticker, timestamp, open, high, low, close, volume FROM bars "
        "WHERE ticker IN (:tickers) AND timestamp >= :start AND timestamp < :end"
    )
    got = source(
        database_uri, ["IBM", "MSFT"], query=query, start="2005-01-01", end="2005-12-31"
    ).load()
    assert sorted(set(got["ticker"])) == ["IBM", "MSFT"]
    assert str(got["timestamp"].min())[:10] == "2005-01-03"
    assert str(got["timestamp"].max())[:10] == "2005-12-30"
    assert got.height == 2 * 252
    # a ticker that would break the SQL if pasted is just a value that matches nothing
    hostile = "MSFT') OR 1=1 --"
    with pytest.raises(DataError, match="has no rows of it"):
        source(database_uri, [hostile], query=query).load()


def test_the_time_range_is_counted_by_the_database_and_read_in_partitions(database_uri, caplog):
    sample_table(database_uri)
    ranged = source(database_uri, start="2004-06-01", end="2006-05-31", partition_days=100)
    version = ranged.fingerprint()["version"]["MSFT"]
    inside = load_sample(["MSFT"]).filter(
        pl.col("timestamp").is_between(dt.datetime(2004, 6, 1), dt.datetime(2006, 5, 31))
    )
    # the probe's row count is the database's own count of the range: the range is in the SQL
    assert version[:3] == [inside.height, "2004-06-01T00:00:00", "2006-05-31T00:00:00"]
    # ... its digest the exact sum of each column of the range in millionths
    assert version[3:8] == [
        str(sum(math.floor(x * 1_000_000) for x in inside[c].to_list()))
        for c in ("open", "high", "low", "close", "volume")
    ]
    # ... and of the bars' times in microseconds since the epoch
    us = dt.timedelta(microseconds=1)
    epoch = dt.datetime(1970, 1, 1)
    assert version[8:] == [str(sum((t - epoch) // us for t in inside["timestamp"].to_list()))]
    with caplog.at_level(logging.INFO, logger="datamodules.sources.sql"):
        parts = ranged.load()
    assert "(8 partitions)" in caplog.text
    whole = source(database_uri, start="2004-06-01", end="2006-05-31", partition_days=None).load()
    assert parts.equals(whole) and parts.height == inside.height


def test_partitions_without_rows_are_read_as_empty(database_uri):
    bars = load_sample(["MSFT"]).select(BARS)
    years = bars.filter(pl.col("timestamp").dt.year().is_in([2005, 2010]))  # 4 years apart
    write_bars(parse_uri(database_uri), years)
    got = source(database_uri, partition_days=30).load()
    assert got.select(BARS).equals(years) and got["_row"][-1] == years.height


def test_a_timestamptz_column_is_read_in_the_data_timezone(postgres_uri):
    bars = load_sample(["MSFT"]).select(BARS)
    execute(
        postgres_uri,
        "CREATE TABLE tz (ticker text, timestamp timestamptz, open float8, high float8, "
        "low float8, close float8, volume float8)",
    )
    # The same wall-clock times, stored as instants of New York time.
    local = bars.with_columns(
        pl.col("timestamp").dt.replace_time_zone("America/New_York").dt.convert_time_zone("UTC")
    )
    with connect(parse_uri(postgres_uri), write=True) as db:
        db.insert(("tz",), local, "writing")
        db.commit()
    got = source(
        postgres_uri, table="tz", timezone="America/New_York", start="2010-01-01", end="2010-12-31"
    ).load()
    want = bars.filter(pl.col("timestamp").dt.year() == 2010)
    assert got.select(BARS).equals(want)


# ------------------------------------------------------------------ the cache's data version
def test_appended_rows_rebuild_the_features_and_an_unchanged_table_reuses_them(
    database_uri, tmp_path
):
    bars = load_sample(["MSFT"]).select(BARS)
    cut = dt.datetime(2012, 1, 1)
    write_bars(parse_uri(database_uri), bars.filter(pl.col("timestamp") < cut))
    cache = str(tmp_path / "cache")

    def build():
        return SQLSource(tickers=["MSFT"], uri=database_uri, bar_size="1d", cache_dir=cache).build()

    first = build()
    again = build()
    assert not first.cache_hit and again.cache_hit
    assert again.market.num_bars == first.market.num_bars
    write_bars(parse_uri(database_uri), bars.filter(pl.col("timestamp") >= cut), if_exists="append")
    grown = build()
    assert not grown.cache_hit
    assert (
        grown.market.num_bars
        == first.market.num_bars + bars.filter(pl.col("timestamp") >= cut).height
    )
    assert build().cache_hit


def _rebuilt_after(database_uri: str, tmp_path, statement: str):
    """(the features built before, after ``statement`` ran): an UPDATE that leaves the row
    count and the first and last bar as they were still rebuilds them, and the rebuilt
    features are then reused."""
    cache = str(tmp_path / "cache")

    def build():
        return SQLSource(tickers=["MSFT"], uri=database_uri, bar_size="1d", cache_dir=cache).build()

    first = build()
    assert build().cache_hit
    with connect(parse_uri(database_uri), write=True) as db:
        db.execute(statement)
        db.commit()
    rebuilt = build()
    assert not rebuilt.cache_hit
    assert build().cache_hit
    return first, rebuilt


def test_a_bar_corrected_in_place_rebuilds_the_features(database_uri, tmp_path):
    # The row count and the first and last bar stay as they were: only the digest sees it.
    bars = sample_table(database_uri, ["MSFT"])
    day = bars["timestamp"][bars.height // 2]
    close = float(bars.filter(pl.col("timestamp") == day)["close"][0])
    fixed = round(close * 1.01, 4)
    first, corrected = _rebuilt_after(
        database_uri,
        tmp_path,
        f"UPDATE bars SET close = {fixed}, high = greatest(high, {fixed}) "
        f"WHERE ticker = 'MSFT' AND timestamp = '{day.isoformat()}'",
    )
    assert corrected.market.num_bars == first.market.num_bars
    row = int(np.flatnonzero(corrected.market.timestamps == np.datetime64(day))[0])
    assert corrected.market.close[row, 0] == pytest.approx(fixed)
    assert first.market.close[row, 0] == pytest.approx(close)


def test_a_bar_moved_inside_the_range_rebuilds_the_features(database_uri, tmp_path):
    # The row count, the first and last bar and every price stay as they were: only the times'
    # digest sees it.
    bars = sample_table(database_uri, ["MSFT"])
    day = bars["timestamp"][bars.height // 2]
    moved = day + dt.timedelta(hours=1)  # the same session's date, an hour later
    first, rebuilt = _rebuilt_after(
        database_uri,
        tmp_path,
        f"UPDATE bars SET timestamp = '{moved.isoformat()}' "
        f"WHERE ticker = 'MSFT' AND timestamp = '{day.isoformat()}'",
    )
    assert np.datetime64(moved) in rebuilt.market.timestamps
    assert np.datetime64(day) in first.market.timestamps
    assert np.datetime64(day) not in rebuilt.market.timestamps


def test_the_cache_key_and_the_source_repr_hold_no_credentials(postgres_server, postgres_uri):
    sample_table(postgres_uri, ["MSFT"])
    printed = str(source(postgres_uri).fingerprint())
    assert postgres_server.password not in printed and "bars@" not in printed
    assert printed.count("127.0.0.1") == 1
    shown = repr(source(postgres_uri))
    assert postgres_server.password not in shown and "uri='postgresql://bars:***@" in shown


# ------------------------------------------------------------------ credentials
def test_the_password_can_come_from_pgpassword_or_the_password_file(
    postgres_server, postgres_uri, tmp_path, monkeypatch
):
    sample_table(postgres_uri, ["MSFT"])
    bare = parse_uri(postgres_uri).without_password()
    assert postgres_server.password not in bare
    for name in ("PGPASSWORD", "PGPASSFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.pgpass of the machine's
    with pytest.raises(DataError) as err:
        source(bare).load()
    assert "asks for a password" in one_paragraph(err) and "PGPASSWORD" in str(err.value)

    monkeypatch.setenv("PGPASSWORD", postgres_server.password)
    assert source(bare).load().height == 3270
    # a saved config shows the password as ***: it is not sent, PGPASSWORD is used
    masked = parse_uri(postgres_uri).masked()
    assert "***" in masked and source(masked).load().height == 3270
    monkeypatch.delenv("PGPASSWORD")

    pgpass = tmp_path / ".pgpass"
    pgpass.write_text(f"127.0.0.1:{postgres_server.port}:*:bars:{postgres_server.password}\n")
    pgpass.chmod(0o600)  # libpq ignores a password file others can read
    assert source(bare).load().height == 3270


# ------------------------------------------------------------------ bad input
def test_an_unreachable_server_is_one_paragraph(postgres_server):
    from helpers.postgres import free_port

    uri = f"postgresql://bars:{postgres_server.password}@127.0.0.1:{free_port()}/postgres"
    with pytest.raises(DataError) as err:
        source(uri).load()
    text = one_paragraph(err)
    assert "cannot reach the PostgreSQL server at 127.0.0.1" in text
    assert "refused" in text.lower() and postgres_server.password not in text


def test_a_wrong_password_is_refused_without_showing_it(postgres_server, postgres_uri):
    sample_table(postgres_uri, ["MSFT"])
    wrong = postgres_server.database_uri(postgres_uri.rsplit("/", 1)[1], password="not-it-42")
    with pytest.raises(DataError) as err:
        source(wrong).load()
    text = one_paragraph(err)
    assert "refused the password" in text and "user 'bars'" in text
    assert "not-it-42" not in text and "PGPASSWORD" in text and "~/.pgpass" in text


def test_a_missing_table_names_the_tables_there_are(database_uri):
    sample_table(database_uri, ["MSFT"])
    with pytest.raises(DataError) as err:
        source(database_uri, table="prices").load()
    text = one_paragraph(err)
    assert "no table 'prices'" in text and "it has bars" in text
    assert "python -m experiments.ingest" in text


def test_a_missing_duckdb_file_says_how_to_make_one(tmp_path):
    uri = f"duckdb:///{tmp_path / 'none.duckdb'}"
    with pytest.raises(DataError) as err:
        source(uri).load()
    text = one_paragraph(err)
    assert "no DuckDB file" in text and "python -m experiments.ingest sample --to" in text


def test_a_missing_column_names_the_columns_there_are(database_uri):
    sample_table(database_uri, ["MSFT"])
    with pytest.raises(DataError) as err:
        source(database_uri, columns={"close": "adj_close"}).load()
    text = one_paragraph(err)
    assert "no column 'adj_close' for close (data.columns.close)" in text
    assert "ticker, timestamp, open, high, low, close, volume" in text
    query = "SELECT ticker, timestamp, open, high, low, volume FROM bars"
    with pytest.raises(DataError, match="no column 'close' for close.*AS close"):
        source(database_uri, query=query).load()


def test_a_query_returning_duplicate_bars_fails_validation(database_uri):
    sample_table(database_uri, ["MSFT"])
    query = (
        "SELECT * FROM bars UNION ALL "
        "SELECT * FROM bars WHERE timestamp = CAST('2005-06-01' AS TIMESTAMP)"
    )
    with pytest.raises(DataError) as err:
        source(database_uri, query=query).build()
    text = one_paragraph(err)
    assert "ticker MSFT" in text and "no duplicate timestamps" in text and "data.query" in text


def test_text_where_numbers_belong_is_refused_with_an_example(database_uri):
    sample_table(database_uri, ["MSFT"])
    query = (
        "SELECT ticker, timestamp, open, high, low, CAST(close AS VARCHAR) AS close, volume "
        "FROM bars"
    )
    with pytest.raises(DataError) as err:
        source(database_uri, query=query).load()
    text = one_paragraph(err)
    assert "column 'close' (close) holds text, e.g. '" in text
    assert "it must be a number type" in text and "CAST(close AS DOUBLE PRECISION)" in text
    stamps = "SELECT ticker, CAST(timestamp AS VARCHAR) AS timestamp, open, high, low, close, volume FROM bars"
    with pytest.raises(DataError, match="holds text.*a timestamp or date type"):
        source(database_uri, query=stamps).load()


def test_a_ticker_without_rows_in_the_range_is_named(database_uri):
    sample_table(database_uri, ["MSFT", "GOOG"])  # GOOG starts in 2004-08
    with pytest.raises(DataError) as err:
        source(database_uri, ["MSFT", "GOOG"], start="2001-01-01", end="2003-12-31").load()
    text = one_paragraph(err)
    assert (
        "env.tickers asks for GOOG" in text and "no rows of it from data.start=2001-01-01" in text
    )
    assert "GOOG's rows run from 2004-08-19" in text and "It has rows of MSFT" in text
    with pytest.raises(DataError, match="asks for TSLA.*It has rows of GOOG, MSFT"):
        source(database_uri, ["TSLA"]).load()


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("mysql://u:secret@host/db", "the scheme 'mysql' is not supported"),
        ("sqlite:///bars.sqlite", "the scheme 'sqlite' is not supported"),
        ("outputs/market.duckdb", "which is not a URI"),
        ("duckdb://market.duckdb", "a DuckDB URI names a file"),
    ],
)
def test_an_unsupported_uri_is_refused_before_anything_is_read(uri, message):
    with pytest.raises(ConfigError) as err:
        source(uri)
    text = one_paragraph(err)
    assert message in text and "data.uri" in text and "secret" not in text


def test_table_and_query_together_or_a_bad_table_name_are_config_errors():
    uri = "duckdb:///outputs/market.duckdb"
    with pytest.raises(ConfigError, match="give one of them"):
        source(uri, table="bars", query="SELECT * FROM bars")
    with pytest.raises(ConfigError, match="data.table is 'bars; drop'"):
        source(uri, table="bars; drop")
    with pytest.raises(ConfigError, match="more than one statement"):
        source(uri, query="SELECT * FROM bars; DROP TABLE bars")
    with pytest.raises(ConfigError, match="data.partition_days is 0"):
        source(uri, partition_days=0)
    with pytest.raises(ConfigError, match="data.columns has unknown key"):
        source(uri, columns={"price": "close"})
