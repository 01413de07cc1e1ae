"""CPCV backtest paths: the test groups of a configuration's combinatorial purged CV folds
stitched back into complete histories (López de Prado, AFML ch. 12.4).

With N groups and k test groups there are C(N, k) folds and every group is tested by
C(N - 1, k - 1) of them; path j takes, for each group, its j-th fold in fold order, so each
of the C(N - 1, k - 1) paths covers every group exactly once with out-of-sample returns. A
configuration then has a distribution of path Sharpe ratios instead of one number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from datamodules.splits import cpcv_test_sets
from envs.statistics.sharpe import per_bar_sharpe
from experiments.compare.returns import run_returns
from experiments.compare.table import RunRecord

METHOD, GROUPS, TEST_GROUPS, FOLD = (
    "data.split.method",
    "data.split.groups",
    "data.split.test_groups",
    "data.split.fold",
)


@dataclass(frozen=True)
class Paths:
    """A configuration's CPCV paths: ``sharpes`` (annualised, one per path), the ``folds``
    run out of the ``expected`` C(N, k), and ``missing`` folds (paths need all of them)."""

    label: str
    groups: int
    test_groups: int
    sharpes: np.ndarray
    folds: int
    expected: int
    missing: list[int]

    def line(self) -> str:
        """The path-Sharpe distribution in words."""
        head = f"CPCV paths of {self.label or 'the configuration'} (N={self.groups}, k={self.test_groups})"
        if self.missing:
            return (
                f"{head}: {self.folds} of {self.expected} folds ran; the paths need every fold "
                f"(missing: {', '.join(map(str, self.missing))})."
            )
        s = self.sharpes
        q1, med, q3 = np.quantile(s, [0.25, 0.5, 0.75])
        return (
            f"{head}: {len(s)} paths, Sharpe ratio mean {s.mean():.2f} +- {s.std(ddof=1):.2f} "
            f"(sd), median {med:.2f}, quartiles [{q1:.2f}, {q3:.2f}], range [{s.min():.2f}, "
            f"{s.max():.2f}]; {np.mean(s > 0):.0%} of paths above 0."
        )


def is_cpcv(record: RunRecord) -> bool:
    return record.config.get(METHOD) == "cpcv"


def paths_of(records: Sequence[RunRecord], label: str, periods_per_year: float) -> Paths:
    """The CPCV paths of one configuration's fold runs (each with its ``returns_test.csv``
    holding a ``group`` column)."""
    n = int(records[0].config[GROUPS])
    k = int(records[0].config[TEST_GROUPS])
    sets = cpcv_test_sets(n, k)
    by_fold: dict[int, dict[int, np.ndarray]] = {}
    for r in records:
        frame = run_returns(r, "test")
        if frame is None or "group" not in frame.columns:
            continue
        fold = int(r.config.get(FOLD) or 0)
        by_fold[fold] = {
            int(g): part["strategy"].to_numpy()
            for (g,), part in frame.partition_by("group", as_dict=True).items()
        }
    missing = [f for f in range(len(sets)) if f not in by_fold]
    expected = len(sets)
    if missing:
        return Paths(label, n, k, np.empty(0), len(by_fold), expected, missing)
    per_group = {g: [f for f, chosen in enumerate(sets) if g in chosen] for g in range(n)}
    count = math.comb(n - 1, k - 1)
    paths = [np.concatenate([by_fold[per_group[g][j]][g] for g in range(n)]) for j in range(count)]
    sharpes = np.array([float(per_bar_sharpe(p)) for p in paths]) * math.sqrt(periods_per_year)
    return Paths(label, n, k, sharpes, len(by_fold), expected, [])
