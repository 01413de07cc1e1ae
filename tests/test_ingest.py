"""``python -m experiments.ingest``: the sample, a synthetic market or a file of your own into a
DuckDB file or a PostgreSQL table with proper types and a primary key on (ticker, timestamp),
validated first, never overwriting a table unless told to (append, or replace)."""

from __future__ import annotations

import datetime as dt
import sys

import polars as pl
import pytest
from helpers import warm

from datamodules.database.connection import connect
from datamodules.database.statements import Bound
from datamodules.database.uri import parse_uri
from datamodules.sources import load_sample
from datamodules.sources.sql import SQLSource
from experiments.ingest.cli import main


def ingest(*args: str, capsys) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read(uri: str, sql: str) -> pl.DataFrame:
    with connect(parse_uri(uri)) as db:
        return db.read(Bound(sql, ()), "a test's query")


def rows(uri: str, table: str = "bars") -> int:
    return int(read(uri, f"SELECT count(*) AS n FROM {table}")["n"][0])


def test_the_sample_goes_into_a_table_with_types_and_a_primary_key(database_uri, capsys):
    code, out, err = ingest("sample", "--to", database_uri, capsys=capsys)
    assert code == 0, err
    assert out.startswith(
        f"Created table bars of {parse_uri(database_uri).masked()}: wrote 11958 bars"
    )
    assert "AAPL 3270, GOOG 2148, IBM 3270, MSFT 3270" in out
    assert "data=sql data.uri=" in out and "secret" not in out
    types = dict(
        read(
            database_uri,
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'bars' ORDER BY ordinal_position",
        ).iter_rows()
    )
    if database_uri.startswith("duckdb"):
        assert types == {
            "ticker": "VARCHAR",
            "timestamp": "TIMESTAMP",
            **dict.fromkeys(["open", "high", "low", "close", "volume"], "DOUBLE"),
        }
    else:
        assert types == {
            "ticker": "text",
            "timestamp": "timestamp without time zone",
            **dict.fromkeys(["open", "high", "low", "close", "volume"], "double precision"),
        }
    keys = read(
        database_uri,
        "SELECT constraint_type FROM information_schema.table_constraints "
        "WHERE table_name = 'bars' AND constraint_type = 'PRIMARY KEY'",
    )
    assert keys.height == 1
    got = SQLSource(tickers=["GOOG"], uri=database_uri, cache_dir=None).load()
    assert got.drop("_file", "_row").equals(load_sample(["GOOG"]).drop("_file", "_row"))


def test_an_existing_table_is_never_overwritten_unless_told(database_uri, capsys, tmp_path):
    assert ingest("sample", "--to", database_uri, "--tickers", "MSFT", capsys=capsys)[0] == 0
    before = read(database_uri, "SELECT * FROM bars ORDER BY timestamp")

    code, out, err = ingest("sample", "--to", database_uri, "--tickers", "IBM", capsys=capsys)
    assert code == 2 and out == ""
    assert "already has a table 'bars' (3270 rows); it is left as it is" in err
    assert "--if-exists append" in err and "--if-exists replace" in err
    assert read(database_uri, "SELECT * FROM bars ORDER BY timestamp").equals(before)

    # a bar the table already holds refuses the whole append: nothing is written
    code, _, err = ingest(
        "sample",
        "--to",
        database_uri,
        "--tickers",
        "MSFT,IBM",
        "--if-exists",
        "append",
        capsys=capsys,
    )
    assert code == 2 and "already holds some of these bars" in err and "MSFT" in err
    assert "nothing was written" in err and rows(database_uri) == 3270

    code, out, _ = ingest(
        "sample", "--to", database_uri, "--tickers", "IBM", "--if-exists", "append", capsys=capsys
    )
    assert code == 0 and out.startswith("Appended to table bars") and rows(database_uri) == 6540

    code, out, _ = ingest(
        "sample", "--to", database_uri, "--tickers", "AAPL", "--if-exists", "replace", capsys=capsys
    )
    assert code == 0 and out.startswith("Replaced table bars") and "it holds 3270 rows" in out
    assert read(database_uri, "SELECT DISTINCT ticker FROM bars")["ticker"].to_list() == ["AAPL"]


