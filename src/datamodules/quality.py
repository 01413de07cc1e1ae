"""The data-quality report of every source's raw bars, per ticker, with thresholds that warn
or fail (``data.quality.*``).

Five checks, each measured on a ticker's own validated bars (before the tickers are aligned
or resampled) and counted in bars:

- ``missing_bars``: holes inside a session (a calendar day), in bars of the data's own step;
  intraday data only (daily bars have one bar a session: missing days are session gaps).
  Share = missing / expected bars.
- ``stale_prices``: stretches of at least ``stale_bars`` bars in a row with an unchanged
  close. Share = bars inside such stretches / bars.
- ``zero_volume``: bars with a volume of 0. Share = those bars / bars.
- ``return_outliers``: 1-bar log returns (close to close) further than ``outlier_sigmas``
  robust standard deviations (1.4826 x the median absolute deviation) from the median.
  Share = those returns / returns.
- ``session_gaps``: consecutive sessions more than ``session_gap_days`` calendar days apart.
  The value compared with the thresholds is the number of gaps.

:func:`measure` gives the numbers (cached with the features); :func:`assess` applies the
thresholds: a value above ``warn.<check>`` warns, above ``fail.<check>`` fails (the run stops
before training with :class:`QualityError`, one paragraph). Light: polars and numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Annotated

import numpy as np
import polars as pl

from datamodules.config import dataclass_from
from datamodules.errors import ConfigError, DataError

CHECKS = ("missing_bars", "stale_prices", "zero_volume", "return_outliers", "session_gaps")
# What each check's value is, for messages: a share of bars (or returns), or a count of gaps.
UNITS = {
    "missing_bars": "share of expected bars",
    "stale_prices": "share of bars",
    "zero_volume": "share of bars",
    "return_outliers": "share of returns",
    "session_gaps": "gaps",
}
LABELS = {
    "missing_bars": "missing bars",
    "stale_prices": "stale bars",
    "zero_volume": "zero-volume bars",
    "return_outliers": "return outliers",
    "session_gaps": "session gaps",
}
EXAMPLES = 5  # examples kept per check and ticker in the report
STATUS_ORDER = ("ok", "warn", "fail")


@dataclass(frozen=True)
class QualityThresholds:
    """Per check, the value above which it warns (or fails); None = never.

    ``missing_bars``, ``stale_prices``, ``zero_volume`` and ``return_outliers`` are shares in
    [0, 1] (of expected bars, bars, bars and returns); ``session_gaps`` is a number of gaps.
    """

    missing_bars: float | None = None
    stale_prices: float | None = None
    zero_volume: float | None = None
    return_outliers: float | None = None
    session_gaps: float | None = None

    def check(self, key: str) -> None:
        """A ConfigError naming ``key.<check>`` for a value out of range (``key`` is
        ``data.quality.warn`` or ``data.quality.fail``)."""
        for name in CHECKS:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(
                    f"{key}.{name} is {value!r}; it must be a number >= 0 ({UNITS[name]}), or "
                    "null to never flag it."
                )
            if name != "session_gaps" and value > 1:
                raise ConfigError(
                    f"{key}.{name} is {value!r}; it is a {UNITS[name]}, in [0, 1] (0.01 = 1%), "
                    "or null to never flag it."
                )
            object.__setattr__(self, name, float(value))


# The defaults (conf/data/quality/training.yaml): anything missing, stale, without volume or a
# gap warns, as do returns beyond the sigmas on more than 0.5% of bars; nothing fails.
TRAINING_WARN = QualityThresholds(
    missing_bars=0.0, stale_prices=0.0, zero_volume=0.0, return_outliers=0.005, session_gaps=0
)


@dataclass(frozen=True)
class QualityConfig:
    """How the raw bars are checked (``data.quality.*``).

    ``enabled``: false skips the report; ``stale_bars``: bars in a row with an unchanged
    close that make a stale stretch (>= 2); ``outlier_sigmas``: robust standard deviations
    beyond which a 1-bar return is an outlier (> 0); ``session_gap_days``: calendar days
    between two sessions beyond which a gap is flagged (>= 1; 4 lets a weekend plus a holiday
    pass); ``warn`` and ``fail``: :class:`QualityThresholds`.
    """

    enabled: bool = True
    stale_bars: Annotated[int, ">= 2"] = 10
    outlier_sigmas: float = 10.0
    session_gap_days: Annotated[int, ">= 1"] = 4
    warn: QualityThresholds = field(default_factory=lambda: TRAINING_WARN)
    fail: QualityThresholds = field(default_factory=QualityThresholds)

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ConfigError(f"data.quality.enabled is {self.enabled!r}; use true or false.")
        _whole(self.stale_bars, "data.quality.stale_bars", 2, "bars in a row with one close")
        _whole(
            self.session_gap_days,
            "data.quality.session_gap_days",
            1,
            "calendar days between two sessions",
        )
        k = self.outlier_sigmas
        if isinstance(k, bool) or not isinstance(k, (int, float)) or not k > 0:
            raise ConfigError(
                f"data.quality.outlier_sigmas is {k!r}; it must be a number of standard "
                "deviations > 0 (e.g. 10)."
            )
        object.__setattr__(self, "outlier_sigmas", float(k))
        for name in ("warn", "fail"):
            built = dataclass_from(QualityThresholds, getattr(self, name), f"data.quality.{name}")
            built.check(f"data.quality.{name}")
            object.__setattr__(self, name, built)

    def measuring(self) -> dict:
        """The settings that shape the measured numbers (part of the feature cache key)."""
        return {
            "stale_bars": self.stale_bars,
            "outlier_sigmas": self.outlier_sigmas,
            "session_gap_days": self.session_gap_days,
        }


class QualityError(DataError):
    """A check above its ``data.quality.fail`` threshold; ``report`` is the whole report."""

    def __init__(self, message: str, report: dict) -> None:
        super().__init__(message)
        self.report = report


# ------------------------------------------------------------------------------ measuring
def measure(frame: pl.DataFrame, cfg: QualityConfig) -> dict:
    """Per ticker of ``frame`` (validated long bars: ticker, timestamp, OHLCV): its bar count,
    range, own bar length and each check's count, share and first examples (JSON-able)."""
    out = {}
    for (ticker,), bars in frame.sort("ticker", "timestamp").group_by(
        "ticker", maintain_order=True
    ):
        out[str(ticker)] = _measure_one(bars, cfg)
    return {"settings": cfg.measuring(), "tickers": out}


