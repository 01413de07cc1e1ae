"""Time splits (train < validation < test, with a gap), walk-forward folds and combinatorial
purged cross-validation (CPCV, López de Prado, *Advances in Financial Machine Learning*,
ch. 12)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Literal

from datamodules.errors import ConfigError

Span = tuple[int, int]


@dataclass(frozen=True)
class Split:
    """Bar ranges ``[start, stop)`` of each part, in bars of the market.

    A sample decided at bar t belongs to a part when t and its fill bar t+1 both lie in it,
    so no label or fill of one part is a bar of a later part. A part may be several spans
    (``spans``: CPCV's training groups, its test groups); ``train``, ``val`` and ``test`` are
    then the first bar of the part's first span to the end of its last (its envelope), and
    only :meth:`spans` says which bars it holds. ``groups`` numbers the CPCV group of each
    test span (empty for time splits).
    """

    train: Span
    val: Span
    test: Span
    spans_by_part: dict[str, tuple[Span, ...]] = field(default_factory=dict)
    groups: tuple[int, ...] = ()

    def part(self, name: str) -> Span:
        """The envelope of a part (the part itself when it is one span)."""
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def spans(self, name: str) -> tuple[Span, ...]:
        """The contiguous spans of a part, in time order."""
        return self.spans_by_part.get(name) or (self.part(name),)


@dataclass(frozen=True)
class SplitConfig:
    """How the bars are split by time (``data.split.*``).

    ``method: time``: ``train`` and ``val`` are fractions of the bars (the test split takes the
    rest); ``gap_bars`` bars are left out between train and val and between val and test;
    ``folds`` expanding walk-forward folds (``None`` = one split) of which the run uses
    ``fold`` (0-based).

    ``method: cpcv``: combinatorial purged cross-validation. The bars are cut into ``groups``
    equal groups; fold ``fold`` (0-based, of C(groups, test_groups)) tests on the
    ``test_groups`` groups of the fold-th combination in lexicographic order, validates on
    the last ``val`` share of the training bars (taken from the end of the latest training
    group) and trains on the other groups. Around every test group and the validation span,
    training samples whose label bar (the fill after the decision) falls within
    ``purge_bars`` bars before it are purged, and those whose input window starts within
    ``embargo_bars`` bars after it are embargoed, so no training window reads a bar of a test
    group or its embargo (set ``embargo_bars`` to at least the features' longest lookback).
    """

    method: Literal["time", "cpcv"] = "time"
    train: float = 0.7
    val: float = 0.15
    gap_bars: int = 20
    folds: int | None = None
    fold: int | None = None
    groups: int = 6
    test_groups: int = 2
    purge_bars: int = 0
    embargo_bars: int = 32

    def __post_init__(self) -> None:
        if self.method not in ("time", "cpcv"):
            raise ConfigError(
                f"data.split.method is '{self.method}'; choose time (one split, or walk-forward "
                "with data.split.folds) or cpcv (combinatorial purged cross-validation)."
            )
        if self.method == "cpcv":
            self._check_cpcv()
            return
        _check_fractions(self.train, self.val)
        _check_gap(self.gap_bars)
        object.__setattr__(self, "train", float(self.train))
        object.__setattr__(self, "val", float(self.val))
        if self.folds is not None:
            _check_folds(self.folds)
            fold = 0 if self.fold is None else self.fold
            _check_whole(fold, "data.split.fold")
            if not 0 <= fold < self.folds:
                raise ConfigError(f"data.split.fold={self.fold} but data.split.folds={self.folds}.")
        elif self.fold is not None:
            raise ConfigError(
                f"data.split.fold={self.fold} but data.split.folds is null (one split). Set "
                "data.split.folds to the number of walk-forward folds, or data.split.fold=null."
            )

    def _check_cpcv(self) -> None:
        for key in ("groups", "test_groups", "purge_bars", "embargo_bars"):
            _check_whole(getattr(self, key), f"data.split.{key}")
        if self.groups < 3 or not 1 <= self.test_groups <= self.groups - 2:
            raise ConfigError(
                f"data.split.groups={self.groups} and data.split.test_groups="
                f"{self.test_groups}: CPCV needs groups >= 3 and 1 <= test_groups <= groups - 2 "
                "(at least one training group besides the one validation is taken from)."
            )
        if self.purge_bars < 0 or self.embargo_bars < 0:
            raise ConfigError(
                f"data.split.purge_bars={self.purge_bars} and embargo_bars={self.embargo_bars}"
                "; both must be >= 0 bars."
            )
        if not (isinstance(self.val, (int, float)) and 0 < self.val < 1):
            raise ConfigError(
                f"data.split.val is {self.val}; with method=cpcv it is the share (0..1) of the "
                "training bars kept for validation."
            )
        if self.folds is not None:
            raise ConfigError(
                f"data.split.folds={self.folds} with method=cpcv: CPCV has C(groups, "
                f"test_groups) = {self.num_cpcv_folds} folds; drop data.split.folds and pick "
                "one with data.split.fold."
            )
        fold = 0 if self.fold is None else self.fold
        _check_whole(fold, "data.split.fold")
        if not 0 <= fold < self.num_cpcv_folds:
            raise ConfigError(
                f"data.split.fold={self.fold} but CPCV with groups={self.groups} and "
                f"test_groups={self.test_groups} has {self.num_cpcv_folds} folds (0.."
                f"{self.num_cpcv_folds - 1}): sweep data.split.fold=range(0,"
                f"{self.num_cpcv_folds})."
            )

    @property
    def num_cpcv_folds(self) -> int:
        """C(groups, test_groups): how many CPCV folds (jobs) there are."""
        return math.comb(self.groups, self.test_groups)

    def cut(self, num_bars: int, min_bars: int, window: int = 1) -> Split:
        """The run's split of ``num_bars`` bars: one time split, fold ``fold`` of the
        walk-forward folds, or CPCV fold ``fold``.

        ``min_bars`` is the fewest bars each part (each span of it) must hold (a ConfigError
        otherwise); ``window`` the bars a sample's input reads (CPCV's embargo counts from
        the first of them).
        """
        if self.method == "cpcv":
            return cpcv_split(
                num_bars,
                self.groups,
                self.test_groups,
                self.fold or 0,
                self.val,
                self.purge_bars,
                self.embargo_bars,
                window,
                min_bars,
            )
        if self.folds is not None:
            all_folds = walk_forward(
                num_bars, self.folds, self.train, self.val, self.gap_bars, min_bars
            )
            return all_folds[self.fold or 0]
        return time_split(num_bars, self.train, self.val, self.gap_bars, min_bars)


def cpcv_groups(num_bars: int, groups: int) -> list[Span]:
    """``groups`` contiguous groups of bars of (nearly) equal size covering ``0..num_bars``."""
    edges = [round(i * num_bars / groups) for i in range(groups + 1)]
    return [(edges[i], edges[i + 1]) for i in range(groups)]


def cpcv_test_sets(groups: int, test_groups: int) -> list[tuple[int, ...]]:
    """The test groups of each CPCV fold: the combinations in lexicographic order."""
    return list(itertools.combinations(range(groups), test_groups))


def cpcv_split(
    num_bars: int,
    groups: int,
    test_groups: int,
    fold: int,
    val: float,
    purge_bars: int,
    embargo_bars: int,
    window: int,
    min_bars: int,
) -> Split:
    """CPCV fold ``fold``: its test groups, a validation span at the end of the latest training
    group (the last ``val`` share of the training bars), and the training spans that remain
    once every bar a sample near a test group or the validation span would read is removed.

    A training sample decided at bar t reads bars ``t - window + 1 .. t + 1`` (its input
    window and its label, the fill bar). Before a removed span ``[a, b)`` it is kept when
    ``t + 1 < a - purge_bars``; after it, when ``t - window + 1 >= b + embargo_bars``. The
    returned training spans are the decision spans that keep (``[first decision, last
    decision + 2)``, as every span of the project: the fill of the last decision inside).
    """
    cut = cpcv_groups(num_bars, groups)
    chosen = cpcv_test_sets(groups, test_groups)[fold]
    test = tuple(cut[g] for g in chosen)
    training = [cut[g] for g in range(groups) if g not in chosen]
    n_train = sum(b - a for a, b in training)
    n_val = max(int(n_train * val), min_bars)
    last = training[-1]
    if last[1] - last[0] < n_val + min_bars:
        n_val = max(min(n_val, last[1] - last[0] - min_bars), 0)
    val_span = (last[1] - n_val, last[1])
    if n_val < min_bars:
        raise ConfigError(
            f"CPCV fold {fold}: the latest training group {last} has too few bars for a "
            f"validation span of {min_bars} bars and training before it (data.window plus 2). "
            "Use more data, fewer data.split.groups or a smaller data.split.val."
        )
    removed = sorted([*test, val_span])
    train: list[Span] = []
    for a, b in training:
        if (a, b) == last:
            b = val_span[0]
        train += _clean(a, b, removed, purge_bars, embargo_bars, window)
    train = [s for s in _merge(train) if s[1] - s[0] >= min_bars]
    if not train:
        raise ConfigError(
            f"CPCV fold {fold} keeps no training span of {min_bars} bars or more once purged "
            f"(purge_bars={purge_bars}) and embargoed (embargo_bars={embargo_bars}, plus the "
            f"{window}-bar window). Use more data, fewer data.split.groups or a smaller "
            "embargo."
        )
    for a, b in test:
        if b - a < min_bars:
            raise ConfigError(
                f"CPCV test group [{a}, {b}) has {b - a} bars, fewer than the {min_bars} it "
                "needs (data.window plus 2). Use more data or fewer data.split.groups."
            )
    return Split(
        train=(train[0][0], train[-1][1]),
        val=val_span,
        test=(test[0][0], test[-1][1]),
        spans_by_part={"train": tuple(train), "val": (val_span,), "test": test},
        groups=tuple(chosen),
    )


def _merge(spans: list[Span]) -> list[Span]:
    """Adjacent spans joined: training groups with nothing removed between them are one span,
    so an episode may run on from one into the next."""
    out: list[Span] = []
    for a, b in spans:
        if out and out[-1][1] == a:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def _clean(
    a: int, b: int, removed: list[Span], purge: int, embargo: int, window: int
) -> list[Span]:
    """The decision spans within ``[a, b)`` whose samples read no removed bar (see
    :func:`cpcv_split`)."""
    first, last = a, b - 2  # decisions whose fill is inside [a, b)
    for ra, rb in removed:
        if rb <= a:  # removed before: the window must start at rb + embargo or later
            first = max(first, rb + embargo + window - 1)
        elif ra >= b:  # removed after: the fill must come before ra - purge
            last = min(last, ra - purge - 2)
    return [(first, last + 2)] if last >= first else []


def time_split(num_bars: int, train: float, val: float, gap_bars: int, min_bars: int) -> Split:
    """Split by fractions of the bars; test takes what is left after train, val and two gaps."""
    _check_fractions(train, val)
    _check_gap(gap_bars)
    usable = num_bars - 2 * gap_bars
    n_train = int(usable * train)
    n_val = int(usable * val)
    parts = _layout(0, n_train, n_val, num_bars, gap_bars)
    _check(parts, min_bars, num_bars)
    return parts


def walk_forward(
    num_bars: int, folds: int, train: float, val: float, gap_bars: int, min_bars: int
) -> list[Split]:
    """Expanding-window folds: fold k trains on everything up to its validation block.

    The first ``train`` share of bars is the smallest training set; the rest is cut into
    ``folds`` equal blocks, each holding a validation part (``val`` of the block) and a test part.
    """
    _check_folds(folds)
    n_first = int(num_bars * train)
    block = (num_bars - n_first) // folds
    out = []
    for k in range(folds):
        end = n_first + block * (k + 1) if k < folds - 1 else num_bars
        n_train = n_first + block * k
        n_val = max(int(block * val), 1)
        parts = _layout(0, n_train, n_val, end, gap_bars)
        _check(parts, min_bars, num_bars)
        out.append(parts)
    return out


def _layout(start: int, n_train: int, n_val: int, stop: int, gap: int) -> Split:
    train = (start, start + n_train)
    val = (train[1] + gap, train[1] + gap + n_val)
    test = (val[1] + gap, stop)
    return Split(train=train, val=val, test=test)


def _check(split: Split, min_bars: int, num_bars: int) -> None:
    for name in ("train", "val", "test"):
        a, b = split.part(name)
        if b - a < min_bars:
            raise ConfigError(
                f"The {name} split has {max(b - a, 0)} bars of {num_bars} after features' "
                f"warm-up, fewer than the {min_bars} it needs (data.window plus 2). Use more "
                "data (e.g. data.synthetic.sessions), a shorter data.window, or change "
                "data.split.*."
            )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_fractions(train: float, val: float) -> None:
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (train, val))
    if not (numbers and 0 < train < 1 and 0 < val < 1 and train + val < 1):
        raise ConfigError(
            f"data.split.train={train} and data.split.val={val} must be fractions in (0, 1) "
            "that leave room for a test split."
        )


def _check_gap(gap_bars: int) -> None:
    _check_whole(gap_bars, "data.split.gap_bars")
    if gap_bars < 0:
        raise ConfigError(f"data.split.gap_bars is {gap_bars}; it must be >= 0.")


def _check_folds(folds: int) -> None:
    _check_whole(folds, "data.split.folds")
    if folds < 1:
        raise ConfigError(f"data.split.folds is {folds}; it must be >= 1.")


def _check_whole(value: object, key: str) -> None:
    if not _is_int(value):
        raise ConfigError(f"{key} is {value!r}; it must be a whole number of bars.")
