"""Time splits (train < val < test with gaps) and expanding walk-forward folds."""

from __future__ import annotations

import pytest

from datamodules.errors import ConfigError
from datamodules.sources import SampleSource, SyntheticSource
from datamodules.splits import Split, SplitConfig, time_split, walk_forward


def _ordered(split: Split, gap: int, num_bars: int) -> None:
    (a0, a1), (b0, b1), (c0, c1) = split.train, split.val, split.test
    assert 0 <= a0 < a1 <= b0 < b1 <= c0 < c1 <= num_bars
    assert b0 - a1 == gap and c0 - b1 == gap
    parts = [set(range(*p)) for p in (split.train, split.val, split.test)]
    assert not (parts[0] & parts[1] or parts[1] & parts[2] or parts[0] & parts[2])


@pytest.mark.parametrize(("num_bars", "gap"), [(1000, 0), (1000, 20), (3210, 5), (500, 37)])
def test_time_split_orders_train_val_test_with_the_gap_and_no_overlap(num_bars, gap):
    split = time_split(num_bars, 0.7, 0.15, gap, min_bars=10)
    _ordered(split, gap, num_bars)
    assert split.train[0] == 0 and split.test[1] == num_bars
    usable = num_bars - 2 * gap
    assert split.train[1] == int(usable * 0.7)
    assert split.val[1] - split.val[0] == int(usable * 0.15)


def test_split_part_by_name():
    split = time_split(100, 0.6, 0.2, 2, min_bars=5)
    assert split.part("train") == split.train
    assert split.part("val") == split.val
    assert split.part("test") == split.test


@pytest.mark.parametrize(
    ("train", "val"), [(0.0, 0.2), (0.9, 0.2), (0.7, 0.3), (1.2, 0.1), (0.5, -0.1)]
)
def test_split_fractions_that_leave_no_test_are_refused(train, val):
    with pytest.raises(ConfigError, match="data.split.train"):
        time_split(1000, train, val, 0, min_bars=10)


def test_negative_gap_is_refused():
    with pytest.raises(ConfigError, match="data.split.gap_bars"):
        time_split(1000, 0.7, 0.15, -1, min_bars=10)


def test_too_small_split_is_a_config_error_naming_data_window():
    with pytest.raises(ConfigError) as err:
        time_split(200, 0.7, 0.15, 5, min_bars=66)
    msg = str(err.value)
    assert "val split" in msg and "data.window" in msg and "66" in msg


def test_window_too_long_for_the_data_is_refused_by_the_pipeline():
    with pytest.raises(ConfigError, match="data.window"):
        SyntheticSource(
            tickers=["X"],
            bar_size="1d",
            window=64,
            synthetic={"sessions": 300},
            cache_dir=None,
        ).build()


def test_walk_forward_folds_expand_and_their_test_blocks_never_overlap():
    num_bars, gap = 2000, 10
    folds = walk_forward(num_bars, 4, 0.5, 0.2, gap, min_bars=20)
    assert len(folds) == 4
    for fold in folds:
        _ordered(fold, gap, num_bars)
        assert fold.train[0] == 0
    ends = [f.train[1] for f in folds]
    assert ends == sorted(ends) and len(set(ends)) == 4  # training sets grow
    assert ends[0] == int(num_bars * 0.5)
    tests = [set(range(*f.test)) for f in folds]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not tests[i] & tests[j]
            assert folds[i].test[1] <= folds[j].val[0]  # later folds validate after earlier tests
    assert folds[-1].test[1] == num_bars


def test_walk_forward_needs_at_least_one_fold_and_room_for_each():
    with pytest.raises(ConfigError, match="data.split.folds"):
        walk_forward(1000, 0, 0.5, 0.2, 0, min_bars=10)
    with pytest.raises(ConfigError, match="data.window"):
        walk_forward(300, 10, 0.5, 0.2, 5, min_bars=20)


def test_pipeline_uses_the_configured_walk_forward_fold():
    kw = dict(
        tickers=["X"],
        bar_size="1h",
        window=16,
        synthetic={"sessions": 120},
        cache_dir=None,
    )
    split = {"train": 0.5, "val": 0.2, "gap_bars": 3, "folds": 3}
    one = SyntheticSource(split={**split, "fold": 1}, **kw).build()
    expected = walk_forward(one.market.num_bars, 3, 0.5, 0.2, 3, 18)
    assert one.split == expected[1]
    assert SyntheticSource(split=split, **kw).build().split == expected[0]
    with pytest.raises(ConfigError, match="data.split.fold=3"):
        SyntheticSource(split={**split, "fold": 3}, **kw)  # refused before any bar is made


def test_pipeline_split_covers_the_market_with_the_configured_gap():
    data = SampleSource(
        tickers=["AAPL"],
        bar_size="1d",
        window=32,
        split={"train": 0.7, "val": 0.15, "gap_bars": 5},
        cache_dir=None,
    ).build()
    _ordered(data.split, 5, data.market.num_bars)
    assert data.split.test[1] == data.market.num_bars == 3210


def test_split_config_cuts_like_the_split_functions():
    assert SplitConfig().cut(1000, 10) == time_split(1000, 0.7, 0.15, 20, 10)
    folds = SplitConfig(train=0.5, val=0.2, gap_bars=5, folds=3, fold=2)
    assert folds.cut(2000, 20) == walk_forward(2000, 3, 0.5, 0.2, 5, 20)[2]
    assert SplitConfig(folds=3).cut(2000, 20) == walk_forward(2000, 3, 0.7, 0.15, 20, 20)[0]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"train": 0.9, "val": 0.2}, "data.split.train=0.9 and data.split.val=0.2"),
        ({"gap_bars": -1}, "data.split.gap_bars is -1; it must be >= 0"),
        ({"gap_bars": 2.5}, "data.split.gap_bars is 2.5"),
        ({"folds": 0}, "data.split.folds is 0; it must be >= 1"),
        ({"folds": 2, "fold": 2}, "data.split.fold=2 but data.split.folds=2"),
        ({"folds": 2, "fold": -1}, "data.split.fold=-1 but data.split.folds=2"),
        ({"fold": 1}, "data.split.fold=1 but data.split.folds is null"),
    ],
)
def test_split_config_is_checked_without_any_data(kwargs, needle):
    with pytest.raises(ConfigError) as err:
        SplitConfig(**kwargs)
    assert needle in str(err.value)
