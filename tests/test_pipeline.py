"""From a data config to a Market: the shipped configs, real sample data, and config errors."""

from __future__ import annotations

import datetime as dt
from dataclasses import fields
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from datamodules.errors import ConfigError, DataError, UserInputError
from datamodules.features import FeatureConfig, add_features
from datamodules.pipeline import MarketData, build_market_data
from datamodules.quality import QualityConfig, QualityThresholds
from datamodules.sources import FileSource, SampleSource, SQLSource, SyntheticSource, load_sample
from datamodules.splits import SplitConfig
from datamodules.synthetic import SyntheticConfig

CONF = Path(__file__).resolve().parents[1] / "conf"


def _compose(overrides: list[str]):
    """The run's whole config (conf/config.yaml)."""
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose(config_name="config", overrides=overrides)


def _compose_data(option: str, overrides: list[str] = (), tickers: str = "[MSFT]"):
    """conf/data/<option> on its own, with stand-ins for the keys other groups own."""
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose(
            config_name=None,
            overrides=[
                f"+data={option}",
                f"+env.tickers={tickers}",
                "+seed=7",
                "+paths.cache_dir=null",
                "+paths.output_root=outputs",
                *overrides,
            ],
        )


def _daily_csv(path, n: int = 300, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    close = 30 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = close * np.exp(rng.normal(0, 0.004, n))
    frame = pl.DataFrame(
        {
            "day": [
                (dt.date(2019, 1, 1) + dt.timedelta(days=i)).strftime("%d/%m/%Y") for i in range(n)
            ],
            "open": open_,
            "high": np.maximum(open_, close) * 1.002,
            "low": np.minimum(open_, close) * 0.998,
            "close": close,
            "volume": rng.integers(100, 1000, n).astype(float),
        }
    )
    frame.write_csv(path)
    return frame


# --- the shipped configs -----------------------------------------------------------------

OPTIONS = {
    "synthetic": SyntheticSource,
    "sample": SampleSource,
    "files": FileSource,
    "csv": FileSource,
    "parquet": FileSource,
    "sql": SQLSource,
}


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_each_data_option_composes_and_instantiates_into_its_source_class(tmp_path, option):
    _daily_csv(tmp_path / "msft.csv")
    pl.read_csv(tmp_path / "msft.csv").write_parquet(tmp_path / "msft.parquet")
    extension = "parquet" if option == "parquet" else "csv"
    files = [f"data.files={{MSFT:{tmp_path / f'msft.{extension}'}}}"]
    cfg = _compose_data(option, files if OPTIONS[option] is FileSource else [])
    assert "source" not in cfg.data  # the source is the _target_ class, not a string key
    # every key of the data node is a field of the class (and every field is in the file)
    cls = OPTIONS[option]
    assert set(cfg.data) - {"_target_", "_convert_"} == {f.name for f in fields(cls)}
    assert set(cfg.data.features) == {f.name for f in fields(FeatureConfig)}
    assert set(cfg.data.split) == {f.name for f in fields(SplitConfig)}
    assert set(cfg.data.quality) == {f.name for f in fields(QualityConfig)}
    assert set(cfg.data.quality.fail) == {f.name for f in fields(QualityThresholds)}

    source = instantiate(cfg.data)
    assert type(source) is cls
    assert source.tickers == ("MSFT",) and source.cache_dir is None
    assert isinstance(source.features, FeatureConfig) and isinstance(source.split, SplitConfig)
    if cls is SyntheticSource:
        assert set(cfg.data.synthetic) == {f.name for f in fields(SyntheticConfig)}
        assert source.seed == 7 and source.sessions_per_year == 252.0 and source.is_synthetic
        assert isinstance(source.synthetic, SyntheticConfig)
        assert source.synthetic.regime_vol == (0.7, 1.6)
    elif cls is SampleSource:
        assert (source.bar_size, source.window, source.batch_size) == ("1d", 32, 128)
        assert source.split.gap_bars == 5 and not source.is_synthetic
    elif cls is SQLSource:  # reads the ingested sample as data=sample reads the shipped file
        assert source.uri == "duckdb:///outputs/market.duckdb" and source.database.kind == "duckdb"
        assert (source.table, source.query, source.ticker_column) == (None, None, "ticker")
        assert (source.bar_size, source.window, source.batch_size) == ("1d", 32, 128)
        assert source.split.gap_bars == 5 and source.name == "sql" and not source.is_synthetic
    else:
        assert source.format == {"files": "auto"}.get(option, option)
        assert source.files == {"MSFT": str(tmp_path / f"msft.{extension}")}
        assert source.columns == dict.fromkeys(
            ("timestamp", "open", "high", "low", "close", "volume")
        )
        assert source.name == "files" and not source.is_synthetic


def test_sample_data_config_builds_the_real_msft_market():
    cfg = _compose_data("sample", tickers="[MSFT]")
    data = instantiate(cfg.data).build()
    assert isinstance(data, MarketData)
    m = data.market
    assert m.tickers == ("MSFT",) and m.source == "sample" and not m.synthetic
    assert data.window == 32 and data.batch_size == 128
    assert m.bar_minutes == 1440.0 and m.bars_per_session == 1.0
    assert 250 <= m.sessions_per_year <= 254
    assert m.periods_per_year == m.sessions_per_year
    # gap_bars=5 from conf/data/sample.yaml
    assert data.split.val[0] - data.split.train[1] == 5
    assert data.split.test[0] - data.split.val[1] == 5

    raw = load_sample(["MSFT"])
    warm = FeatureConfig().warmup
    assert m.num_bars == raw.height - warm
    np.testing.assert_array_equal(m.timestamps, raw["timestamp"].to_numpy()[warm:])
    for name in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(getattr(m, name)[:, 0], raw[name].to_numpy()[warm:])
    assert (np.diff(m.timestamps) > np.timedelta64(0)).all()
    assert m.session.tolist() == list(range(m.num_bars))  # one daily bar per session
    assert (m.sigma > 0).all() and (m.adv > 0).all()


def test_csv_data_config_keys_reach_the_builder(tmp_path):
    path = tmp_path / "x.csv"
    raw = _daily_csv(path)
    cfg = _compose_data(
        "csv",
        [
            "data.bar_size=1d",
            "data.window=16",
            "data.sessions_per_year=365",
            f"data.files={{XYZ:{path}}}",  # as a user types it: data.files={ABC:prices.csv}
            "data.columns={timestamp: day}",
            "data.timestamp_format='%d/%m/%Y'",
        ],
        tickers="[XYZ]",
    )
    m = instantiate(cfg.data).build().market
    assert m.tickers == ("XYZ",) and m.source == "files"
    np.testing.assert_array_equal(m.close[:, 0], raw["close"].to_numpy()[-m.num_bars :])
    assert m.timestamps[0].astype(object) == dt.datetime(2019, 1, 1) + dt.timedelta(
        days=raw.height - m.num_bars
    )


def test_one_long_file_with_a_ticker_column_composes_from_the_command_line(tmp_path):
    one = _daily_csv(tmp_path / "one.csv", seed=1).with_columns(pl.lit("AAA").alias("sym"))
    two = _daily_csv(tmp_path / "two.csv", seed=2).with_columns(pl.lit("BBB").alias("sym"))
    path = tmp_path / "both.parquet"
    pl.concat([one, two]).write_parquet(path)
    cfg = _compose_data(
        "files",
        [
            f"data.files={path}",
            "data.ticker_column=sym",
            "data.columns.timestamp=day",
            "data.timestamp_format='%d/%m/%Y'",
            "data.bar_size=1d",
            "data.window=16",
            "data.sessions_per_year=365",
        ],
        tickers="[BBB,AAA]",
    )
    m = instantiate(cfg.data).build().market
    assert m.tickers == ("BBB", "AAA")
    np.testing.assert_allclose(m.close[:, 0], two["close"].to_numpy()[-m.num_bars :])
    np.testing.assert_allclose(m.close[:, 1], one["close"].to_numpy()[-m.num_bars :])


def test_default_synthetic_config_builds_a_tagged_synthetic_market():
    cfg = _compose(["paths.cache_dir=null", "data.synthetic.sessions=60", "data.window=16"])
    source = instantiate(cfg.data)
    assert isinstance(source, SyntheticSource) and source.seed == cfg.seed
    m = source.build().market
    assert m.synthetic and m.source == "synthetic"
    assert m.tickers == tuple(cfg.env.tickers)
    assert m.bar_minutes == 15.0 and m.bars_per_session == 26.0 and m.sessions_per_year == 252.0


# --- the market ----------------------------------------------------------------------------


def test_features_are_raw_features_z_scored_with_the_recorded_training_statistics():
    data = build_market_data(
        SampleSource(tickers=["AAPL", "IBM"], bar_size="1d", window=32, cache_dir=None)
    )
    m = data.market
    raw = add_features(load_sample(["AAPL", "IBM"]), FeatureConfig())
    for j, ticker in enumerate(m.tickers):
        own = raw.filter(pl.col("ticker") == ticker)
        for k, name in enumerate(m.feature_names):
            stats = m.normalisation[name]
            x = own[name].to_numpy()
            expected = (x - stats["mean"][j]) / stats["std"][j]
            np.testing.assert_allclose(m.features[:, j, k], expected, rtol=1e-4, atol=1e-4)
            a, b = data.split.train
            assert stats["mean"][j] == pytest.approx(x[a:b].mean(), rel=1e-4, abs=1e-6)


def test_slice_cuts_every_per_bar_array_alike():
    source = SyntheticSource(
        tickers=["A", "B"],
        bar_size="30min",
        window=8,
        synthetic={"sessions": 40},
        cache_dir=None,
    )
    m = source.build().market
    part = m.slice(100, 150)
    assert part.num_bars == 50 and part.num_assets == 2
    for name in (
        "timestamps",
        "open",
        "close",
        "volume",
        "features",
        "time_features",
        "sigma",
        "adv",
        "session",
    ):
        np.testing.assert_array_equal(getattr(part, name), getattr(m, name)[100:150])
    assert part.normalisation == m.normalisation and part.periods_per_year == m.periods_per_year


# --- config errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        (
            {"cls": FileSource, "files": {"A": "a.xlsx"}, "format": "excel"},
            ConfigError,
            "data.format is 'excel'",
        ),
        ({"tickers": []}, ConfigError, "env.tickers"),
        ({"tickers": ["A", "A"]}, ConfigError, "env.tickers"),
        ({"bar_size": "fortnight"}, ConfigError, "data.bar_size"),
        ({"features": {"rsi": 3}}, ConfigError, "data.features has unknown key(s) rsi"),
        ({"cls": FileSource}, ConfigError, "data.files"),
        ({"cls": FileSource, "format": "parquet"}, ConfigError, "data.files"),
        ({"split": {"train": 0.9, "val": 0.2}}, ConfigError, "data.split.train"),
        ({"cls": SampleSource, "tickers": ["NVDA"]}, DataError, "data=sample only has"),
        (
            {"cls": SampleSource, "tickers": ["GOOG", "MSFT"], "bar_size": "1d"},
            DataError,
            "data.min_aligned_share=0.8",
        ),
    ],
)
def test_bad_config_is_a_user_input_error_naming_the_key(kwargs, error, needle):
    args = {"tickers": ["A"], "bar_size": "15min", "window": 16, "cache_dir": None, **kwargs}
    cls = args.pop("cls", SyntheticSource)
    if cls is SyntheticSource:
        args["synthetic"] = {"sessions": 40}
    with pytest.raises(error) as err:
        cls(**args).build()
    assert needle in str(err.value)
    assert isinstance(err.value, UserInputError)


