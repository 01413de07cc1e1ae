"""The feature cache: reused when intact, rebuilt when corrupted, keyed by config and input files."""

from __future__ import annotations

import hashlib
import json
import logging
import os

import numpy as np
import polars as pl
import pytest
from helpers.markets import daily_bars

from datamodules.cache import cache_key, cached_frame, file_fingerprint
from datamodules.sources import FileSource, SampleSource


def _write_daily(path, n: int = 300, seed: int = 0, scale: float = 50.0) -> pl.DataFrame:
    frame = daily_bars(n, seed, scale)
    frame.write_csv(path)
    return frame


def _csv_build(files: dict[str, str], cache, tickers=None, **kw):
    source = FileSource(
        tickers=tickers or list(files),
        bar_size="1d",
        files=files,
        window=16,
        sessions_per_year=365,
        cache_dir=str(cache) if cache else None,
        **kw,
    )
    return source.build().market


def _same_market(a, b) -> None:
    for name in (
        "timestamps",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "features",
        "sigma",
        "adv",
    ):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), name)
    assert a.normalisation == b.normalisation


def _parquets(cache) -> list:
    return sorted(cache.glob("*.parquet"))


def test_cached_frame_builds_once_then_reads_the_file(tmp_path):
    calls = []
    frame = pl.DataFrame({"a": [1.0, 2.0, 3.0], "b": ["x", "y", "z"]})

    def build():
        calls.append(1)
        return frame

    first = cached_frame(str(tmp_path), "k1", build)
    second = cached_frame(str(tmp_path), "k1", build)
    assert len(calls) == 1
    assert first.equals(frame) and second.equals(frame)
    assert (tmp_path / "k1.parquet").is_file() and (tmp_path / "k1.json").is_file()
    cached_frame(str(tmp_path), "k2", build)  # another key: built again
    assert len(calls) == 2


def test_no_cache_dir_always_builds(tmp_path):
    calls = []
    for _ in range(2):
        cached_frame(None, "k", lambda: calls.append(1) or pl.DataFrame({"a": [1]}))
    assert len(calls) == 2


def test_second_build_with_the_same_config_reads_the_cache(tmp_path):
    cache = tmp_path / "cache"
    source = SampleSource(tickers=["MSFT"], bar_size="1d", window=32, cache_dir=str(cache))
    first = source.build().market
    [data] = _parquets(cache)
    before = data.stat()
    second = source.build().market
    after = data.stat()
    assert _parquets(cache) == [data]
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not rewritten
    _same_market(first, second)
    _same_market(
        second,
        SampleSource(tickers=["MSFT"], bar_size="1d", window=32, cache_dir=None).build().market,
    )


def test_window_and_split_do_not_change_the_key_but_features_do(tmp_path):
    cache = tmp_path / "cache"
    path = tmp_path / "x.csv"
    _write_daily(path)
    _csv_build({"X": str(path)}, cache)
    _csv_build({"X": str(path)}, cache, split={"train": 0.6, "val": 0.2})
    assert len(_parquets(cache)) == 1
    _csv_build({"X": str(path)}, cache, features={"rsi_window": 7})
    assert len(_parquets(cache)) == 2


def test_corrupted_cache_file_is_rebuilt_not_trusted_and_a_warning_logged(tmp_path, caplog):
    cache = tmp_path / "cache"
    path = tmp_path / "x.csv"
    _write_daily(path)
    fresh = _csv_build({"X": str(path)}, None)
    _csv_build({"X": str(path)}, cache)
    [data] = _parquets(cache)
    blob = bytearray(data.read_bytes())
    blob[len(blob) // 2 : len(blob) // 2 + 64] = b"\x00" * 64
    data.write_bytes(bytes(blob))

    with caplog.at_level(logging.WARNING, logger="datamodules.cache"):
        rebuilt = _csv_build({"X": str(path)}, cache)
    assert "does not match its record; rebuilding it" in caplog.text
    _same_market(rebuilt, fresh)
    meta = json.loads(data.with_suffix(".json").read_text())
    assert meta["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()  # healed


def test_a_valid_but_edited_cache_file_is_not_trusted(tmp_path, caplog):
    cache = tmp_path / "cache"
    path = tmp_path / "x.csv"
    _write_daily(path)
    original = _csv_build({"X": str(path)}, cache)
    [data] = _parquets(cache)
    pl.read_parquet(data).with_columns(pl.col("close") * 2).write_parquet(data)
    with caplog.at_level(logging.WARNING, logger="datamodules.cache"):
        again = _csv_build({"X": str(path)}, cache)
    assert "rebuilding" in caplog.text
    _same_market(again, original)


def test_unreadable_cache_record_is_rebuilt_with_a_warning(tmp_path, caplog):
    cache = tmp_path / "cache"
    path = tmp_path / "x.csv"
    _write_daily(path)
    original = _csv_build({"X": str(path)}, cache)
    [data] = _parquets(cache)
    data.with_suffix(".json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="datamodules.cache"):
        again = _csv_build({"X": str(path)}, cache)
    assert "unreadable" in caplog.text
    _same_market(again, original)


def test_changing_the_input_csv_changes_the_key(tmp_path):
    cache = tmp_path / "cache"
    path = tmp_path / "x.csv"
    frame = _write_daily(path)
    first = _csv_build({"X": str(path)}, cache)
    key_before = file_fingerprint(str(path))

    close = frame["close"].to_numpy().copy()
    close[-1] *= 1.01
    frame.with_columns(
        pl.Series("close", close),
        pl.max_horizontal("high", pl.Series(close) * 1.001).alias("high"),
        pl.min_horizontal("low", pl.Series(close) * 0.999).alias("low"),
    ).write_csv(path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    assert file_fingerprint(str(path)) != key_before

    second = _csv_build({"X": str(path)}, cache)
    assert len(_parquets(cache)) == 2
    assert second.close[-1, 0] == pytest.approx(close[-1])
    assert first.close[-1, 0] != pytest.approx(close[-1])


def test_cache_key_is_stable_and_sensitive_to_every_value():
    payload = {"source": "csv", "tickers": ["A", "B"], "features": {"rsi_window": 14}}
    assert cache_key(payload) == cache_key(dict(reversed(list(payload.items()))))
    assert cache_key(payload) != cache_key({**payload, "tickers": ["B", "A"]})
    assert cache_key(payload) != cache_key({**payload, "features": {"rsi_window": 15}})


def test_mapping_tickers_to_other_files_changes_the_key(tmp_path):
    cache = tmp_path / "cache"
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    _write_daily(a, seed=1, scale=10.0)
    _write_daily(b, seed=2, scale=1000.0)
    tickers = ["A", "B"]
    _csv_build({"A": str(a), "B": str(b)}, cache, tickers)
    swapped = _csv_build({"B": str(a), "A": str(b)}, cache, tickers)
    uncached = _csv_build({"B": str(a), "A": str(b)}, None, tickers)
    assert uncached.close[0, 0] > 100 > uncached.close[0, 1]  # A is now b.csv (price ~1000)
    np.testing.assert_array_equal(swapped.close, uncached.close)
