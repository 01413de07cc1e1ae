"""The data-quality report of every source: missing bars inside sessions, stale prices, zero
volume, return outliers and gaps between sessions, per ticker, with thresholds that warn or
fail; written as data_quality.json in the run folder, to W&B and in one log line."""

from __future__ import annotations

import datetime as dt
import json
import logging

import numpy as np
import polars as pl
import pytest
from helpers.cli import read_metrics, run_app, run_folders

from datamodules.errors import ConfigError
from datamodules.quality import QualityConfig, QualityError, assess, measure, summary_line
from datamodules.sources import FileSource, SampleSource, SyntheticSource
from experiments.compare.offline import offline_runs, read_run

STEP = dt.timedelta(minutes=15)


def intraday(sessions: int = 40, seed: int = 0) -> pl.DataFrame:
    """Clean 15-minute bars of one ticker, 09:30-16:00 on business days (26 bars a session)."""
    rng = np.random.default_rng(seed)
    days = [
        d for d in (dt.date(2024, 1, 1) + dt.timedelta(i) for i in range(90)) if d.weekday() < 5
    ]
    stamps = [
        dt.datetime.combine(day, dt.time(9, 30)) + STEP * k
        for day in days[:sessions]
        for k in range(26)
    ]
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, len(stamps))))
    open_ = np.concatenate([[100.0], close[:-1]])
    return pl.DataFrame(
        {
            "ticker": "ABC",
            "timestamp": stamps,
            "open": open_,
            "high": np.maximum(open_, close) * 1.001,
            "low": np.minimum(open_, close) * 0.999,
            "close": close,
            "volume": rng.integers(1_000, 5_000, len(stamps)).astype(float),
        }
    )


