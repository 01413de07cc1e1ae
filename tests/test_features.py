"""Per-ticker features known at each bar's close, calendar encodings, and train-only normalisation.

The look-ahead tests change every bar after some bar t (prices and volume, OHLC kept valid)
and check that nothing known at the close of t moves.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest

from datamodules.errors import ConfigError
from datamodules.features import CALENDAR_NAMES, FeatureConfig, add_features
from datamodules.sources import FileSource, SampleSource, SyntheticSource
from datamodules.synthetic import SyntheticConfig, generate_bars

DEFAULT_NAMES = [
    "logret_1",
    "logret_3",
    "logret_5",
    "logret_10",
    "logret_20",
    "rsi_14",
    "ema_ratio_10",
    "ema_ratio_30",
    "vwap_dev_20",
    "volatility_20",
    "volume_z_20",
    "range",
]
RAW_FEATURES = [*DEFAULT_NAMES, "sigma", "adv"]


def _perturb(frame: pl.DataFrame, after: dt.datetime, seed: int, ticker: str | None = None):
    """New prices and volume for every bar later than ``after`` (of ``ticker``, or all),
    keeping high >= max(open, close) and low <= min(open, close)."""
    rng = np.random.default_rng(seed)
    n = frame.height
    hit = (frame["timestamp"] > after).to_numpy()
    if ticker is not None:
        hit &= (frame["ticker"] == ticker).to_numpy()
    o = frame["open"].to_numpy() * np.where(hit, np.exp(rng.normal(0, 0.02, n)), 1.0)
    c = frame["close"].to_numpy() * np.where(hit, np.exp(rng.normal(0, 0.02, n)), 1.0)
    h = np.where(hit, np.maximum(o, c) * np.exp(np.abs(rng.normal(0, 0.01, n))), frame["high"])
    lo = np.where(hit, np.minimum(o, c) * np.exp(-np.abs(rng.normal(0, 0.01, n))), frame["low"])
    v = np.where(
        hit, np.round(frame["volume"].to_numpy() * rng.uniform(0.2, 5, n)), frame["volume"]
    )
    assert hit.any()
    return frame.with_columns(
        pl.Series("open", o),
        pl.Series("high", h),
        pl.Series("low", lo),
        pl.Series("close", c),
        pl.Series("volume", v),
    )


def _synthetic(sessions: int = 30) -> pl.DataFrame:
    return generate_bars(["A", "B"], 15, 7, SyntheticConfig(sessions=sessions))


# --- look-ahead ----------------------------------------------------------------------------


def test_raw_features_sigma_and_adv_up_to_t_ignore_every_later_bar():
    cfg = FeatureConfig()
    raw = _synthetic()
    stamps = raw.filter(pl.col("ticker") == "A")["timestamp"]
    for t in (cfg.warmup + 5, 150, 400):  # early, inside what will be train, later
        cut = stamps[t]
        base = add_features(raw, cfg)
        moved = add_features(_perturb(raw, cut, seed=t), cfg)
        assert base.height == moved.height
        known = pl.col("timestamp") <= cut
        left = base.filter(known).select("ticker", "timestamp", *RAW_FEATURES)
        right = moved.filter(known).select("ticker", "timestamp", *RAW_FEATURES)
        assert left.height > 0
        assert left.equals(right), f"a feature at or before {cut} changed"
        later = ~known
        changed = (
            base.filter(later).select(RAW_FEATURES).to_numpy()
            != moved.filter(later).select(RAW_FEATURES).to_numpy()
        )
        assert changed.any(axis=0).sum() >= len(RAW_FEATURES) - 1  # the perturbation is seen


def test_features_of_one_ticker_ignore_the_other_tickers_bars():
    raw = _synthetic(20)
    moved = _perturb(raw, dt.datetime(1900, 1, 1), seed=1, ticker="B")
    base = add_features(raw, FeatureConfig()).filter(pl.col("ticker") == "A")
    other = add_features(moved, FeatureConfig()).filter(pl.col("ticker") == "A")
    assert base.select(RAW_FEATURES).equals(other.select(RAW_FEATURES))


def _intraday_csvs(folder, raw: pl.DataFrame) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for ticker in ("A", "B"):
        path = folder / f"{ticker}.csv"
        raw.filter(pl.col("ticker") == ticker).select(
            "timestamp", "open", "high", "low", "close", "volume"
        ).write_csv(path)
        files[ticker] = str(path)
    return files


def _build(files: dict[str, str], **kw):
    return FileSource(
        tickers=["A", "B"],
        bar_size="15min",
        files=files,
        window=16,
        split={"train": 0.6, "val": 0.2, "gap_bars": 4},
        cache_dir=None,
        **kw,
    ).build()


def test_pipeline_features_normalisation_sigma_adv_up_to_t_ignore_later_bars(tmp_path):
    # 5-min CSVs resampled to 15-min bars; t lies after the training split, so the
    # normalisation statistics (fitted on train only) must be unchanged too.
    raw5 = generate_bars(["A", "B"], 5, 11, SyntheticConfig(sessions=30))
    base = _build(_intraday_csvs(tmp_path / "base", raw5))
    m = base.market
    t = base.split.train[1] + 25
    next_bar = dt.datetime.fromisoformat(str(m.timestamps[t + 1]))
    moved_raw = _perturb(raw5, next_bar - dt.timedelta(microseconds=1), seed=3)
    moved = _build(_intraday_csvs(tmp_path / "moved", moved_raw))
    n = moved.market

    assert moved.split == base.split
    assert n.normalisation == m.normalisation
    np.testing.assert_array_equal(n.timestamps, m.timestamps)
    for name in ("features", "sigma", "adv", "time_features", "open", "close", "volume"):
        np.testing.assert_array_equal(getattr(n, name)[: t + 1], getattr(m, name)[: t + 1], name)
    assert not np.array_equal(n.features[t + 1 :], m.features[t + 1 :])
    assert not np.array_equal(n.sigma[t + 1 :], m.sigma[t + 1 :])


def test_normalisation_is_fitted_on_the_training_split_only(tmp_path):
    raw5 = generate_bars(["A", "B"], 15, 5, SyntheticConfig(sessions=30))
    data = _build(_intraday_csvs(tmp_path, raw5))
    m, (a, b) = data.market, data.split.train
    train = m.features[a:b].astype(np.float64)
    np.testing.assert_allclose(train.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(train.std(axis=0), 1.0, atol=1e-3)
    assert set(m.normalisation) == set(DEFAULT_NAMES)
    assert len(m.normalisation["rsi_14"]["mean"]) == 2  # one per ticker
    # Changing a bar inside the training split does change the statistics.
    stamps = raw5.filter(pl.col("ticker") == "A")["timestamp"]
    moved_raw = _perturb(raw5, stamps[200], seed=9)
    moved = _build(_intraday_csvs(tmp_path / "moved", moved_raw))
    assert moved.market.normalisation != m.normalisation


# --- feature set -------------------------------------------------------------------------


def test_default_features_are_12_per_ticker_named_in_order():
    cfg = FeatureConfig()
    assert cfg.names() == DEFAULT_NAMES
    data = SyntheticSource(
        tickers=["X", "Y", "Z"],
        bar_size="15min",
        window=16,
        synthetic={"sessions": 40},
        cache_dir=None,
    ).build()
    m = data.market
    assert m.feature_names == tuple(DEFAULT_NAMES)
    assert m.features.shape == (m.num_bars, 3, 12)
    assert m.features.dtype == np.float32
    assert np.isfinite(m.features).all()


def test_feature_knobs_change_the_feature_set_and_the_warmup():
    features = {"return_horizons": [1, 2], "ema_spans": [5], "rsi_window": 7, "warmup_bars": 3}
    cfg = FeatureConfig(return_horizons=(1, 2), ema_spans=(5,), rsi_window=7, warmup_bars=3)
    assert cfg.names() == [
        "logret_1",
        "logret_2",
        "rsi_7",
        "ema_ratio_5",
        "vwap_dev_20",
        "volatility_20",
        "volume_z_20",
        "range",
    ]
    assert cfg.warmup == 21 + 3  # volatility/liquidity window + 1, plus the extra bars
    source = SyntheticSource(
        tickers=["X"],
        bar_size="15min",
        window=16,
        features=features,
        synthetic={"sessions": 40},
        cache_dir=None,
    )
    m = source.build().market
    assert m.feature_names == tuple(cfg.names())
    assert m.num_bars == 40 * 26 - cfg.warmup


def test_unknown_feature_key_is_a_config_error_naming_data_features():
    with pytest.raises(ConfigError) as err:
        SyntheticSource(
            tickers=["X"],
            bar_size="15min",
            features={"rsi_windw": 10},
            cache_dir=None,
        )
    msg = str(err.value)
    assert "data.features" in msg and "rsi_windw" in msg and "rsi_window" in msg


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"return_horizons": ()}, "data.features.return_horizons is empty"),
        ({"return_horizons": (1, 0)}, "data.features.return_horizons is 0"),
        ({"ema_spans": (10, 10)}, "each value may appear only once"),
        ({"ema_spans": 10}, "data.features.ema_spans is 10; it must be a list"),
        ({"rsi_window": 0}, "data.features.rsi_window is 0"),
        ({"volatility_window": 1}, "data.features.volatility_window is 1"),
        ({"liquidity_window": 1.5}, "data.features.liquidity_window is 1.5"),
        ({"warmup_bars": -2}, "data.features.warmup_bars is -2"),
        ({"calendar": "yes"}, "data.features.calendar is 'yes'"),
    ],
)
def test_feature_knobs_out_of_range_are_config_errors_naming_the_key(kwargs, needle):
    with pytest.raises(ConfigError) as err:
        FeatureConfig(**kwargs)
    assert needle in str(err.value)


def test_feature_lists_become_tuples():
    cfg = FeatureConfig(return_horizons=[1, 2], ema_spans=[4])
    assert cfg.return_horizons == (1, 2) and cfg.ema_spans == (4,)
    assert hash(cfg) == hash(FeatureConfig(return_horizons=(1, 2), ema_spans=(4,)))


def test_feature_values_match_their_definitions():
    raw = _synthetic(10).filter(pl.col("ticker") == "A")
    cfg = FeatureConfig()
    out = add_features(raw, cfg)
    c, h, lo = raw["close"].to_numpy(), raw["high"].to_numpy(), raw["low"].to_numpy()
    v = raw["volume"].to_numpy()
    logret = np.diff(np.log(c), prepend=np.nan)
    assert out.height == raw.height - cfg.warmup
    for i in (cfg.warmup, cfg.warmup + 17, raw.height - 1):
        row = out.row(i - cfg.warmup, named=True)
        assert row["logret_1"] == pytest.approx(math.log(c[i] / c[i - 1]))
        assert row["logret_20"] == pytest.approx(math.log(c[i] / c[i - 20]))
        assert row["range"] == pytest.approx(math.log(h[i] / lo[i]))
        assert row["volatility_20"] == pytest.approx(np.std(logret[i - 19 : i + 1], ddof=1))
        assert row["sigma"] == pytest.approx(np.std(logret[i - 19 : i + 1], ddof=1))
        assert row["adv"] == pytest.approx(v[i - 19 : i + 1].mean())
        typical = (h + lo + c)[i - 19 : i + 1] / 3
        vwap = (typical * v[i - 19 : i + 1]).sum() / v[i - 19 : i + 1].sum()
        assert row["vwap_dev_20"] == pytest.approx(c[i] / vwap - 1)
        assert -0.5 <= row["rsi_14"] <= 0.5


# --- calendar features -------------------------------------------------------------------


def test_calendar_features_only_for_intraday_bars():
    intraday_source = SyntheticSource(
        tickers=["X"],
        bar_size="30min",
        window=16,
        synthetic={"sessions": 40},
        cache_dir=None,
    )
    intraday = intraday_source.build().market
    assert intraday.time_feature_names == CALENDAR_NAMES
    assert intraday.time_features.shape == (intraday.num_bars, 4)
    # Row of a Tuesday 09:30 bar: time of day 570 min, day of week 1 (Monday = 0).
    i = next(
        k
        for k, s in enumerate(intraday.timestamps.astype(object))
        if s.weekday() == 1 and (s.hour, s.minute) == (9, 30)
    )
    tod, dow = 2 * math.pi * 570 / 1440, 2 * math.pi * 1 / 7
    np.testing.assert_allclose(
        intraday.time_features[i],
        [math.sin(tod), math.cos(tod), math.sin(dow), math.cos(dow)],
        atol=1e-6,
    )

    daily_source = SyntheticSource(
        tickers=["X"],
        bar_size="1d",
        window=16,
        synthetic={"sessions": 300},
        cache_dir=None,
    )
    daily = daily_source.build().market
    assert daily.time_features.shape == (daily.num_bars, 0)
    assert daily.time_feature_names == ()

    off_source = SyntheticSource(
        tickers=["X"],
        bar_size="30min",
        window=16,
        synthetic={"sessions": 40},
        features={"calendar": False},
        cache_dir=None,
    )
    off = off_source.build().market
    assert off.time_features.shape == (off.num_bars, 0)


def test_sample_daily_market_has_no_calendar_features_and_60_warmup_bars():
    m = SampleSource(tickers=["MSFT"], bar_size="1d", window=32, cache_dir=None).build().market
    assert m.num_bars == 3270 - FeatureConfig().warmup == 3210
    assert m.time_features.shape == (3210, 0)
    assert m.features.shape == (3210, 1, 12)
