"""Build the bundled sample of daily OHLCV bars (AAPL, GOOG, IBM, MSFT; 2000-03 to 2013-03).

Source: Quandl WIKI end-of-day prices (public domain), as redistributed in the PyPI package
``bokeh-sampledata`` (``bokeh_sampledata/_data/stocks.csv.gz``).

Usage::

    pip install bokeh-sampledata
    python scripts/build_sample_data.py [--out PATH] [--report PATH]

The script

1. reads the raw CSV and keeps AAPL, GOOG, IBM and MSFT (FB is dropped);
2. checks every row against the rules the loader validates (no nulls, prices > 0,
   volume >= 0, one row per (ticker, date), high >= max(open, close),
   low <= min(open, close)); rows with nulls / non-finite or non-positive prices /
   negative volume / conflicting duplicate dates are dropped (never imputed), exact duplicate
   rows are collapsed to one, and high/low rule violations are repaired conservatively
   (high raised to max(open, close), low lowered to min(open, close)) -- all with a report;
3. split-adjusts with ``Adj Close``: ``factor = Adj Close / Close``; open, high, low and close
   are multiplied by ``factor`` and volume is divided by it (dollar volume is unchanged);
4. writes ``ticker, timestamp, open, high, low, close, volume`` sorted by ticker then
   timestamp as zstd-compressed Parquet, and the report plus provenance as markdown.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.resources
import sys
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "src" / "datamodules" / "data" / "sample_stocks.parquet"
DEFAULT_REPORT = REPO_ROOT / "src" / "datamodules" / "data" / "SAMPLE_DATA.md"

TICKERS = ("AAPL", "GOOG", "IBM", "MSFT")
SOURCE_PACKAGE = "bokeh_sampledata"
SOURCE_DIST = "bokeh-sampledata"
SOURCE_FILE = ("_data", "stocks.csv.gz")

RAW_SCHEMA = {
    "Ticker": pl.String,
    "Date": pl.String,
    "Open": pl.Float64,
    "High": pl.Float64,
    "Low": pl.Float64,
    "Close": pl.Float64,
    "Volume": pl.Float64,
    "Adj Close": pl.Float64,
}
PRICE_COLS = ("Open", "High", "Low", "Close", "Adj Close")
OUT_SCHEMA = pl.Schema(
    {
        "ticker": pl.String,
        "timestamp": pl.Datetime("us"),
        "open": pl.Float64,
        "high": pl.Float64,
        "low": pl.Float64,
        "close": pl.Float64,
        "volume": pl.Float64,
    }
)


@dataclass
class Report:
    """Everything the build found and did, in printable / markdown-able form."""

    source: str = ""
    source_version: str = ""
    source_sha256: str = ""
    raw_rows: int = 0
    raw_rows_by_ticker: dict[str, int] = field(default_factory=dict)
    dropped_tickers: dict[str, int] = field(default_factory=dict)
    # (ticker, issue) -> rows dropped / collapsed
    dropped: dict[tuple[str, str], int] = field(default_factory=dict)
    # (ticker, rule) -> (rows repaired, largest relative change)
    repairs: dict[tuple[str, str], tuple[int, float]] = field(default_factory=dict)
    was_sorted: bool = True
    # filled after writing
    out_path: str = ""
    file_size: int = 0
    summary: pl.DataFrame | None = None
    # ticker -> Adj Close / Close on the last date
    last_factor: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------- source


def locate_source() -> tuple[Path, str]:
    """Path of ``stocks.csv.gz`` inside the installed ``bokeh_sampledata`` package."""
    hint = (
        f"The sample data is built from the PyPI package '{SOURCE_DIST}'. "
        f"Install it with:  pip install {SOURCE_DIST}"
    )
    try:
        root = importlib.resources.files(SOURCE_PACKAGE)
    except ModuleNotFoundError:
        raise SystemExit(
            f"error: Python package '{SOURCE_PACKAGE}' is not installed.\n{hint}"
        ) from None
    resource = root.joinpath(*SOURCE_FILE)
    path = Path(str(resource))
    if not resource.is_file() or not path.is_file():
        raise SystemExit(
            f"error: '{'/'.join(SOURCE_FILE)}' not found in the installed '{SOURCE_PACKAGE}' "
            f"(looked at {path}).\n{hint}"
        )
    try:
        from importlib.metadata import version

        dist_version = version(SOURCE_DIST)
    except Exception:  # pragma: no cover - metadata missing is not fatal
        dist_version = "unknown"
    return path, dist_version


# --------------------------------------------------------------------------- cleaning


def _count_by_ticker(df: pl.DataFrame, mask: pl.Expr) -> dict[str, int]:
    counts = df.filter(mask).group_by("Ticker").len().sort("Ticker")
    return dict(zip(counts["Ticker"].to_list(), counts["len"].to_list(), strict=True))


def _drop(df: pl.DataFrame, mask: pl.Expr, issue: str, report: Report) -> pl.DataFrame:
    for ticker, n in _count_by_ticker(df, mask).items():
        report.dropped[(ticker, issue)] = report.dropped.get((ticker, issue), 0) + n
    return df.filter(~mask)


def clean(raw: pl.DataFrame, report: Report) -> pl.DataFrame:
    """Apply the load-time rules to the raw rows (drop / collapse / repair, never invent)."""
    report.raw_rows = raw.height
    by_ticker = raw.group_by("Ticker").len().sort("Ticker")
    report.raw_rows_by_ticker = dict(zip(by_ticker["Ticker"], by_ticker["len"], strict=True))
    missing = [t for t in TICKERS if t not in report.raw_rows_by_ticker]
    if missing:
        raise SystemExit(f"error: tickers {missing} are not in the source file {report.source}")
    report.dropped_tickers = {
        t: n for t, n in report.raw_rows_by_ticker.items() if t not in TICKERS
    }
    df = raw.filter(pl.col("Ticker").is_in(TICKERS))

    # Dates: unparseable dates become null and are dropped below with the other nulls.
    df = df.with_columns(pl.col("Date").str.to_date("%Y-%m-%d", strict=False))

    # 1. nulls / NaN / inf anywhere -> drop the row.
    numeric = [*PRICE_COLS, "Volume"]
    bad = pl.any_horizontal(pl.col(c).is_null() for c in df.columns) | pl.any_horizontal(
        ~pl.col(c).is_finite() for c in numeric
    )
    df = _drop(df, bad.fill_null(True), "null, non-finite value or unparseable date", report)

    # 2. non-positive prices (incl. Adj Close, which the adjustment divides by) -> drop.
    df = _drop(df, pl.any_horizontal(pl.col(c) <= 0 for c in PRICE_COLS), "price <= 0", report)

    # 3. negative volume -> drop.
    df = _drop(df, pl.col("Volume") < 0, "volume < 0", report)

    # 4. duplicates: identical rows are collapsed to one; conflicting rows for the same
    #    (ticker, date) cannot be arbitrated, so all of them are dropped.
    df = _drop(
        df,
        ~pl.struct(pl.all()).is_first_distinct(),
        "exact duplicate row (collapsed to one)",
        report,
    )
    df = _drop(
        df,
        pl.len().over("Ticker", "Date") > 1,
        "conflicting duplicate (ticker, date)",
        report,
    )

    # 5. order: strictly increasing dates per ticker (after dedup, sorting guarantees it).
    report.was_sorted = df.select(
        (
            pl.col("Date").diff().over("Ticker").fill_null(pl.duration(days=1))
            > pl.duration(days=0)
        ).all()
        & (pl.col("Ticker") >= pl.col("Ticker").shift(1)).fill_null(True).all()
    ).item()
    df = df.sort("Ticker", "Date")

    # 6. high/low rule: repair only the offending rows, by the smallest possible change.
    hi_target = pl.max_horizontal("Open", "Close")
    lo_target = pl.min_horizontal("Open", "Close")
    df = df.with_columns(
        _hi_bad=pl.col("High") < hi_target,
        _lo_bad=pl.col("Low") > lo_target,
        _hi_new=pl.max_horizontal("High", hi_target),
        _lo_new=pl.min_horizontal("Low", lo_target),
    )
    for rule, flag, old, new in (
        ("high >= max(open, close)", "_hi_bad", "High", "_hi_new"),
        ("low <= min(open, close)", "_lo_bad", "Low", "_lo_new"),
    ):
        stats = (
            df.filter(pl.col(flag))
            .group_by("Ticker")
            .agg(
                n=pl.len(),
                max_rel=((pl.col(new) - pl.col(old)).abs() / pl.col(old)).max(),
            )
            .sort("Ticker")
        )
        for ticker, n, max_rel in stats.iter_rows():
            report.repairs[(ticker, rule)] = (n, max_rel)
    df = df.with_columns(High=pl.col("_hi_new"), Low=pl.col("_lo_new")).drop(
        "_hi_bad", "_lo_bad", "_hi_new", "_lo_new"
    )
    return df


# --------------------------------------------------------------------------- adjust + validate


def adjust(df: pl.DataFrame) -> pl.DataFrame:
    """Split/dividend-adjust with Adj Close; volume scaled inversely to keep dollar volume."""
    factor = pl.col("Adj Close") / pl.col("Close")
    return df.select(
        ticker=pl.col("Ticker"),
        timestamp=pl.col("Date").cast(pl.Datetime("us")),
        open=pl.col("Open") * factor,
        high=pl.col("High") * factor,
        low=pl.col("Low") * factor,
        close=pl.col("Close") * factor,
        volume=pl.col("Volume") / factor,
    ).sort("ticker", "timestamp")


def validate(out: pl.DataFrame) -> None:
    """The load-time rules, on the final frame. Raises if anything slipped through."""
    if out.schema != OUT_SCHEMA:
        raise AssertionError(f"schema mismatch: {out.schema} != {OUT_SCHEMA}")
    prices = ["open", "high", "low", "close"]
    checks = out.select(
        no_nulls=~pl.any_horizontal(pl.all().is_null()).any(),
        finite=pl.all_horizontal(pl.col(c).is_finite() for c in [*prices, "volume"]).all(),
        positive=pl.all_horizontal(pl.col(c) > 0 for c in prices).all(),
        volume_nonneg=(pl.col("volume") >= 0).all(),
        increasing=(
            pl.col("timestamp").diff().over("ticker").fill_null(pl.duration(days=1))
            > pl.duration(days=0)
        ).all(),
        high_ok=(pl.col("high") >= pl.max_horizontal("open", "close")).all(),
        low_ok=(pl.col("low") <= pl.min_horizontal("open", "close")).all(),
        sorted_tickers=(pl.col("ticker") >= pl.col("ticker").shift(1)).fill_null(True).all(),
    ).row(0, named=True)
    failed = [k for k, ok in checks.items() if not ok]
    if failed:
        raise AssertionError(f"output fails validation: {failed}")


# --------------------------------------------------------------------------- report


def _fmt_size(n: int) -> str:
    return f"{n:,} bytes ({n / 1024:.1f} KiB)"


def summarize(out: pl.DataFrame) -> pl.DataFrame:
    return (
        out.group_by("ticker")
        .agg(
            rows=pl.len(),
            first=pl.col("timestamp").min().dt.date(),
            last=pl.col("timestamp").max().dt.date(),
        )
        .sort("ticker")
    )


def report_lines(report: Report, markdown: bool) -> list[str]:
    """The data-quality report, as console text or markdown."""
    b = "- " if markdown else "  "
    code = (lambda s: f"`{s}`") if markdown else (lambda s: s)
    lines: list[str] = []
    dropped_t = ", ".join(f"{t} ({n} rows)" for t, n in sorted(report.dropped_tickers.items()))
    lines.append(
        f"{b}Raw file: {report.raw_rows:,} rows; kept tickers {', '.join(TICKERS)}; "
        f"dropped other tickers: {dropped_t or 'none'}."
    )
    lines.append(
        f"{b}Checks on the raw rows of the kept tickers: nulls / non-finite values, prices "
        f"(Open, High, Low, Close, Adj Close) > 0, Volume >= 0, one row per (ticker, date), "
        f"strictly increasing dates, High >= max(Open, Close), Low <= min(Open, Close)."
    )
    if report.dropped:
        lines.append(f"{b}Rows dropped (never imputed):")
        for (ticker, issue), n in sorted(report.dropped.items()):
            lines.append(f"  {b}{ticker}: {n} row(s) -- {issue}")
    else:
        lines.append(
            f"{b}Nulls / non-finite values / unparseable dates, non-positive prices, negative "
            f"volume, duplicate dates: none found -- 0 rows dropped."
        )
    lines.append(
        f"{b}Order: raw rows were "
        + ("already" if report.was_sorted else "NOT")
        + " sorted by ticker and strictly increasing date"
        + ("." if report.was_sorted else "; the output is sorted.")
    )
    rules = ("high >= max(open, close)", "low <= min(open, close)")
    n_repaired = sum(n for n, _ in report.repairs.values())
    lines.append(
        f"{b}High/low rule violations: {n_repaired} row(s) in total, repaired in place "
        f"(high raised to max(open, close), low lowered to min(open, close); nothing else "
        f"touched). Per ticker and rule:"
    )
    table = [
        (ticker, rule, *report.repairs.get((ticker, rule), (0, None)))
        for ticker in TICKERS
        for rule in rules
    ]
    if markdown:
        lines += ["", "| ticker | rule | rows repaired | largest relative change |"]
        lines.append("|---|---|---:|---:|")
        for ticker, rule, n, rel in table:
            rel_s = "-" if rel is None else f"{rel:.3e}"
            lines.append(f"| {ticker} | {code(rule)} | {n} | {rel_s} |")
        lines.append("")
    else:
        for ticker, rule, n, rel in table:
            rel_s = "-" if rel is None else f"{rel:.3e}"
            lines.append(
                f"    {ticker:<5} {rule:<25} repaired {n:>4}  largest relative change {rel_s}"
            )
    lines.append(
        f"{b}The adjustment multiplies open/high/low/close of a row by the same positive "
        f"factor, which preserves their order exactly; the final file is re-validated "
        f"against all rules before writing."
    )
    return lines


def summary_lines(report: Report, markdown: bool) -> list[str]:
    assert report.summary is not None
    total = int(report.summary["rows"].sum())
    if markdown:
        lines = ["| ticker | rows | first date | last date |", "|---|---:|---|---|"]
        for t, n, first, last in report.summary.iter_rows():
            lines.append(f"| {t} | {n:,} | {first} | {last} |")
        lines.append(f"| **total** | **{total:,}** | | |")
        return lines
    lines = [f"  {'ticker':<6} {'rows':>6}  first       last"]
    for t, n, first, last in report.summary.iter_rows():
        lines.append(f"  {t:<6} {n:>6}  {first}  {last}")
    lines.append(f"  {'total':<6} {total:>6}")
    return lines


def write_markdown(report: Report, path: Path) -> None:
    assert report.summary is not None
    first = report.summary["first"].min()
    last = report.summary["last"].max()
    factors = ", ".join(f"{f:.3f} for {t}" for t, f in report.last_factor.items())
    schema = ", ".join(f"`{name}` ({dtype})" for name, dtype in OUT_SCHEMA.items())
    text = [
        "# Bundled sample data: `sample_stocks.parquet`",
        "",
        "## Provenance",
        "",
        f"Daily OHLCV bars of AAPL, GOOG, IBM and MSFT from {first} to {last} (GOOG starts at "
        f"its IPO). Source: the Quandl WIKI end-of-day prices, which are public domain, as "
        f"redistributed in the PyPI package `{SOURCE_DIST}` {report.source_version} as "
        f"`{'/'.join(SOURCE_FILE)}` (sha256 `{report.source_sha256}`; columns Ticker, Date, "
        f"Open, High, Low, Close, Volume, Adj Close). The FB rows in that file are dropped.",
        "",
        "Adjustment: with `factor = Adj Close / Close` per row, open, high, low and close are "
        "multiplied by `factor` and volume is divided by it, so dollar volume (price x volume) "
        "is unchanged. Prices and volume are float64. Note that the vendor's Adj Close "
        "adjusts for dividends as well as splits, and to the vendor's own (later) reference "
        "date, which includes splits after 2013 (AAPL 7:1 and GOOG 2:1 in 2014): on the last "
        f"date the factor is {factors}. Prices are therefore not the quoted prices of the day, and volume is in "
        "adjusted (not traded) shares; returns and dollar volume are consistent across splits.",
        "",
        f"Schema: {schema}; `timestamp` is naive, the trading date at 00:00. Rows are sorted "
        f"by ticker, then timestamp. Written by polars with zstd compression: "
        f"{_fmt_size(report.file_size)}.",
        "",
        "Rebuild (deterministic, from the installed package):",
        "",
        "```bash",
        f"pip install {SOURCE_DIST} && python scripts/build_sample_data.py",
        "```",
        "",
        "## Contents",
        "",
        *summary_lines(report, markdown=True),
        "",
        "## Data-quality report",
        "",
        *report_lines(report, markdown=True),
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(text))


# --------------------------------------------------------------------------- main


def build(out_path: Path, report_path: Path) -> Report:
    src, dist_version = locate_source()
    report = Report(source=str(src), source_version=dist_version)
    report.source_sha256 = hashlib.sha256(src.read_bytes()).hexdigest()

    raw = pl.read_csv(src, schema=RAW_SCHEMA)
    cleaned = clean(raw, report)
    out = adjust(cleaned)
    last = cleaned.group_by("Ticker").agg((pl.col("Adj Close") / pl.col("Close")).last())
    report.last_factor = dict(sorted(last.iter_rows()))
    validate(out)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    out.write_parquet(out_path, compression="zstd")
    back = pl.read_parquet(out_path)
    if not back.equals(out) or back.schema != OUT_SCHEMA:
        raise AssertionError("round-trip through Parquet changed the data")

    report.out_path = str(out_path)
    report.file_size = out_path.stat().st_size
    report.summary = summarize(out)

    print(f"source : {src} ({SOURCE_DIST} {dist_version}, sha256 {report.source_sha256[:16]}...)")
    print("data-quality report:")
    print("\n".join(report_lines(report, markdown=False)))
    print(f"wrote  : {out_path}  {_fmt_size(report.file_size)}")
    print(f"schema : {dict(out.schema)}")
    print("\n".join(summary_lines(report, markdown=False)))

    write_markdown(report, report_path)
    print(f"report : {report_path}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output Parquet (default: {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--report",
        type=Path,
        default=DEFAULT_REPORT,
        help=f"markdown report with provenance (default: {DEFAULT_REPORT})",
    )
    args = parser.parse_args(argv)
    build(args.out, args.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
