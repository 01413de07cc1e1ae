"""Time splits (train < val < test with gaps) and expanding walk-forward folds."""

from __future__ import annotations

import numpy as np
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


# ------------------------------------------------------------------------------ CPCV
CPCV = dict(method="cpcv", groups=6, test_groups=2, val=0.15, purge_bars=3, embargo_bars=24)


def _reads(t: int, window: int) -> range:
    """The bars a training sample decided at t reads: its input window and its fill bar."""
    return range(t - window + 1, t + 2)


@pytest.mark.parametrize("window", [1, 16, 64])
def test_no_training_window_of_any_cpcv_fold_touches_its_test_groups_or_their_embargo(window):
    from datamodules.splits import cpcv_groups, cpcv_test_sets

    bars = 3000
    groups = cpcv_groups(bars, 6)
    sets = cpcv_test_sets(6, 2)
    assert len(sets) == SplitConfig(**CPCV).num_cpcv_folds == 15
    for fold, chosen in enumerate(sets):
        split = SplitConfig(**CPCV, fold=fold).cut(bars, window + 2, window)
        assert split.spans("test") == tuple(groups[g] for g in chosen)
        assert split.groups == chosen
        removed = [*split.spans("test"), *split.spans("val")]
        forbidden = set()
        for a, b in removed:  # the span, the purge before it and the embargo after it
            forbidden |= set(range(a - CPCV["purge_bars"], b + CPCV["embargo_bars"]))
        trained = 0
        for a, b in split.spans("train"):
            for t in range(max(a, window - 1), b - 1):  # the decisions of the span
                assert forbidden.isdisjoint(_reads(t, window)), (fold, t)
                trained += 1
        # Nothing clean is wasted: the training bars are the groups not tested, less the
        # validation span, the purges and the embargoes (and the first window).
        lost = (len(chosen) + 1) * (CPCV["purge_bars"] + CPCV["embargo_bars"] + window + 1)
        assert trained >= 4 * 500 - 450 - lost - window


def test_cpcv_validation_is_the_end_of_the_latest_training_group():
    split = SplitConfig(**CPCV, fold=14).cut(3000, 18, 16)  # tests groups 4 and 5
    assert split.spans("test") == ((2000, 2500), (2500, 3000))
    assert split.val == (2000 - 300, 2000)  # 15% of the 2000 training bars
    assert split.spans("train") == ((0, 1700 - 3),)  # groups 0-3 as one span, purged


def test_cpcv_fold_out_of_range_names_the_sweep_to_run():
    with pytest.raises(ConfigError, match=r"has 15 folds .*data.split.fold=range\(0,15\)"):
        SplitConfig(**CPCV, fold=15)
    with pytest.raises(ConfigError, match="test_groups <= groups - 2"):
        SplitConfig(method="cpcv", groups=4, test_groups=3)
    with pytest.raises(ConfigError, match="choose time .* or cpcv"):
        SplitConfig(method="purged")


def test_the_pipeline_normalises_cpcv_features_on_the_training_spans_only():
    data = SyntheticSource(
        tickers=["X"],
        bar_size="1h",
        window=16,
        synthetic={"sessions": 200},
        cache_dir=None,
        split={**CPCV, "fold": 3},
    ).build()
    assert len(data.split.spans("test")) == 2 and len(data.split.spans("train")) >= 2
    rows = np.concatenate([np.arange(a, b) for a, b in data.split.spans("train")])
    feats = data.market.features.astype(np.float64)
    # z-scored with the training spans' statistics: mean 0 and std 1 there, not elsewhere
    assert np.abs(feats[rows].mean(axis=0)).max() < 1e-4
    assert np.abs(feats[rows].std(axis=0) - 1).max() < 1e-3
    assert np.abs(feats.mean(axis=0)).max() > 1e-3
