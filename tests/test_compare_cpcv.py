"""experiments.compare.cpcv: CPCV test groups stitched back into backtest paths, on hand-made
fold returns and on a real 15-job CPCV sweep of a forecaster."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from helpers.cli import TINY, read_metrics, run_app, run_compare, run_folders

from datamodules.splits import cpcv_test_sets
from experiments.compare.cpcv import paths_of
from experiments.compare.table import RunRecord

BARS_PER_GROUP = 10


def fold_runs(tmp_path: Path, groups: int = 6, tested: int = 2) -> list[RunRecord]:
    """One run per CPCV fold whose test return on each bar of group g is 1e-3 * (fold + 1)
    plus a small wiggle keyed by the group, so a path's bars say which fold each came from."""
    records = []
    for fold, chosen in enumerate(cpcv_test_sets(groups, tested)):
        folder = tmp_path / str(fold)
        folder.mkdir()
        rows = []
        for g in chosen:
            for i in range(BARS_PER_GROUP):
                t = datetime(2024, 1, 1) + timedelta(hours=g * 100 + i)
                wiggle = 1e-5 * ((i % 2) * 2 - 1) * (g + 1)
                rows.append({"timestamp": t, "strategy": 1e-3 * (fold + 1) + wiggle, "group": g})
        pl.DataFrame(rows).write_csv(folder / "returns_test.csv")
        config = {
            "data.split.method": "cpcv",
            "data.split.groups": groups,
            "data.split.test_groups": tested,
            "data.split.fold": fold,
        }
        records.append(RunRecord(f"r{fold}", f"r{fold}", config, {}, folder=folder))
    return records


def test_each_path_takes_every_group_once_from_its_folds_in_order(tmp_path):
    records = fold_runs(tmp_path)
    paths = paths_of(records, "lstm", periods_per_year=252)
    assert paths.missing == [] and paths.folds == paths.expected == 15
    assert len(paths.sharpes) == math.comb(5, 1) == 5
    sets = cpcv_test_sets(6, 2)
    # Group g is tested by the folds whose combination holds it; path j takes the j-th.
    for j, sharpe in enumerate(paths.sharpes):
        series = np.concatenate(
            [
                1e-3 * ([f for f, c in enumerate(sets) if g in c][j] + 1)
                + 1e-5 * ((np.arange(BARS_PER_GROUP) % 2) * 2 - 1) * (g + 1)
                for g in range(6)
            ]
        )
        assert sharpe == pytest.approx(series.mean() / series.std(ddof=1) * math.sqrt(252))


def test_missing_folds_are_named_and_no_path_is_made(tmp_path):
    records = fold_runs(tmp_path)
    paths = paths_of([r for r in records if r.config["data.split.fold"] != 7], "x", 252)
    assert paths.missing == [7] and len(paths.sharpes) == 0
    assert "missing: 7" in paths.line()


@pytest.mark.slow
def test_a_15_job_cpcv_sweep_of_a_forecaster_gives_the_path_sharpe_distribution(tmp_path):
    out = tmp_path / "outputs"
    done = run_app(
        "-m",
        "+model=lstm",
        "data.split.method=cpcv",
        "data.split.fold=range(0,15)",
        *TINY,
        "quiet=true",
        output_root=out,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    folders = run_folders(out)
    assert len(folders) == 15
    for folder in folders:  # each fold tested its own two groups
        frame = pl.read_csv(folder / "returns_test.csv")
        assert frame["group"].n_unique() == 2
        assert read_metrics(folder)["statistics"]["test"]["bars"] == frame.height
    [sweep] = {f.parent for f in folders}
    compared = run_compare(str(sweep))
    assert compared.returncode == 0, compared.stderr[-3000:]
    assert "CPCV paths of #1 all runs (N=6, k=2): 5 paths, Sharpe ratio mean" in compared.stdout
    paths = pl.read_csv(sweep / "cpcv_paths.csv")
    assert paths.height == 5 and paths["sharpe"].is_finite().all()
    assert (sweep / "comparison_cpcv_paths.png").exists()
