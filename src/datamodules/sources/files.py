"""The file source: your own CSV and Parquet files, one loader for both.

``files`` maps ticker -> path, or is one path (or a list of paths) whose ``ticker_column``
names the ticker of each row. The format of each file comes from its extension (``.csv``,
``.csv.gz``, ``.parquet``, ``.pq``) unless ``format`` says csv or parquet.
"""

from __future__ import annotations

import csv
import gzip
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import polars as pl

from datamodules.cache import file_fingerprint
from datamodules.columns import BAR_COLUMNS, LOAD_COLUMNS, column_mapping
from datamodules.errors import ConfigError, DataError
from datamodules.sources.base import BarSource

FORMATS = ("auto", "csv", "parquet")
EXTENSIONS = {".csv": "csv", ".csv.gz": "csv", ".parquet": "parquet", ".pq": "parquet"}


@dataclass(frozen=True, kw_only=True)
class FileSource(BarSource):
    """Bars read from CSV or Parquet files.

    ``files``: ticker -> path, or one path / a list of paths with ``ticker_column``;
    ``format``: auto (from each file's extension), csv or parquet; ``columns``: our name
    (timestamp, open, high, low, close, volume) -> the file's column (unset or None = the
    same name, matched case-insensitively; other columns are ignored); ``timestamp_format``:
    a strptime format such as ``%d/%m/%Y %H:%M`` (None = ISO 8601); ``timezone``: the zone of
    naive timestamps and the zone sessions (calendar days) are counted in; aware timestamps
    are converted to it (None = UTC). Prices are in the file's units, volume in shares.
    Relative paths are taken from the folder the command runs in.
    """

    files: Mapping[str, str] | str | list[str] | None = None
    format: Literal["auto", "csv", "parquet"] = "auto"
    columns: Mapping[str, str | None] = field(default_factory=dict)
    ticker_column: str | None = None
    timestamp_format: str | None = None
    timezone: str | None = None

    name: ClassVar[str] = "files"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.format not in FORMATS:
            raise ConfigError(
                f"data.format is {self.format!r}; choose auto (from each file's extension), "
                "csv or parquet."
            )
        object.__setattr__(self, "files", self._checked_files())
        object.__setattr__(
            self, "columns", column_mapping(self.columns, "the file", "{timestamp: Date}")
        )
        for key in ("ticker_column", "timestamp_format", "timezone"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"data.{key} is {value!r}; give a name, or null.")
        if self.timestamp_format is not None and "%" not in self.timestamp_format:
            raise ConfigError(
                f"data.timestamp_format is {self.timestamp_format!r}; it is a strptime format "
                "such as '%d/%m/%Y %H:%M' (or null for ISO 8601)."
            )
        if self.timezone is not None:
            try:
                zoneinfo.ZoneInfo(self.timezone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ConfigError(
                    f"data.timezone is {self.timezone!r}, which is not a time zone name; use "
                    "an IANA name such as America/New_York, Europe/London or UTC."
                ) from None
        for key, path in self._paths():
            if not Path(path).expanduser().is_file():
                raise _missing(key, path)
            file_format(path, self.format, key)

    def load(self) -> pl.DataFrame:
        if isinstance(self.files, Mapping):
            return pl.concat([self._read(self.files[t], t) for t in self.tickers])
        paths = [self.files] if isinstance(self.files, str) else list(self.files)
        frame = pl.concat([self._read(p, None) for p in paths])
        present = set(frame["ticker"].unique().to_list())
        unknown = [t for t in self.tickers if t not in present]
        if unknown:
            raise DataError(
                f"env.tickers asks for {', '.join(unknown)}, but column '{self.ticker_column}' "
                f"of {', '.join(map(str, paths))} only has {', '.join(sorted(present))}."
            )
        return frame.filter(pl.col("ticker").is_in(list(self.tickers)))

    def fingerprint(self) -> dict:
        if isinstance(self.files, Mapping):  # which file is which ticker is part of the key
            prints: dict | list = {t: _fingerprint(p) for t, p in self.files.items()}
        else:
            paths = [self.files] if isinstance(self.files, str) else list(self.files)
            prints = [_fingerprint(p) for p in paths]
        return {
            "files": prints,
            "format": self.format,
            "columns": dict(self.columns),
            "ticker_column": self.ticker_column,
            "timestamp_format": self.timestamp_format,
            "timezone": self.timezone,
        }

    def _checked_files(self) -> dict[str, str] | str | tuple[str, ...]:
        files = self.files
        label = "files" if self.format == "auto" else self.format
        if files is None or (not isinstance(files, (str, Path)) and len(files) == 0):
            raise ConfigError(
                f"data={label} needs data.files (ticker -> path, or one path). For example "
                "data.files={MSFT:msft.csv}."
            )
        if isinstance(files, Mapping):
            out = {}
            for ticker, path in files.items():
                if not isinstance(path, (str, Path)) or not str(path).strip():
                    raise ConfigError(
                        f"data.files.{ticker} is {path!r}; give the path of {ticker}'s file."
                    )
                out[str(ticker)] = str(path)
            unknown = [t for t in self.tickers if t not in out]
            if unknown:
                raise DataError(
                    f"env.tickers asks for {', '.join(unknown)}, but data.files only maps "
                    f"{', '.join(out) or 'nothing'}. Add data.files.{unknown[0]}=PATH or change "
                    "env.tickers."
                )
            return out
        if isinstance(files, (str, Path)):
            paths: str | tuple[str, ...] = str(files)
        elif all(isinstance(p, (str, Path)) for p in files):
            paths = tuple(str(p) for p in files)
        else:
            raise ConfigError(
                f"data.files is {files!r}; give ticker -> path, one path, or a list of paths."
            )
        if not self.ticker_column:
            raise DataError(
                "data.files is a path, so the tickers must come from a column: set "
                "data.ticker_column to the name of that column, or give data.files as a "
                "mapping ticker -> path."
            )
        return paths

    def _paths(self) -> list[tuple[str, str]]:
        """(config key, path) of every file."""
        if isinstance(self.files, Mapping):
            return [(f"data.files.{t}", p) for t, p in self.files.items()]
        paths = [self.files] if isinstance(self.files, str) else list(self.files)
        return [("data.files", p) for p in paths]

    def _read(self, path: str, ticker: str | None) -> pl.DataFrame:
        return read_bar_file(
            path,
            ticker,
            self.format,
            self.columns,
            self.ticker_column,
            self.timestamp_format,
            self.timezone,
        )


def file_format(path: str, fmt: str, key: str) -> str:
    """csv or parquet: ``fmt`` when it names one, else from the file's extension."""
    if fmt != "auto":
        return fmt
    name = Path(path).name.lower()
    for ending, found in sorted(EXTENSIONS.items(), key=lambda kv: -len(kv[0])):
        if name.endswith(ending):
            return found
    raise ConfigError(
        f"{key}: cannot tell the format of '{path}' from its extension (known: "
        f"{', '.join(EXTENSIONS)}). Set data.format=csv or data.format=parquet."
    )


def _fingerprint(path: str) -> dict:
    if not Path(path).expanduser().is_file():
        return {"path": path, "missing": True}
    return file_fingerprint(str(Path(path).expanduser()))


def _missing(key: str, path_str: str) -> DataError:
    path = Path(path_str).expanduser()
    return DataError(
        f"{key}: file '{path_str}' does not exist (looked at {path.resolve()}). Fix the "
        "path; relative paths are taken from the folder you ran the command in."
    )


def read_bar_file(
    path_str: str,
    ticker: str | None,
    fmt: str,
    columns: Mapping[str, str | None],
    ticker_column: str | None,
    timestamp_format: str | None,
    timezone: str | None,
    key: str | None = None,
) -> pl.DataFrame:
    """One CSV or Parquet file as raw bars in :data:`LOAD_COLUMNS`: the ``ticker`` of every row,
    or each row's from ``ticker_column``; ``columns`` maps our names to the file's; timestamps
    parsed with ``timestamp_format`` (None = ISO 8601) and converted from aware to ``timezone``.
    A DataError names the file, row and column of anything unreadable (``key``: the config key
    or option that named the file)."""
    path = Path(path_str).expanduser()
    key = key or (f"data.files.{ticker}" if ticker else "data.files")
    if not path.is_file():
        raise _missing(key, path_str)
    fmt = file_format(path_str, fmt, key)
    try:
        # CSV: every column as a string, cast below with errors that name the line
        raw = pl.read_csv(path, infer_schema_length=0) if fmt == "csv" else pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as err:
        problem = csv_problem(path) if fmt == "csv" else None
        if problem is not None:
            raise DataError(
                f"{path}: cannot be read as CSV: {problem}. Fix that line (a missing or extra "
                "comma, an unclosed quote) and run again."
            ) from None
        raise DataError(f"{path}: cannot be read as {fmt}: {err}".splitlines()[0]) from None
    if raw.is_empty():
        raise DataError(f"{path}: the file has no rows.")
    selected = {}
    by_lower = {c.lower(): c for c in raw.columns}
    for ours in BAR_COLUMNS:
        theirs = columns.get(ours) or ours
        found = theirs if theirs in raw.columns else by_lower.get(str(theirs).lower())
        if found is None:
            raise DataError(
                f"{path}: no column '{theirs}' for {ours} (data.columns.{ours}); the file's "
                f"columns are {', '.join(raw.columns)}. Set data.columns.{ours}=NAME."
            )
        selected[ours] = found
    first = 2 if fmt == "csv" else 1  # a CSV's editor line numbers: the header is line 1
    frame = raw.select(
        pl.int_range(first, raw.height + first).alias("_row"),
        *(pl.col(theirs).alias(ours) for ours, theirs in selected.items()),
    )
    if ticker is None:
        if ticker_column not in raw.columns:
            raise DataError(
                f"{path}: no column '{ticker_column}' (data.ticker_column); the file's columns "
                f"are {', '.join(raw.columns)}."
            )
        frame = frame.with_columns(raw[ticker_column].cast(pl.String).alias("ticker"))
    else:
        frame = frame.with_columns(pl.lit(ticker).alias("ticker"))
    frame = frame.with_columns(
        _parse_timestamps(frame, path, timestamp_format, timezone),
        pl.lit(str(path)).alias("_file"),
    )
    for name in ("open", "high", "low", "close", "volume"):
        frame = frame.with_columns(_to_float(frame, name, path))
    return frame.select(*LOAD_COLUMNS)


def csv_problem(path: Path) -> str | None:
    """Where a CSV file stops being CSV, as ``line N: what`` (the line an editor shows; a
    record spanning lines is named by its first), or None if Python's csv reader finds no
    problem. Read only after polars failed on the file."""
    opener = gzip.open if str(path).lower().endswith(".gz") else open
    start = 1
    try:
        with opener(path, "rt", newline="", encoding="utf-8", errors="replace") as fh:
            reader = csv.reader(fh, strict=True)
            header = next(reader, None)
            if header is None:
                return None
            start = reader.line_num + 1
            for record in reader:
                if record and len(record) != len(header):
                    return (
                        f"line {start} has {len(record)} fields where the header (line 1) has "
                        f"{len(header)}"
                    )
                start = reader.line_num + 1
    except csv.Error as err:
        return f"line {start}: {err}"
    except (OSError, EOFError):
        return None
    return None


def _to_float(frame: pl.DataFrame, name: str, path: Path) -> pl.Series:
    col = frame[name]
    if col.dtype.is_numeric():
        return col.cast(pl.Float64)
    parsed = col.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
    bad = parsed.is_null() & col.is_not_null() & (col.cast(pl.String).str.strip_chars() != "")
    if bad.any():
        from datamodules.schema import position  # pandera: only on the error path

        i = int(bad.arg_true()[0])
        raise DataError(
            f"{path}: column '{name}', {position(path, frame['_row'][i])}: value {col[i]!r} is not a "
            "number. Fix the value or map another column with data.columns."
        )
    return parsed


def _parse_timestamps(
    frame: pl.DataFrame, path: Path, timestamp_format: str | None, timezone: str | None
) -> pl.Series:
    col = frame["timestamp"]
    if col.dtype == pl.String:
        text = col.str.strip_chars()
        if timestamp_format:
            parsed = text.str.strptime(pl.Datetime("us"), timestamp_format, strict=False)
        else:
            try:
                parsed = text.str.to_datetime(time_unit="us", strict=False)
            except pl.exceptions.PolarsError:
                parsed = pl.Series([None] * len(text), dtype=pl.Datetime("us"))
        bad = parsed.is_null() & text.is_not_null()
        if bad.any():
            from datamodules.schema import position  # pandera: only on the error path

            i = int(bad.arg_true()[0])
            how = (
                f"the format data.timestamp_format='{timestamp_format}'"
                if timestamp_format
                else "ISO 8601 (set data.timestamp_format to a strptime format such as "
                "'%d/%m/%Y %H:%M')"
            )
            raise DataError(
                f"{path}: column 'timestamp', {position(path, frame['_row'][i])}: {text[i]!r} does not "
                f"match {how}."
            )
        col = parsed
    elif col.dtype == pl.Date:
        col = col.cast(pl.Datetime("us"))
    elif not isinstance(col.dtype, pl.Datetime):
        raise DataError(
            f"{path}: column 'timestamp' has type {col.dtype}; it must hold dates or times."
        )
    tz = getattr(col.dtype, "time_zone", None)
    if tz is not None:
        col = col.dt.convert_time_zone(timezone or "UTC").dt.replace_time_zone(None)
    return col.cast(pl.Datetime("us")).alias("timestamp")