def planted(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with 3 bars cut from inside one session, a week of sessions cut out (a gap),
    one close held for 12 bars (a stale stretch) and one bar without volume."""
    stamps = frame["timestamp"]
    day = stamps.dt.date()
    hole = (
        (day == dt.date(2024, 1, 10))
        & stamps.dt.hour().is_between(12, 12)
        & (stamps.dt.minute() < 45)
    )
    week = day.is_between(dt.date(2024, 1, 22), dt.date(2024, 1, 26))
    frame = frame.filter(~hole & ~week)
    i = frame["timestamp"].search_sorted(dt.datetime(2024, 2, 6, 10, 0))
    held = float(frame["close"][i])
    stale = pl.int_range(pl.len()).is_between(i, i + 11)
    frame = frame.with_columns(
        *(
            pl.when(stale).then(held).otherwise(pl.col(c)).alias(c)
            for c in ("open", "high", "low", "close")
        )
    )
    quiet = pl.col("timestamp") == dt.datetime(2024, 2, 12, 11, 0)
    return frame.with_columns(pl.when(quiet).then(0.0).otherwise(pl.col("volume")).alias("volume"))


def test_clean_bars_pass_every_check():
    report = assess(measure(intraday(), QualityConfig()), QualityConfig(), "test")
    stats = report["tickers"]["ABC"]
    assert report["status"] == "ok" and stats["bars"] == 40 * 26 and stats["bar_minutes"] == 15
    assert {name: check["value"] for name, check in stats["checks"].items()} == {
        "missing_bars": 0.0,
        "stale_prices": 0.0,
        "zero_volume": 0.0,
        "return_outliers": 0.0,
        "session_gaps": 0,
    }


def test_planted_flaws_are_each_found_where_they_are():
    report = assess(measure(planted(intraday()), QualityConfig()), QualityConfig(), "test")
    checks = report["tickers"]["ABC"]["checks"]
    assert checks["missing_bars"]["count"] == 3
    assert checks["missing_bars"]["examples"] == [
        {"after": "2024-01-10T11:45:00", "before": "2024-01-10T12:45:00", "bars": 3}
    ]
    assert checks["session_gaps"]["examples"] == [
        {"after": "2024-01-19", "before": "2024-01-29", "days": 10}
    ]
    assert checks["stale_prices"]["count"] == 12 and checks["stale_prices"]["stretches"] == 1
    assert checks["stale_prices"]["examples"][0]["from"] == "2024-02-06T10:00:00"
    assert checks["zero_volume"]["examples"] == ["2024-02-12T11:00:00"]
    assert all(c["status"] == "warn" for n, c in checks.items() if n != "return_outliers")
    assert report["status"] == "warn"
    line = summary_line(report)
    assert line.startswith(
        "data quality warn: ABC 3 missing bars (0.33% of expected bars; warn above 0), "
        "12 stale bars (1.3% of bars; warn above 0)"
    )
    assert line.endswith("1 session gaps (warn above 0) (data_quality.json)") and "\n" not in line


def test_a_stretch_shorter_than_stale_bars_is_not_stale():
    frame = planted(intraday())
    cfg = QualityConfig(stale_bars=13)
    assert measure(frame, cfg)["tickers"]["ABC"]["checks"]["stale_prices"]["count"] == 0


def test_a_return_far_beyond_the_robust_sigma_is_an_outlier():
    frame = intraday()
    spike = frame["close"].to_numpy().copy()
    spike[300:] *= 1.08  # an 8% jump between two 15-minute bars
    frame = frame.with_columns(
        pl.Series("close", spike),
        pl.Series("open", np.concatenate([[100.0], spike[:-1]])),
    ).with_columns(
        pl.max_horizontal("open", "close").alias("high"),
        pl.min_horizontal("open", "close").alias("low"),
    )
    check = measure(frame, QualityConfig())["tickers"]["ABC"]["checks"]["return_outliers"]
    assert check["count"] == 1 and check["examples"][0]["timestamp"] == str(
        np.datetime64(frame["timestamp"][300], "s")
    )
    assert check["examples"][0]["sigmas"] > 10


def test_thresholds_warn_or_fail_as_configured():
    measured = measure(planted(intraday()), QualityConfig())
    lenient = QualityConfig(warn={"missing_bars": 0.01, "session_gaps": 2}, fail={})
    checks = assess(measured, lenient, "test")["tickers"]["ABC"]["checks"]
    assert checks["missing_bars"]["status"] == "ok" and checks["session_gaps"]["status"] == "ok"
    strict = QualityConfig(fail={"stale_prices": 0.0, "session_gaps": 0})
    report = assess(measured, strict, "test")
    assert report["status"] == "fail"
    assert report["tickers"]["ABC"]["checks"]["stale_prices"]["status"] == "fail"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"stale_bars": 1}, "data.quality.stale_bars is 1"),
        ({"outlier_sigmas": 0}, "data.quality.outlier_sigmas is 0"),
        ({"warn": {"zero_volume": 1.5}}, "data.quality.warn.zero_volume is 1.5; it is a share"),
        ({"fail": {"session_gaps": -1}}, "data.quality.fail.session_gaps is -1"),
        ({"warn": {"stale": 0.1}}, "data.quality.warn has unknown key(s) stale"),
    ],
)
def test_out_of_range_settings_are_config_errors(settings, message):
    with pytest.raises(ConfigError) as err:
        QualityConfig(**settings)
    assert message in str(err.value)


def test_every_source_reports_its_quality(tmp_path):
    sample = SampleSource(tickers=["MSFT"], cache_dir=None).build().quality
    gaps = sample["tickers"]["MSFT"]["checks"]["session_gaps"]
    # 9/11 (7 days), the funeral of President Ford (5) and hurricane Sandy (5): real gaps
    assert [g["after"] for g in gaps["examples"]] == ["2001-09-10", "2006-12-29", "2012-10-26"]
    synthetic = SyntheticSource(tickers=["A", "B"], cache_dir=None, synthetic={"sessions": 60})
    report = synthetic.build().quality
    assert set(report["tickers"]) == {"A", "B"} and report["source"] == "synthetic"
    off = SyntheticSource(tickers=["A"], cache_dir=None, quality={"enabled": False})
    assert off.build().quality is None


def test_a_check_above_its_fail_threshold_stops_the_build_in_one_paragraph(tmp_path):
    path = tmp_path / "abc.csv"
    planted(intraday()).drop("ticker").write_csv(path)
    source = FileSource(
        tickers=["ABC"],
        files={"ABC": str(path)},
        bar_size="15min",
        cache_dir=None,
        sessions_per_year=252,
        quality={"fail": {"stale_prices": 0.0}},
    )
    with pytest.raises(QualityError) as err:
        source.build()
    text = str(err.value)
    assert "\n" not in text and "ABC has 12 stale bars (1.3% of bars; e.g. close " in text
    assert "for 12 bars from 2024-02-06T10:00:00), above data.quality.fail.stale_prices=0" in text
    assert err.value.report["status"] == "fail"


def test_the_report_is_cached_with_the_features(tmp_path, caplog):
    path = tmp_path / "abc.csv"
    planted(intraday()).drop("ticker").write_csv(path)
    kw = {
        "tickers": ["ABC"],
        "files": {"ABC": str(path)},
        "bar_size": "15min",
        "sessions_per_year": 252,
    }
    first = FileSource(cache_dir=str(tmp_path / "cache"), **kw).build()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="datamodules.pipeline"):
        again = FileSource(cache_dir=str(tmp_path / "cache"), **kw).build()
    assert again.cache_hit and again.quality == first.quality
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("data quality")]
    assert line.startswith("data quality warn: ABC")


def test_a_run_writes_data_quality_json_logs_it_and_sends_it_to_wandb(tmp_path):
    path = tmp_path / "abc.csv"
    planted(intraday(sessions=60)).drop("ticker").write_csv(path)
    common = [
        "+model=lstm",
        "data=csv",
        f"data.files={{ABC:{path}}}",
        "env.tickers=[ABC]",
        "data.bar_size=15min",
        "data.sessions_per_year=252",
        "data.window=16",
        "model.trainer.max_epochs=1",
        "model.trainer.limit_train_batches=2",
        "print_config=false",
        "export.enabled=false",
    ]
    out = tmp_path / "out"
    done = run_app(*common, output_root=out)
    assert done.returncode == 0, done.stderr[-3000:]
    [folder] = run_folders(out)
    report = json.loads((folder / "data_quality.json").read_text())
    checks = report["tickers"]["ABC"]["checks"]
    assert checks["session_gaps"]["status"] == "warn" and checks["session_gaps"]["count"] == 1
    assert checks["stale_prices"]["status"] == "warn" and checks["stale_prices"]["stretches"] == 1
    assert checks["missing_bars"]["count"] == 3
    log_lines = [
        line for line in (folder / "train.log").read_text().splitlines() if "data quality" in line
    ]
    assert len(log_lines) == 1 and "WARNING" in log_lines[0]
    assert "1 session gaps (warn above 0)" in log_lines[0]
    [wandb_run] = offline_runs(folder)
    summary = read_run(wandb_run)["summary"]
    assert summary["data_quality/status"] == "warn"
    assert summary["data_quality/ABC/session_gaps"] == 1 and summary["data_quality/ABC/bars"] > 0
    assert read_metrics(folder)["tickers"] == ["ABC"]

    live = run_app(*common, "data.quality=live", "logger=none", output_root=tmp_path / "live")
    assert live.returncode == 2 and "Traceback" not in live.stderr
    paragraph = live.stderr.strip().splitlines()[-1]
    assert paragraph.startswith("Error: Market data failed the quality thresholds before training")
    assert "ABC has 1 session gaps" in paragraph and "data.quality.fail.session_gaps=0" in paragraph
    [failed] = list((tmp_path / "live").rglob("data_quality.json"))
    assert json.loads(failed.read_text())["status"] == "fail"
    assert not list((tmp_path / "live").rglob("*.ckpt"))  # stopped before training