def test_build_market_data_takes_a_source_and_equals_its_build():
    source = SyntheticSource(tickers=["A"], window=8, synthetic={"sessions": 30}, cache_dir=None)
    a, b = build_market_data(source), source.build()
    assert a.split == b.split and (a.window, a.batch_size) == (8, 256)
    np.testing.assert_array_equal(a.market.features, b.market.features)
    with pytest.raises(TypeError, match="SyntheticSource"):
        build_market_data("synthetic")


def test_missing_csv_file_is_named_through_the_pipeline(tmp_path):
    with pytest.raises(DataError, match="data.files.XYZ: file .*missing.csv' does not exist"):
        FileSource(
            tickers=["XYZ"],
            bar_size="1d",
            files={"XYZ": str(tmp_path / "missing.csv")},
            cache_dir=None,
        ).build()


def test_csv_with_wrong_timestamp_format_is_named_through_the_pipeline(tmp_path):
    path = tmp_path / "x.csv"
    _daily_csv(path)
    source = FileSource(
        tickers=["X"],
        bar_size="1d",
        files={"X": str(path)},
        columns={"timestamp": "day"},
        timestamp_format="%Y-%m-%d",
        cache_dir=None,
    )
    with pytest.raises(DataError) as err:
        source.build()
    msg = str(err.value)
    assert "line 2" in msg and "'01/01/2019'" in msg and "data.timestamp_format='%Y-%m-%d'" in msg
