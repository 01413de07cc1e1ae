"""The Probability of Backtest Overfitting (PBO) by combinatorially symmetric cross-validation.

Bailey, Borwein, López de Prado & Zhu (2017), "The Probability of Backtest Overfitting",
Journal of Computational Finance 20(4). Given the per-bar returns of N trials (configurations
of a search) over the same T bars:

1. cut the bars into S contiguous blocks of equal size (the first ``T mod S`` bars are left out);
2. for each of the C(S, S/2) ways to pick half of the blocks as in-sample (IS) and the rest as
   out-of-sample (OOS), find the trial with the best IS Sharpe ratio and the relative rank
   ``w`` of its OOS Sharpe ratio among the N trials' (``rank / (N + 1)``, ties averaged);
3. the logit ``log(w / (1 - w))`` is <= 0 when the IS winner is at or below the OOS median;
   PBO is the share of splits where it is.

A PBO near 0.5 or above says the search picks noise; near 0, that its winner holds up.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

MAX_BLOCKS = 16  # C(16, 8) = 12,870 splits


@dataclass(frozen=True)
class Overfitting:
    """The PBO (a probability) over ``splits`` IS/OOS splits of ``blocks`` blocks of
    ``block_bars`` bars, for ``trials`` trials; ``logits`` (one per split) are what the PBO
    counts, ``chosen`` the IS winner of each split (column index of the trial)."""

    pbo: float
    logits: np.ndarray
    chosen: np.ndarray
    blocks: int
    block_bars: int
    trials: int

    @property
    def splits(self) -> int:
        return int(self.logits.shape[0])

    def as_json(self) -> dict:
        """The PBO, how it was computed, and the logits' quartiles."""
        q = np.quantile(self.logits, [0.25, 0.5, 0.75]) if self.splits else [math.nan] * 3
        return {
            "pbo": self.pbo,
            "trials": self.trials,
            "blocks": self.blocks,
            "block_bars": self.block_bars,
            "splits": self.splits,
            "logit_quartiles": [float(x) for x in q],
            "method": "CSCV of Bailey, Borwein, Lopez de Prado & Zhu (2017), Sharpe ratio",
        }


def blocks_for(bars: int, max_blocks: int = MAX_BLOCKS) -> int:
    """The even number of blocks to cut ``bars`` into: as many as ``max_blocks`` while every
    block keeps at least 4 bars (a Sharpe ratio of half the blocks needs some), at least 2."""
    s = min(max_blocks, bars // 4)
    return max(s - s % 2, 2)


def _sharpe_from_sums(total: np.ndarray, squares: np.ndarray, count: int) -> np.ndarray:
    """Per-bar Sharpe ratio (ddof=1) from sums and sums of squares over ``count`` bars."""
    mean = total / count
    var = (squares - count * mean**2) / (count - 1)
    var = np.where(var > 1e-300, var, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(var > 0, mean / np.sqrt(var), np.where(mean > 0, np.inf, -np.inf))


def _relative_rank(values: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Rank (1..N, ties averaged) of ``values[i, chosen[i]]`` within row i, over N + 1."""
    pick = values[np.arange(values.shape[0]), chosen][:, None]
    below = (values < pick).sum(axis=1)
    tied = (values == pick).sum(axis=1)
    rank = below + (tied + 1) / 2.0
    return rank / (values.shape[1] + 1)


def probability_of_overfitting(returns: np.ndarray, blocks: int | None = None) -> Overfitting:
    """PBO by CSCV of ``returns`` (T, N): the per-bar returns of N >= 2 trials over the same T
    bars, ranked by their per-bar Sharpe ratio. ``blocks`` (S, even) defaults to
    :func:`blocks_for`."""
    m = np.asarray(returns, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] < 2:
        raise ValueError(f"PBO needs returns of shape (T, N) with N >= 2 trials, got {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError("PBO needs finite returns (a NaN return means a broken trial)")
    bars, trials = m.shape
    s = blocks_for(bars) if blocks is None else int(blocks)
    if s < 2 or s % 2 or bars // s < 2:
        raise ValueError(f"PBO needs an even number of blocks >= 2 of >= 2 bars; got {s} blocks")
    size = bars // s
    cut = m[bars - size * s :].reshape(s, size, trials)  # the first T mod S bars left out
    sums, squares = cut.sum(axis=1), (cut * cut).sum(axis=1)  # (S, N)
    combos = np.array(list(itertools.combinations(range(s), s // 2)))
    mask = np.zeros((len(combos), s))
    mask[np.arange(len(combos))[:, None], combos] = 1.0
    half = size * (s // 2)
    is_sr = _sharpe_from_sums(mask @ sums, mask @ squares, half)
    oos_sr = _sharpe_from_sums((1 - mask) @ sums, (1 - mask) @ squares, half)
    chosen = np.argmax(is_sr, axis=1)
    w = _relative_rank(oos_sr, chosen)
    logits = np.log(w / (1.0 - w))
    return Overfitting(
        pbo=float((logits <= 0).mean()),
        logits=logits,
        chosen=chosen,
        blocks=s,
        block_bars=size,
        trials=trials,
    )