def _measure_one(bars: pl.DataFrame, cfg: QualityConfig) -> dict:
    stamps = bars["timestamp"].to_numpy().astype("datetime64[us]")
    close = bars["close"].to_numpy().astype(np.float64)
    volume = bars["volume"].to_numpy().astype(np.float64)
    n = len(stamps)
    days = stamps.astype("datetime64[D]")
    step = _step_minutes(stamps, days)
    checks = {
        "missing_bars": _missing(stamps, days, step),
        "stale_prices": _stale(stamps, close, cfg.stale_bars),
        "zero_volume": _zero_volume(stamps, volume),
        "return_outliers": _outliers(stamps, close, cfg.outlier_sigmas),
        "session_gaps": _gaps(days, cfg.session_gap_days),
    }
    return {
        "bars": n,
        "sessions": int(len(np.unique(days))),
        "first": _iso(stamps[0]),
        "last": _iso(stamps[-1]),
        "bar_minutes": step,
        "checks": checks,
    }


def _step_minutes(stamps: np.ndarray, days: np.ndarray) -> float:
    """The data's own bar length: the most common step between bars of one day (1440 when
    every session has one bar)."""
    same_day = days[1:] == days[:-1]
    steps = (np.diff(stamps)[same_day] / np.timedelta64(1, "m")).astype(np.float64)
    steps = steps[steps > 0]
    if steps.size == 0:
        return 1440.0
    values, counts = np.unique(steps, return_counts=True)
    return float(values[counts == counts.max()].min())


