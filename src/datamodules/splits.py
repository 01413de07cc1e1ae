"""Time splits (train < validation < test, with a gap) and walk-forward folds."""

from __future__ import annotations

from dataclasses import dataclass

from datamodules.errors import ConfigError


@dataclass(frozen=True)
class Split:
    """Bar ranges ``[start, stop)`` of each part, in bars of the market.

    A sample decided at bar t belongs to a part when t and its fill bar t+1 both lie in it,
    so no label or fill of one part is a bar of a later part.
    """

    train: tuple[int, int]
    val: tuple[int, int]
    test: tuple[int, int]

    def part(self, name: str) -> tuple[int, int]:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


@dataclass(frozen=True)
class SplitConfig:
    """How the bars are split by time (``data.split.*``).

    ``train`` and ``val`` are fractions of the bars (the test split takes the rest);
    ``gap_bars`` bars are left out between train and val and between val and test;
    ``folds`` expanding walk-forward folds (``None`` = one split) of which the run uses
    ``fold`` (0-based).
    """

    train: float = 0.7
    val: float = 0.15
    gap_bars: int = 20
    folds: int | None = None
    fold: int | None = None

    def __post_init__(self) -> None:
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

    def cut(self, num_bars: int, min_bars: int) -> Split:
        """The run's split of ``num_bars`` bars: one time split, or fold ``fold`` of the folds.

        ``min_bars`` is the fewest bars each part must hold (a ConfigError otherwise).
        """
        if self.folds is not None:
            all_folds = walk_forward(
                num_bars, self.folds, self.train, self.val, self.gap_bars, min_bars
            )
            return all_folds[self.fold or 0]
        return time_split(num_bars, self.train, self.val, self.gap_bars, min_bars)


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
