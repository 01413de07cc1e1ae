"""``python -m experiments.ingest SOURCE --to URI [--table bars] [--if-exists fail|append|replace]``

SOURCE is ``sample`` (the shipped daily prices), ``synthetic`` (the generated market, NOT real
data) or the path of a CSV or Parquet file. The bars are validated like a run's data, then
written in one transaction to ``--table`` of the database ``--to`` names (``duckdb:///PATH``
or ``postgresql://USER@HOST:PORT/DB``), a table with proper types and a primary key on
(ticker, timestamp). An existing table is never overwritten unless ``--if-exists replace``
says so; ``--if-exists append`` adds the bars (a bar already there refuses the whole write).
Bad input is one paragraph and exit status 2; the password of a URI is never printed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from datamodules.database.tables import IF_EXISTS, write_bars
from datamodules.database.uri import parse_uri
from datamodules.errors import UserInputError
from datamodules.timerange import TimeRange
from experiments.ingest import inputs


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.ingest",
        description="Load bars (the shipped sample, a synthetic market, or a CSV / Parquet "
        "file) into a DuckDB file or a PostgreSQL table with a primary key on (ticker, "
        "timestamp). An existing table is refused unless --if-exists append or replace.",
    )
    p.add_argument(
        "source", help="sample | synthetic | PATH of a .csv, .csv.gz, .parquet or .pq file"
    )
    p.add_argument(
        "--to",
        required=True,
        metavar="URI",
        help="duckdb:///outputs/market.duckdb (a file, created if absent) or "
        "postgresql://USER@HOST:PORT/DB (password from the URI, PGPASSWORD or ~/.pgpass)",
    )
    p.add_argument("--table", default="bars", help="table (or schema.table) to write; default bars")
    p.add_argument(
        "--if-exists",
        choices=IF_EXISTS,
        default="fail",
        help="when the table exists: fail (default; nothing is touched), append the bars, or "
        "replace the table",
    )
    p.add_argument(
        "--tickers", help="comma-separated tickers to load (default: all the source has)"
    )
    p.add_argument("--start", help="first day (YYYY-MM-DD) or time to load, included")
    p.add_argument("--end", help="last day or time to load, included")
    files = p.add_argument_group("a file of your own")
    files.add_argument("--ticker", help="the ticker of every row (a file of one ticker)")
    files.add_argument("--ticker-column", help="the column naming each row's ticker")
    files.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="OURS=THEIRS",
        help="map our column (timestamp, open, high, low, close, volume) to the file's, e.g. "
        "--column timestamp=Date (repeatable; unmapped names match case-insensitively)",
    )
    files.add_argument("--format", choices=("auto", "csv", "parquet"), default="auto")
    files.add_argument(
        "--timestamp-format", help="strptime format, e.g. %%d/%%m/%%Y (default ISO 8601)"
    )
    files.add_argument("--timezone", help="IANA zone of the data; aware times are converted to it")
    synth = p.add_argument_group("synthetic")
    synth.add_argument("--bar-size", default="15min", help="bar size of the synthetic market")
    synth.add_argument("--sessions", type=int, default=600, help="trading sessions (days)")
    synth.add_argument("--seed", type=int, default=0, help="generator seed")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ingest; 0 on success, 2 with one paragraph on bad input."""
    args = parser().parse_args(argv)
    try:
        print(ingest(args))
    except UserInputError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 2
    return 0


def ingest(args: argparse.Namespace) -> str:
    """Read, validate and write the bars; the line that reports what was written."""
    uri = parse_uri(args.to, "--to")
    tickers = [t.strip() for t in args.tickers.split(",") if t.strip()] if args.tickers else None
    time_range = TimeRange.from_config(args.start, args.end)
    columns = _columns(args.column)
    if args.source in ("sample", "synthetic"):
        given = [
            flag
            for flag, value in (
                ("--ticker", args.ticker),
                ("--ticker-column", args.ticker_column),
                ("--column", columns),
                ("--timestamp-format", args.timestamp_format),
                ("--timezone", args.timezone),
                ("--format", args.format != "auto"),
            )
            if value
        ]
        if given:
            raise UserInputError(
                f"{', '.join(given)} describe a file of your own; {args.source} has its own "
                "columns. Drop them, or give the path of a CSV or Parquet file as SOURCE."
            )
    if args.source == "sample":
        frame, where, bar_size = inputs.sample_bars(tickers), "the sample", "1d"
    elif args.source == "synthetic":
        frame = inputs.synthetic_bars(tickers, args.bar_size, args.sessions, args.seed)
        where, bar_size = "the synthetic market", args.bar_size
    else:
        frame = inputs.file_bars(
            args.source,
            ticker=args.ticker,
            ticker_column=args.ticker_column,
            tickers=tickers,
            fmt=args.format,
            columns=columns,
            timestamp_format=args.timestamp_format,
            timezone=args.timezone,
        )
        where, bar_size = inputs.describe_path(args.source), None
    frame = inputs.checked(frame, time_range, where)
    done = write_bars(uri, frame.drop("_file", "_row"), args.table, args.if_exists)
    counts = ", ".join(f"{t} {n}" for t, n in done.per_ticker.items())
    first = next(iter(done.per_ticker))
    table = "" if done.table == "bars" else f" data.table={done.table}"
    bars = f" data.bar_size={bar_size}" if bar_size and bar_size != "1d" else ""
    secret = " (the password from PGPASSWORD or ~/.pgpass)" if uri.has_password else ""
    return (
        f"{done.action.capitalize()} table {done.table} of {uri.masked()}: wrote {done.rows} "
        f"bars ({counts}; {done.first} to {done.last}); it holds {done.table_rows} rows.\n"
        "Train on them: python -m experiments +model=NAME data=sql "
        f"data.uri={uri.without_password()}{table}{bars} env.tickers=[{first}]{secret}"
    )


def _columns(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        ours, sep, theirs = pair.partition("=")
        if not sep or not ours.strip() or not theirs.strip():
            raise UserInputError(
                f"--column {pair!r}: give OURS=THEIRS, e.g. --column timestamp=Date."
            )
        out[ours.strip()] = theirs.strip()
    return out