def _missing(stamps: np.ndarray, days: np.ndarray, step: float) -> dict:
    if step >= 1440:
        return {"count": 0, "share": 0.0, "examples": [], "note": "daily bars: see session_gaps"}
    same_day = days[1:] == days[:-1]
    gaps = np.diff(stamps) / np.timedelta64(1, "m")
    holes = np.where(same_day, np.floor(gaps / step + 1e-9) - 1, 0).clip(min=0).astype(np.int64)
    missing = int(holes.sum())
    where = np.flatnonzero(holes)
    biggest = where[np.argsort(-holes[where], kind="stable")][:EXAMPLES]
    examples = [
        {"after": _iso(stamps[i]), "before": _iso(stamps[i + 1]), "bars": int(holes[i])}
        for i in sorted(biggest)
    ]
    expected = len(stamps) + missing
    return {"count": missing, "share": missing / expected, "examples": examples}


def _stale(stamps: np.ndarray, close: np.ndarray, k: int) -> dict:
    change = np.ones(len(close), dtype=bool)
    change[1:] = close[1:] != close[:-1]
    starts = np.flatnonzero(change)
    lengths = np.diff(np.append(starts, len(close)))
    long = lengths >= k
    examples = [
        {
            "from": _iso(stamps[s]),
            "to": _iso(stamps[s + n - 1]),
            "bars": int(n),
            "close": float(close[s]),
        }
        for s, n in zip(starts[long][:EXAMPLES], lengths[long][:EXAMPLES], strict=True)
    ]
    count = int(lengths[long].sum())
    return {
        "count": count,
        "stretches": int(long.sum()),
        "share": count / len(close),
        "examples": examples,
    }


def _zero_volume(stamps: np.ndarray, volume: np.ndarray) -> dict:
    zero = np.flatnonzero(volume == 0)
    return {
        "count": int(zero.size),
        "share": zero.size / len(volume),
        "examples": [_iso(stamps[i]) for i in zero[:EXAMPLES]],
    }


def _outliers(stamps: np.ndarray, close: np.ndarray, k: float) -> dict:
    if len(close) < 3:
        return {"count": 0, "share": 0.0, "sigma": None, "examples": []}
    returns = np.diff(np.log(close))
    centre = float(np.median(returns))
    sigma = 1.4826 * float(np.median(np.abs(returns - centre)))
    if not sigma > 0:  # more than half the returns are equal: fall back to the plain std
        sigma = float(np.std(returns))
    if not sigma > 0:
        return {"count": 0, "share": 0.0, "sigma": 0.0, "examples": []}
    z = (returns - centre) / sigma
    flagged = np.flatnonzero(np.abs(z) > k)
    worst = flagged[np.argsort(-np.abs(z[flagged]), kind="stable")][:EXAMPLES]
    examples = [
        {
            "timestamp": _iso(stamps[i + 1]),
            "return": float(returns[i]),
            "sigmas": round(float(z[i]), 2),
        }
        for i in sorted(worst)
    ]
    return {
        "count": int(flagged.size),
        "share": flagged.size / len(returns),
        "sigma": sigma,
        "examples": examples,
    }


def _gaps(days: np.ndarray, limit: int) -> dict:
    sessions = np.unique(days)
    apart = np.diff(sessions) / np.timedelta64(1, "D")
    where = np.flatnonzero(apart > limit)
    examples = [
        {"after": str(sessions[i]), "before": str(sessions[i + 1]), "days": int(apart[i])}
        for i in where[:EXAMPLES]
    ]
    return {"count": int(where.size), "examples": examples}


# ------------------------------------------------------------------------------ assessing
def assess(measured: dict, cfg: QualityConfig, source: str) -> dict:
    """The report: ``measured`` with each check's value, status and thresholds, each ticker's
    and the overall status (ok < warn < fail)."""
    tickers = {}
    for ticker, stats in measured["tickers"].items():
        checks = {}
        for name in CHECKS:
            check = dict(stats["checks"][name])
            value = check["count"] if name == "session_gaps" else check["share"]
            warn, fail = getattr(cfg.warn, name), getattr(cfg.fail, name)
            status = "ok"
            if fail is not None and value > fail:
                status = "fail"
            elif warn is not None and value > warn:
                status = "warn"
            checks[name] = {**check, "value": value, "warn": warn, "fail": fail, "status": status}
        tickers[ticker] = {
            **{k: v for k, v in stats.items() if k != "checks"},
            "status": _worst(c["status"] for c in checks.values()),
            "checks": checks,
        }
    return {
        "status": _worst(t["status"] for t in tickers.values()),
        "source": source,
        "settings": {**measured["settings"], "warn": asdict(cfg.warn), "fail": asdict(cfg.fail)},
        "tickers": tickers,
    }


