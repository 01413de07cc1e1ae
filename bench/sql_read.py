"""How fast bars come out of a database: rows/s of the SQL source beside pandas.read_sql.

    python bench/sql_read.py                      # 5M rows of 100 tickers, a throwaway server
    python bench/sql_read.py --rows 500000        # a smaller table
    python bench/sql_read.py --postgres URI       # an existing server (or TEST_POSTGRES_URI)
    python bench/sql_read.py --json PATH          # also write the rows as JSON

One run, one machine: a table of ``--rows`` one-minute bars of ``--tickers`` tickers (random
walks, float64 OHLCV) is written to a PostgreSQL server (a throwaway cluster started as in the
tests, ``tests/helpers/postgres.py``, unless ``--postgres`` names one) and to a DuckDB file,
each through ``datamodules.database.tables.write_bars`` (the ingest command's writer). Then,
``--repeats`` times each, in turn:

- ours, PostgreSQL: ``SQLSource(...).load()``, what a run does: the data-version probe, the
  bound query (ADBC, Arrow straight into polars), types, sort, the row numbers for messages;
- ours, DuckDB: the same ``load()`` from the DuckDB file (DuckDB's own polars output);
- polars.read_database_uri with connectorx (PostgreSQL; it cannot bind parameters, so the
  source does not use it; shown for reference);
- the peer: ``pandas.read_sql`` of the same SELECT over SQLAlchemy and psycopg2.

The table gives the median seconds (and the range over the repeats), rows/s and each reader's
speed as a multiple of the peer's. The goals: at least 5x the peer from PostgreSQL, 20x from
DuckDB. pandas 3 only accepts SQLAlchemy 2 engines, and the project pins SQLAlchemy 1.4 (for
optuna), so the peer hands pandas the engine's pooled psycopg2 connection
(``engine.raw_connection()``): pandas then runs its DBAPI path (cursor, fetchall,
``DataFrame.from_records``), the same work its SQLAlchemy path does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # helpers.postgres: the throwaway server of the tests

from datamodules.database.tables import write_bars  # noqa: E402
from datamodules.database.uri import parse_uri  # noqa: E402
from datamodules.sources.sql import SQLSource  # noqa: E402

GOALS = {"PostgreSQL": 5.0, "DuckDB": 20.0}  # x pandas.read_sql
PEER = "pandas.read_sql (SQLAlchemy + psycopg2)"


def bars(rows: int, tickers: int, seed: int = 0) -> pl.DataFrame:
    """``rows`` one-minute bars split evenly over ``tickers`` tickers, 390 bars a session."""
    per = rows // tickers
    rng = np.random.default_rng(seed)
    minute = np.arange(per)
    day = np.datetime64("2020-01-02") + (minute // 390).astype("timedelta64[D]")
    stamps = (
        day.astype("datetime64[m]")
        + np.timedelta64(570, "m")
        + (minute % 390).astype("timedelta64[m]")
    ).astype("datetime64[us]")
    close = 100 * np.exp(np.cumsum(rng.normal(0, 5e-4, (tickers, per)), axis=1))
    open_ = np.concatenate([np.full((tickers, 1), 100.0), close[:, :-1]], axis=1)
    wiggle = rng.uniform(0, 5e-4, (2, tickers, per))
    return pl.DataFrame(
        {
            "ticker": np.repeat([f"T{i:03d}" for i in range(tickers)], per),
            "timestamp": np.tile(stamps, tickers),
            "open": open_.ravel(),
            "high": (np.maximum(open_, close) * (1 + wiggle[0])).ravel(),
            "low": (np.minimum(open_, close) * (1 - wiggle[1])).ravel(),
            "close": close.ravel(),
            "volume": rng.integers(100, 10_000, tickers * per).astype(np.float64),
        }
    )


def summary(seconds: list[float], rows: int) -> dict:
    median = statistics.median(seconds)
    return {
        "seconds": median,
        "min": min(seconds),
        "max": max(seconds),
        "rows_per_s": rows / median,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5_000_000, help="bar rows in the table")
    parser.add_argument("--tickers", type=int, default=100, help="tickers in the table")
    parser.add_argument("--repeats", type=int, default=3, help="reads of each reader")
    parser.add_argument("--postgres", help="URI of a server to use (default: a throwaway one)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()

    from helpers import postgres

    server = None
    uri = args.postgres or os.environ.get(postgres.ENV_URI)
    if uri is None:
        server = postgres.start()
        uri = server.uri
    folder = Path(tempfile.mkdtemp(prefix="bench-sql-"))
    duck = f"duckdb:///{folder / 'market.duckdb'}"
    try:
        frame = bars(args.rows, args.tickers)
        rows = frame.height
        tickers = sorted(frame["ticker"].unique().to_list())
        writes = {}
        for label, target in (("PostgreSQL", uri), ("DuckDB", duck)):
            start = time.perf_counter()
            write_bars(parse_uri(target), frame, "bench_bars", if_exists="replace")
            writes[label] = time.perf_counter() - start
        del frame
        print(
            f"{rows:,} rows of {len(tickers)} tickers written: PostgreSQL {writes['PostgreSQL']:.1f} s "
            f"({rows / writes['PostgreSQL']:,.0f} rows/s), DuckDB {writes['DuckDB']:.1f} s "
            f"({rows / writes['DuckDB']:,.0f} rows/s)",
            flush=True,
        )

        def ours(target: str, cold: bool) -> Callable[[], float]:
            """Seconds of ``load()`` (after the probe, untimed) or, ``cold``, of the probe and
            ``load()`` together: a run whose feature cache misses."""

            def run() -> float:
                source = SQLSource(
                    tickers=tickers, uri=target, table="bench_bars", bar_size="1min", cache_dir=None
                )
                start = time.perf_counter()
                source.fingerprint()
                if not cold:
                    start = time.perf_counter()
                got = source.load()
                seconds = time.perf_counter() - start
                assert got.height == rows, f"read {got.height} rows, expected {rows}"
                return seconds

            return run

        select = "SELECT ticker, timestamp, open, high, low, close, volume FROM bench_bars"
        plain = parse_uri(uri).libpq().split("?")[0]

        def clock(read: Callable[[], object]) -> Callable[[], float]:
            def run() -> float:
                start = time.perf_counter()
                got = read()
                seconds = time.perf_counter() - start
                assert len(got) == rows, f"read {len(got)} rows, expected {rows}"
                return seconds

            return run

        import pandas as pd
        import sqlalchemy

        engine = sqlalchemy.create_engine(uri.replace("postgresql://", "postgresql+psycopg2://", 1))

        def peer():
            connection = engine.raw_connection()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # pandas: "not tested" DBAPI
                    return pd.read_sql(select, connection)
            finally:
                connection.close()

        readers = {
            "ours, PostgreSQL: read (SQLSource.load)": ours(uri, cold=False),
            "ours, PostgreSQL: probe + read (a cold cache)": ours(uri, cold=True),
            "ours, DuckDB: read (SQLSource.load)": ours(duck, cold=False),
            "ours, DuckDB: probe + read (a cold cache)": ours(duck, cold=True),
            "polars + connectorx, PostgreSQL": clock(
                lambda: pl.read_database_uri(select, plain, engine="connectorx")
            ),
            PEER: clock(peer),
        }
        seconds: dict[str, list[float]] = {name: [] for name in readers}
        for repeat in range(args.repeats):  # round-robin: the machine's load falls on all alike
            for name, run in readers.items():
                seconds[name].append(run())
            print(
                f"  repeat {repeat + 1}: " + ", ".join(f"{s[-1]:.2f}" for s in seconds.values()),
                flush=True,
            )
        results = {name: summary(values, rows) for name, values in seconds.items()}
        base = results[PEER]["rows_per_s"]
        print()
        print(
            f"| reader ({rows:,} rows, {len(tickers)} tickers) | s (median, range of {args.repeats}) | rows/s | vs pandas | goal |"
        )
        print("|---|---:|---:|---:|---|")
        out = []
        for name, r in results.items():
            ratio = r["rows_per_s"] / base
            goal = next((g for db, g in GOALS.items() if name.startswith(f"ours, {db}")), None)
            verdict = f">= {goal:g}x: {'met' if ratio >= goal else 'not met'}" if goal else ""
            print(
                f"| {name} | {r['seconds']:.2f} ({r['min']:.2f}-{r['max']:.2f}) | "
                f"{r['rows_per_s'] / 1e6:.2f}M | {ratio:.1f}x | {verdict} |"
            )
            out.append({"reader": name, **r, "vs_pandas": ratio, "goal": goal})
        if args.json:
            args.json.write_text(
                json.dumps(
                    {"rows": rows, "tickers": len(tickers), "writes_s": writes, "readers": out},
                    indent=2,
                )
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