def test_a_csv_of_your_own_with_its_own_column_names(duckdb_uri, capsys, tmp_path):
    raw = load_sample(["IBM"])
    csv = tmp_path / "ibm.csv"
    raw.select(
        pl.col("timestamp").dt.strftime("%d/%m/%Y").alias("Date"),
        *(pl.col(c).alias(c.title()) for c in ("open", "high", "low", "close")),
        pl.col("volume").alias("Vol"),
    ).write_csv(csv)
    code, out, err = ingest(
        str(csv),
        "--to",
        duckdb_uri,
        "--table",
        "daily.prices",
        "--ticker",
        "IBM",
        "--column",
        "timestamp=Date",
        "--column",
        "volume=Vol",
        "--timestamp-format",
        "%d/%m/%Y",
        "--start",
        "2010-01-01",
        capsys=capsys,
    )
    assert code == 0, err
    assert "data.table=daily.prices" in out
    got = SQLSource(tickers=["IBM"], uri=duckdb_uri, table="daily.prices", cache_dir=None).load()
    want = raw.filter(pl.col("timestamp") >= dt.datetime(2010, 1, 1))
    assert got.drop("_file", "_row").equals(want.drop("_file", "_row"))


def test_a_parquet_file_of_many_tickers_goes_into_postgresql(postgres_uri, capsys, tmp_path):
    path = tmp_path / "all.parquet"
    load_sample(["AAPL", "IBM", "MSFT"]).drop("_file", "_row").rename(
        {"ticker": "symbol"}
    ).write_parquet(path)
    code, out, err = ingest(
        str(path),
        "--to",
        postgres_uri,
        "--ticker-column",
        "symbol",
        "--tickers",
        "MSFT,IBM",
        capsys=capsys,
    )
    assert code == 0, err
    assert "IBM 3270, MSFT 3270" in out and "AAPL" not in out
    assert parse_uri(postgres_uri).masked() in out
    assert postgres_uri.split(":")[2].split("@")[0] not in out  # the password is never printed


def test_bad_bars_are_refused_before_anything_is_written(duckdb_uri, capsys, tmp_path):
    bad = (
        load_sample(["MSFT"])
        .drop("_file", "_row", "ticker")
        .with_columns(
            pl.when(pl.int_range(pl.len()) == 10)
            .then(pl.col("low") / 2)
            .otherwise(pl.col("high"))
            .alias("high")
        )
    )
    path = tmp_path / "msft.csv"
    bad.write_csv(path)
    code, _, err = ingest(str(path), "--to", duckdb_uri, "--ticker", "MSFT", capsys=capsys)
    assert code == 2 and "line 12" in err and "high >= max(open, close)" in err
    assert not parse_uri(duckdb_uri).path.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sample", "--to", "mysql://u:hunter2@h/db"], "--to is 'mysql://u:***@h/db': the scheme"),
        (["sample", "--to", "DUCK", "--tickers", "MSFT"], "--to is 'DUCK', which is not a URI"),
        (["sample", "--tickers", "TSLA"], "data=sample only has AAPL, GOOG, IBM, MSFT"),
        (["nope.csv"], "SOURCE: file 'nope.csv' does not exist"),
        (["prices.csv"], "say whose bars the file holds: --ticker NAME"),
        (["sample", "--table", "bars;drop"], "--table is 'bars;drop'"),
        (["prices.csv", "--column", "timestamp"], "--column 'timestamp': give OURS=THEIRS"),
        (["sample", "--ticker", "MSFT"], "--ticker describe a file of your own"),
        (["sample", "--start", "2013-01-01", "--end", "2012-01-01"], "is after data.end"),
    ],
)
def test_bad_input_is_one_paragraph(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prices.csv").write_text("timestamp,open,high,low,close,volume\n")
    if "--to" not in args:
        args = [*args, "--to", f"duckdb:///{tmp_path / 'x.duckdb'}"]
    code, out, err = ingest(*args, capsys=capsys)
    assert code == 2 and out == "" and message in err, err
    assert err.startswith("Error: ") and err.count("\n") == 1 and "hunter2" not in err


def test_the_command_runs_as_a_user_types_it(tmp_path):
    done = warm.run(
        [
            sys.executable,
            "-m",
            "experiments.ingest",
            "sample",
            "--to",
            "duckdb:///outputs/market.duckdb",
        ],
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "outputs" / "market.duckdb").is_file()
    assert "Created table bars of duckdb:///outputs/market.duckdb" in done.stdout