def summary_line(report: dict) -> str:
    """One line: the overall status, then per ticker what is flagged (or ok)."""
    parts = []
    for ticker, stats in report["tickers"].items():
        flagged = [
            f"{check['count']} {LABELS[name]} ({_share(name, check)}{check['status']} above "
            f"{_threshold(name, check[check['status']])})"
            for name, check in stats["checks"].items()
            if check["status"] != "ok"
        ]
        parts.append(f"{ticker} " + (", ".join(flagged) if flagged else "ok"))
    return f"data quality {report['status']}: " + "; ".join(parts) + " (data_quality.json)"


def failure(report: dict) -> QualityError | None:
    """A :class:`QualityError` naming every check above its fail threshold, or None."""
    failed = [
        (ticker, name, check)
        for ticker, stats in report["tickers"].items()
        for name, check in stats["checks"].items()
        if check["status"] == "fail"
    ]
    if not failed:
        return None
    what = "; ".join(
        f"{ticker} has {check['count']} {LABELS[name]} ({_share(name, check)}"
        f"{_example(name, check)}), above data.quality.fail.{name}="
        f"{_threshold(name, check['fail'])}"
        for ticker, name, check in failed
    )
    return QualityError(
        f"Market data failed the quality thresholds before training: {what}. Fix the data, or "
        "raise the thresholds (data.quality.fail.*; null = never fail) if it is fit for this "
        "use; the whole report is in data_quality.json.",
        report,
    )


def summary_values(report: dict) -> dict[str, float | str]:
    """Flat numbers for a logger's summary: ``data_quality/<ticker>/<check>`` values, and the
    status overall and per ticker."""
    values: dict[str, float | str] = {"data_quality/status": report["status"]}
    for ticker, stats in report["tickers"].items():
        values[f"data_quality/{ticker}/status"] = stats["status"]
        values[f"data_quality/{ticker}/bars"] = stats["bars"]
        for name, check in stats["checks"].items():
            values[f"data_quality/{ticker}/{name}"] = check["value"]
    return values


def _share(name: str, check: Mapping) -> str:
    """``1.3% of bars; `` for shares, nothing for counts of gaps."""
    if name == "session_gaps":
        return ""
    return f"{_percent(check['share'])} of {UNITS[name].removeprefix('share of ')}; "


def _threshold(name: str, value: float | None) -> str:
    if value is None:
        return "null"
    return f"{value:g}"


def _example(name: str, check: Mapping) -> str:
    examples = check.get("examples") or []
    if not examples:
        return "-"
    first = examples[0]
    if name == "session_gaps":
        return f"e.g. {first['days']} days from {first['after']} to {first['before']}"
    if name == "stale_prices":
        return f"e.g. close {first['close']:g} for {first['bars']} bars from {first['from']}"
    if name == "missing_bars":
        return f"e.g. {first['bars']} bars after {first['after']}"
    if name == "return_outliers":
        return f"e.g. {first['sigmas']:+g} sigmas at {first['timestamp']}"
    return f"e.g. at {first}"


def _percent(share: float) -> str:
    pct = 100 * share
    return f"{pct:.2g}%" if pct < 10 else f"{pct:.0f}%"


def _worst(statuses) -> str:
    return max(statuses, key=STATUS_ORDER.index, default="ok")


def _iso(stamp: np.datetime64) -> str:
    text = str(np.datetime64(stamp, "s"))
    return text[:10] if text.endswith("T00:00:00") else text


def _whole(value: object, key: str, least: int, meaning: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"{key} is {value!r}; it must be a whole number >= {least} ({meaning}).")
