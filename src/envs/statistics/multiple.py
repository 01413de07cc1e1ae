"""Is the best of many configurations better than buy-and-hold, once all of them are counted?

Hansen's (2005) test for Superior Predictive Ability, through ``arch``'s
:class:`~arch.bootstrap.SPA`: the null hypothesis is that no configuration has a higher
expected per-bar return than the benchmark; its p-value accounts for every configuration
tried (a stationary bootstrap of the return differences, studentised), unlike a test of the
winner alone. Losses are the negated per-bar returns, so a lower loss is a better bar.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from envs.statistics.bootstrap import block_length


@dataclass(frozen=True)
class SuperiorAbility:
    """SPA p-values (``consistent`` is Hansen's recommended one, between ``lower`` and
    ``upper``), over ``models`` configurations and ``bars`` bars, with ``reps`` stationary
    bootstrap resamples of mean block ``block`` bars and RNG ``seed``; ``best`` is the column
    of the configuration with the highest mean return."""

    lower: float
    consistent: float
    upper: float
    models: int
    bars: int
    block: int
    reps: int
    seed: int
    best: int

    def rejects(self, level: float = 0.95) -> bool:
        """True when some configuration beats the benchmark at ``level`` (consistent p-value)."""
        return math.isfinite(self.consistent) and self.consistent < 1.0 - level

    def as_json(self) -> dict:
        return {
            "p_value": self.consistent,
            "p_value_lower": self.lower,
            "p_value_upper": self.upper,
            "models": self.models,
            "bars": self.bars,
            "mean_block_bars": self.block,
            "resamples": self.reps,
            "seed": self.seed,
            "method": "Hansen (2005) SPA, arch.bootstrap.SPA, stationary bootstrap, "
            "losses = -returns",
        }


def superior_ability(
    benchmark: np.ndarray, models: np.ndarray, reps: int = 1000, seed: int = 0
) -> SuperiorAbility:
    """SPA test of ``models`` (T, N) per-bar returns against ``benchmark`` (T,) per-bar
    returns over the same bars."""
    from arch.bootstrap import SPA

    b = np.asarray(benchmark, dtype=np.float64)
    m = np.asarray(models, dtype=np.float64)
    if m.ndim == 1:
        m = m[:, None]
    if m.shape[0] != b.shape[0]:
        raise ValueError(f"benchmark has {b.shape[0]} bars but the models have {m.shape[0]}")
    block = block_length([b - m[:, i] for i in range(m.shape[1])])
    spa = SPA(-b, -m, block_size=block, reps=reps, bootstrap="stationary", seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        spa.compute()
    p = spa.pvalues
    return SuperiorAbility(
        lower=float(p["lower"]),
        consistent=float(p["consistent"]),
        upper=float(p["upper"]),
        models=int(m.shape[1]),
        bars=int(b.shape[0]),
        block=block,
        reps=reps,
        seed=seed,
        best=int(np.argmax(m.mean(axis=0))),
    )
