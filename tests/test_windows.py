"""WindowDataModule: window shapes, next-bar labels, splits and no look-ahead."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
import torch

from datamodules.errors import ConfigError
from datamodules.sources import FileSource, SyntheticSource
from datamodules.windows import WindowDataModule, direction_labels, next_bar_returns

PARTS = ("train", "val", "test")


def _daily(n: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    close = 80 * np.exp(np.cumsum(rng.normal(0, 0.012, n)))
    open_ = close * np.exp(rng.normal(0, 0.006, n))
    return pl.DataFrame(
        {
            "Date": [dt.date(2015, 1, 1) + dt.timedelta(days=i) for i in range(n)],
            "Open": open_,
            "High": np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.003, n))),
            "Low": np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.003, n))),
            "Close": close,
            "Volume": rng.integers(1_000, 100_000, n).astype(float),
        }
    )


def _build(folder, frames: dict[str, pl.DataFrame], window: int = 16):
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for ticker, frame in frames.items():
        files[ticker] = str(folder / f"{ticker}.csv")
        frame.write_csv(files[ticker])
    return FileSource(
        tickers=list(frames),
        bar_size="1d",
        files=files,
        window=window,
        columns={"timestamp": "Date"},
        sessions_per_year=365,
        split={"train": 0.6, "val": 0.2, "gap_bars": 3},
        cache_dir=None,
    ).build()


def _perturb_after(frame: pl.DataFrame, after: dt.date, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n = frame.height
    hit = (frame["Date"] > after).to_numpy()
    o = frame["Open"].to_numpy() * np.where(hit, np.exp(rng.normal(0, 0.03, n)), 1)
    c = frame["Close"].to_numpy() * np.where(hit, np.exp(rng.normal(0, 0.03, n)), 1)
    return frame.with_columns(
        pl.Series("Open", o),
        pl.Series("Close", c),
        pl.Series("High", np.where(hit, np.maximum(o, c) * 1.01, frame["High"])),
        pl.Series("Low", np.where(hit, np.minimum(o, c) * 0.99, frame["Low"])),
        pl.Series(
            "Volume", np.where(hit, frame["Volume"] * rng.uniform(0.1, 9, n), frame["Volume"])
        ),
    )


def test_windows_have_the_documented_shapes():
    data = SyntheticSource(
        tickers=["A", "B"],
        bar_size="15min",
        window=16,
        batch_size=32,
        synthetic={"sessions": 40},
        cache_dir=None,
    ).build()
    dm = WindowDataModule(data)
    assert dm.num_assets == 2
    assert dm.input_size == 2 * 12 + 4  # asset-major features, then calendar features
    item = dm.dataset("train")[0]
    assert item["x"].shape == (16, 28) and item["x"].dtype == torch.float32
    assert item["age"].shape == (16,)
    assert item["y"].shape == (2,) and item["y"].dtype == torch.int64
    t = int(item["t"])
    m = data.market
    np.testing.assert_array_equal(item["x"][-1, :12].numpy(), m.features[t, 0])
    np.testing.assert_array_equal(item["x"][-1, 12:24].numpy(), m.features[t, 1])
    np.testing.assert_array_equal(item["x"][-1, 24:].numpy(), m.time_features[t])
    np.testing.assert_array_equal(item["x"][0, :12].numpy(), m.features[t - 15, 0])
    # age: minutes from each bar of the window to the decision bar.
    assert float(item["age"][-1]) == 0.0
    expected_age = (m.timestamps[t] - m.timestamps[t - 15 : t + 1]) / np.timedelta64(1, "m")
    np.testing.assert_allclose(item["age"].numpy(), expected_age)

    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (32, 16, 28)
    assert batch["y"].shape == (32, 2)
    assert len(dm.dataset("val")) == len(dm.decisions("val"))


def test_only_training_batches_are_shuffled():
    data = SyntheticSource(
        tickers=["A"],
        bar_size="30min",
        window=8,
        batch_size=64,
        synthetic={"sessions": 40},
        cache_dir=None,
    ).build()
    dm = WindowDataModule(data)
    val_t = torch.cat([b["t"] for b in dm.val_dataloader()]).numpy()
    np.testing.assert_array_equal(val_t, dm.decisions("val"))
    torch.manual_seed(0)
    train_t = torch.cat([b["t"] for b in dm.train_dataloader()]).numpy()
    assert sorted(train_t) == list(dm.decisions("train"))
    assert not np.array_equal(train_t, dm.decisions("train"))


def test_label_of_a_decision_at_t_is_the_sign_of_the_next_bars_open_to_close_return(tmp_path):
    raw = {"A": _daily(400, 1), "B": _daily(400, 2)}
    data = _build(tmp_path, raw)
    dm = WindowDataModule(data)
    m = data.market
    for j, ticker in enumerate(("A", "B")):
        frame = raw[ticker]
        row_of = {d: i for i, d in enumerate(frame["Date"].to_list())}
        o, c = frame["Open"].to_numpy(), frame["Close"].to_numpy()
        for part in PARTS:
            for t in dm.decisions(part):
                nxt = row_of[m.timestamps[t].astype("datetime64[D]").item()] + 1
                assert int(dm.labels[t, j]) == int(np.log(c[nxt] / o[nxt]) > 0)
    returns = next_bar_returns(m)
    assert np.isnan(returns[-1]).all()
    np.testing.assert_allclose(returns[:-1], np.log(m.close[1:] / m.open[1:]))


def test_three_classes_put_small_moves_in_a_flat_band(tmp_path):
    data = _build(tmp_path, {"A": _daily(400, 3)})
    threshold_bps = 50.0
    dm = WindowDataModule(data, num_classes=3, flat_threshold_bps=threshold_bps)
    r = next_bar_returns(data.market)[:-1, 0]
    y = dm.labels[:-1, 0].numpy()
    band = threshold_bps * 1e-4
    np.testing.assert_array_equal(y[r > band], 2)
    np.testing.assert_array_equal(y[r < -band], 0)
    np.testing.assert_array_equal(y[np.abs(r) <= band], 1)
    assert {0, 1, 2} == set(y.tolist())
    assert direction_labels(np.array([0.0049, 0.0051, -0.0051]), 3, 50.0).tolist() == [1, 2, 0]
    assert direction_labels(np.array([-0.001, 0.0, 0.001]), 2, 0.0).tolist() == [0, 0, 1]


def test_unsupported_number_of_classes_is_a_config_error():
    with pytest.raises(ConfigError, match="model.task.num_classes"):
        direction_labels(np.zeros(3), 4, 0.0)


def test_windows_and_labels_before_t_ignore_every_bar_after_t(tmp_path):
    raw = {"A": _daily(500, 4), "B": _daily(500, 5)}
    base = _build(tmp_path / "base", raw)
    dm = WindowDataModule(base, num_classes=3, flat_threshold_bps=10)
    t = base.split.val[0] + 10  # after the training split: normalisation is the same
    cut = base.market.timestamps[t].astype("datetime64[D]").item()
    moved = _build(tmp_path / "moved", {k: _perturb_after(f, cut, 6) for k, f in raw.items()})
    dm2 = WindowDataModule(moved, num_classes=3, flat_threshold_bps=10)

    assert moved.split == base.split
    assert moved.market.normalisation == base.market.normalisation
    checked = 0
    for part in PARTS:
        for i, d in enumerate(dm.decisions(part)):
            if d > t:
                break
            a, b = dm.dataset(part)[i], dm2.dataset(part)[i]
            assert torch.equal(a["x"], b["x"]) and torch.equal(a["age"], b["age"]), d
            if d <= t - 1:  # the label of t-1 is bar t, still known
                assert torch.equal(a["y"], b["y"]), d
            checked += 1
    assert checked > base.split.train[1] - 16
    later = slice(t + 1, moved.market.num_bars)
    assert not torch.equal(dm.inputs[later], dm2.inputs[later])
    assert not torch.equal(dm.labels[t:], dm2.labels[t:])


def test_decisions_keep_the_window_in_the_data_and_the_fill_bar_in_the_split():
    for window in (1, 16, 40):
        data = SyntheticSource(
            tickers=["A"],
            bar_size="1h",
            window=window,
            split={"train": 0.6, "val": 0.2, "gap_bars": 2},
            synthetic={"sessions": 100},
            cache_dir=None,
        ).build()
        dm = WindowDataModule(data)
        seen = set()
        for part in PARTS:
            start, stop = data.split.part(part)
            d = dm.decisions(part)
            assert len(d) > 0
            assert d.min() >= start and d.min() - window + 1 >= 0
            assert d.max() + 1 < stop  # the fill/label bar t+1 lies in the split
            assert d.max() == stop - 2  # and no decision that could be kept is lost
            assert not seen & set(d.tolist())
            seen |= set(d.tolist())
            item = dm.dataset(part)[len(d) - 1]
            assert item["x"].shape[0] == window
