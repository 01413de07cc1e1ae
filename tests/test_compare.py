"""`python -m experiments.compare`: a finished sweep compared as a user would, its numbers
checked against each run's own metrics.json; the table and bootstrap functions on small
hand-made frames; bad input."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from helpers.cli import TINY, read_metrics, run_app, run_compare, run_folders

from experiments.compare import cli as compare
from experiments.compare import selection
from experiments.compare.table import (
    RunRecord,
    aggregate,
    best_two,
    bootstrap_mean_difference,
    config_labels,
    differing_keys,
    flatten,
    runs_frame,
    short_names,
)

HIDDEN = "model.network.hidden_size"


def _assert_one_paragraph(done: subprocess.CompletedProcess, *needles: str) -> None:
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A finished 2x2 sweep (hidden size 8, 16 x seed 0, 1) and its comparison."""
    out = tmp_path_factory.mktemp("compare") / "outputs"
    done = run_app(
        "-m", "+model=lstm", f"{HIDDEN}=8,16", "seed=0,1", *TINY, "quiet=true", output_root=out
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [folder] = {f.parent for f in run_folders(out)}
    done = run_compare(str(folder))
    assert done.returncode == 0, done.stderr[-3000:]
    (folder / "stdout.txt").write_text(done.stdout)
    return folder


def _by_hidden_size(folder: Path) -> dict[str, list[dict]]:
    """Each run's metrics.json, keyed by the hidden size in its resolved config."""
    runs: dict[str, list[dict]] = {}
    for run in run_folders(folder):
        cfg = yaml.safe_load((run / "resolved_config.yaml").read_text())
        runs.setdefault(str(cfg["model"]["network"]["hidden_size"]), []).append(read_metrics(run))
    return runs


# ------------------------------------------------------------------------------ the sweep
def test_compare_prints_the_table_and_writes_csv_markdown_and_plots(sweep):
    printed = (sweep / "stdout.txt").read_text()
    assert "4 runs in 2 configurations, sorted by test/sharpe" in printed
    for header in ("hidden_size", "n", "test/sharpe", "test/total_return", "test/max_drawdown"):
        assert header in printed
    table = pl.read_csv(sweep / "comparison.csv")
    for row in table.iter_rows(named=True):
        mean, std = row["test/sharpe mean"], row["test/sharpe std"]
        assert f"{mean:.4g} ± {std:.3g}" in printed
    assert "bootstrap CI" in printed
    for name in ("comparison.csv", "runs.csv", "comparison.md"):
        assert (sweep / name).stat().st_size > 100
    for name in (compare.CURVES_PNG, compare.EQUITY_PNG):
        assert (sweep / name).stat().st_size > 10_000
    md = (sweep / "comparison.md").read_text()
    assert f"| # | {HIDDEN} | n | test/sharpe (mean ± std) |" in md
    assert "bootstrap CI" in md and f"]({compare.EQUITY_PNG})" in md


def test_seed_only_runs_are_aggregated_as_mean_and_std_of_their_metrics_json(sweep):
    expected = _by_hidden_size(sweep)
    table = pl.read_csv(sweep / "comparison.csv", schema_overrides={HIDDEN: pl.String})
    assert sorted(table[HIDDEN]) == sorted(expected) == ["16", "8"]
    for row in table.iter_rows(named=True):
        runs = expected[row[HIDDEN]]
        assert row["n"] == len(runs) == 2
        for metric in ("sharpe", "total_return", "max_drawdown"):
            values = np.array([m["test"]["strategy"][metric] for m in runs])
            assert row[f"test/{metric} mean"] == pytest.approx(values.mean(), rel=1e-12)
            assert row[f"test/{metric} std"] == pytest.approx(values.std(ddof=1), rel=1e-12)
    means = table["test/sharpe mean"].to_list()
    assert means == sorted(means, reverse=True)  # best first


def test_per_run_values_are_the_wandb_summary_and_equal_metrics_json(sweep):
    runs = pl.read_csv(sweep / "runs.csv")
    assert runs.height == 4
    for row in runs.iter_rows(named=True):
        metrics = read_metrics(Path(row["folder"]))
        # W&B's summary test/sharpe is written by report() from the numbers in metrics.json.
        assert row["test/sharpe"] == metrics["test"]["strategy"]["sharpe"]
        assert row["test/total_return"] == metrics["test"]["strategy"]["total_return"]


def test_the_differing_keys_are_exactly_the_hidden_size(sweep):
    table = pl.read_csv(sweep / "comparison.csv")
    assert table.columns[: table.columns.index("n")] == [HIDDEN]
    runs = pl.read_csv(sweep / "runs.csv")
    assert set(runs["seed"]) == set(runs["data.seed"]) == {0, 1}


def test_bootstrap_ci_is_reproducible_and_contains_the_observed_difference(sweep, tmp_path):
    again = run_compare(str(sweep), "--out", str(tmp_path))
    assert again.returncode == 0, again.stderr[-2000:]
    md = (sweep / "comparison.md").read_text()
    assert (tmp_path / "comparison.md").read_text() == md
    ranked = pl.read_csv(sweep / "comparison.csv", schema_overrides={HIDDEN: pl.String})
    runs = _by_hidden_size(sweep)
    best, second = ([m["test"]["strategy"]["sharpe"] for m in runs[h]] for h in ranked[HIDDEN])
    lo, hi = bootstrap_mean_difference(best, second)
    observed = np.mean(best) - np.mean(second)
    assert lo <= observed <= hi
    assert f"= {observed:.4g}; 95% bootstrap CI [{lo:.4g}, {hi:.4g}]" in md


def test_the_sweep_statistics_come_from_the_returns_each_run_kept(sweep):
    printed = (sweep / "stdout.txt").read_text()
    md = (sweep / "comparison.md").read_text()
    for words in ("Deflated Sharpe ratio", "Probability of backtest overfitting", "SPA test"):
        assert words in printed and words in md
    assert f"]({selection.PBO_PNG})" in md and (sweep / selection.PBO_PNG).stat().st_size > 5000
    stats = dict(pl.read_csv(sweep / selection.SELECTION_CSV).select("statistic", "value").rows())
    assert stats["trials"] == 2 and 0 <= stats["deflated_sharpe_ratio"] <= 1
    assert 0 <= stats["probability_of_backtest_overfitting"] <= 1
    # The best configuration's Sharpe is that of its seeds' mean per-bar test returns.
    ranked = pl.read_csv(sweep / "comparison.csv", schema_overrides={HIDDEN: pl.String})
    best = ranked[HIDDEN][0]
    folders = [
        f
        for f in run_folders(sweep)
        if str(
            yaml.safe_load((f / "resolved_config.yaml").read_text())["model"]["network"][
                "hidden_size"
            ]
        )
        == best
    ]
    series = np.mean(
        [pl.read_csv(f / "returns_test.csv")["strategy"].to_numpy() for f in folders], 0
    )
    per_year = read_metrics(folders[0])["periods_per_year"]
    sharpe = series.mean() / series.std(ddof=1) * np.sqrt(per_year)
    assert stats["best_sharpe"] == pytest.approx(sharpe, rel=1e-9)


def test_runs_leave_their_test_equity_curves_as_csv(sweep):
    for folder in run_folders(sweep):
        equity = pl.read_csv(folder / "equity_test.csv", try_parse_dates=True)
        assert equity.columns == ["timestamp", "strategy", "buy_and_hold"]
        assert equity["timestamp"].dtype == pl.Datetime
        assert equity["timestamp"].is_sorted()
        test = read_metrics(folder)["test"]
        for name in ("strategy", "buy_and_hold"):
            curve = equity[name].to_numpy()
            assert curve[-1] / curve[0] - 1 == pytest.approx(test[name]["total_return"], abs=1e-12)


def test_a_metric_no_run_logged_is_an_error_listing_the_known_ones(sweep):
    done = run_compare(str(sweep), "--metric", "test/sharp")
    _assert_one_paragraph(done, "test/sharp", "Known metrics", "test/sharpe", "val/loss")


# ------------------------------------------------------------------------------ bad input
def test_a_path_without_runs_is_an_error(tmp_path):
    _assert_one_paragraph(run_compare(str(tmp_path)), "No W&B runs under", str(tmp_path))
    missing = tmp_path / "nowhere"
    _assert_one_paragraph(run_compare(str(missing)), "does not exist", "--online")


def test_online_without_a_reachable_server_is_one_paragraph(tmp_path):
    env = {
        "HOME": str(tmp_path),  # no ~/.netrc: only the key below
        "WANDB_API_KEY": "a" * 40,
        "WANDB_BASE_URL": "http://127.0.0.1:9",  # nothing listens there
        "WANDB_HTTP_TIMEOUT": "2",
    }
    done = run_compare("sweep-x", "--online", "me/proj", env=env)
    _assert_one_paragraph(done, "sweep-x", "me/proj", "network", "wandb login")
    _assert_one_paragraph(run_compare("sweep-x", "--online", "proj"), "ENTITY/PROJECT")


class FakeRun:
    """What compare reads of a wandb.apis.public.Run."""

    def __init__(self, i: int, group: str, hidden: int, seed: int, sharpe: float):
        self.id, self.name, self.group = f"r{i}", f"lstm,hidden={hidden},seed={seed}", group
        self.job_type, self.state = "train", "finished"
        self.config = {
            "model": {"network": {"hidden_size": hidden}},
            "seed": seed,
            "data": {"seed": seed, "cache_dir": f"/c/{i}"},
            "paths": {"output_root": f"/o/{i}"},
            "overrides": [f"seed={seed}"],
        }
        self.summary_metrics = {"test/sharpe": sharpe, "_step": 4, "test/equity_curve": {}}
        self.summary_metrics["test/periods_per_year"] = 252.0
        for split in ("val", "test"):  # the per-bar returns tables a run logs
            path = f"media/table/{split}/returns_{i}.table.json"
            self.summary_metrics[f"{split}/returns"] = {"_type": "table-file", "path": path}
        self.downloads = 0

    def history(self, samples: int, pandas: bool) -> list[dict]:
        assert pandas is False
        return [{"_step": s, "trainer/global_step": s, "val/sharpe": float(s)} for s in range(3)]

    def file(self, path: str):
        run = self

        class File:
            def download(self, root: str, replace: bool = False):
                run.downloads += 1
                rng = np.random.default_rng(int(run.id[1:]))
                stamps = np.arange("2024-01-02", 300, dtype="datetime64[D]").astype(str)[:300]
                hold = np.random.default_rng(99).standard_normal(300) * 0.01
                rows = [
                    [t, float(x), float(h)]
                    for t, x, h in zip(stamps, rng.standard_normal(300) * 0.01, hold, strict=True)
                ]
                target = Path(root) / path
                target.parent.mkdir(parents=True, exist_ok=True)
                table = {"columns": ["timestamp", "strategy", "buy_and_hold"], "data": rows}
                target.write_text(json.dumps(table))
                return target.open()

        return File()


RUNS = [
    FakeRun(0, "g", 8, 0, 1.0),
    FakeRun(1, "g", 8, 1, 2.0),
    FakeRun(2, "g", 16, 0, 3.0),
    FakeRun(3, "g", 16, 1, 5.0),
    FakeRun(4, "other", 16, 0, 9.0),
]


class FakeApi:
    def __init__(self, *args, **kwargs):
        pass

    def runs(self, path, filters=None, order="+created_at", per_page=50):
        assert path == "me/proj"
        return [r for r in RUNS if not filters or r.group == filters["group"]]


def test_online_reads_a_group_through_the_wandb_api(monkeypatch, tmp_path, capsys):
    import wandb

    monkeypatch.setattr(wandb, "Api", FakeApi)
    compare.main(["g", "--online", "me/proj", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "4 runs in 2 configurations" in printed
    table = pl.read_csv(tmp_path / "comparison.csv")
    assert table.columns[:2] == [HIDDEN, "n"]
    assert table[HIDDEN].to_list() == [16, 8]
    assert table["test/sharpe mean"].to_list() == [4.0, 1.5]
    assert (tmp_path / compare.CURVES_PNG).exists()
    assert not (tmp_path / compare.EQUITY_PNG).exists()  # equity_test.csv is a local file
    # The per-bar returns come from each run's logged tables: the sweep statistics.
    assert "Deflated Sharpe ratio of the best configuration" in printed
    assert "Probability of backtest overfitting" in printed and "SPA test" in printed
    assert pl.read_csv(tmp_path / "selection.csv")["statistic"].to_list()[:2] == [
        "trials",
        "deflated_sharpe_ratio",
    ]
    with pytest.raises(SystemExit) as exit_:
        compare.main(["nope", "--online", "me/proj", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert "No runs in W&B group 'nope'" in error and "g, other" in error


# ------------------------------------------------------------------------------ functions
def _records(values: dict[tuple[int, int], float]) -> list[RunRecord]:
    """Runs with config {hidden, seed, data.seed, paths} and summary {m: value}."""
    return [
        RunRecord(
            run_id=f"{h}-{s}",
            name=f"{h}-{s}",
            config=flatten(
                {"hidden": h, "seed": s, "data": {"seed": s}, "paths": {"root": f"/r/{h}/{s}"}}
            ),
            summary={"m": v},
        )
        for (h, s), v in values.items()
    ]


def test_config_keys_flatten_and_paths_overrides_and_seeds_never_differ():
    assert flatten({"a": {"b": 1, "c": [1, "x"]}, "d": None}) == {
        "a.b": 1,
        "a.c": '[1,"x"]',
        "d": None,
    }
    configs = [
        {"lr": 0.1, "seed": 0, "data.seed": 0, "paths.output_root": "/a", "overrides": "[1]"},
        {"lr": 0.1, "seed": 1, "data.seed": 1, "data.cache_dir": "/c", "logger.group": "g"},
        {"lr": 0.01, "seed": 2, "data.seed": 2, "extra": True},
    ]
    assert differing_keys(configs) == ["lr", "extra"]
    assert differing_keys(configs[:2]) == []
    assert short_names(["model.network.hidden_size", "env.size", "model.size"]) == {
        "model.network.hidden_size": "hidden_size",
        "env.size": "env.size",
        "model.size": "model.size",
    }


def test_seed_only_runs_are_aggregated_as_mean_and_std():
    records = _records({(8, 0): 1.0, (8, 1): 3.0, (8, 2): 5.0, (16, 0): 10.0})
    keys = differing_keys([r.config for r in records])
    assert keys == ["hidden"]
    runs = runs_frame(records, keys, ["m"])
    assert runs.columns == ["run_id", "name", "folder", "hidden", "seed", "data.seed", "m"]
    table = aggregate(runs, keys, ["m"])
    assert table.to_dicts() == [
        {"hidden": "16", "n": 1, "m mean": 10.0, "m std": None},
        {"hidden": "8", "n": 3, "m mean": 3.0, "m std": 2.0},
    ]
    lowest_first = aggregate(runs, keys, ["m"], minimize=True)
    assert lowest_first["hidden"].to_list() == ["8", "16"]


def test_a_run_without_the_metric_sorts_last():
    records = _records({(8, 0): 1.0, (16, 0): 2.0, (32, 0): 0.0})
    records[2].summary = {}
    runs = runs_frame(records, ["hidden"], ["m"])
    table = aggregate(runs, ["hidden"], ["m"])
    assert table["hidden"].to_list() == ["16", "8", "32"]
    assert table["m mean"].to_list() == [2.0, 1.0, None]


def test_bootstrap_ci_of_the_best_two_is_reproducible_and_brackets_the_difference():
    records = _records({(8, 0): 1.0, (8, 1): 2.0, (8, 2): 1.5, (16, 0): 3.0, (16, 1): 4.5})
    runs = runs_frame(records, ["hidden"], ["m"])
    table = aggregate(runs, ["hidden"], ["m"])
    diff = best_two(table, runs, ["hidden"], "m")
    assert (diff.best, diff.second, diff.n_best, diff.n_second) == ("hidden=16", "hidden=8", 2, 3)
    assert diff.difference == pytest.approx(3.75 - 1.5)
    assert diff.ci == best_two(table, runs, ["hidden"], "m").ci  # same RNG seed, same interval
    lo, hi = diff.ci
    assert 0 < lo <= diff.difference <= hi
    # Every resample's difference lies between the extreme differences of the values.
    assert lo >= 3.0 - 2.0 and hi <= 4.5 - 1.0
    assert "excludes 0" in diff.sentence() and "95% bootstrap CI" in diff.sentence()


def test_with_one_run_per_configuration_the_plain_difference_is_given():
    records = _records({(8, 0): 1.0, (16, 0): 3.0})
    runs = runs_frame(records, ["hidden"], ["m"])
    table = aggregate(runs, ["hidden"], ["m"])
    diff = best_two(table, runs, ["hidden"], "m")
    assert diff.ci is None and diff.difference == 2.0
    assert ">= 2 seeds per configuration" in diff.sentence()
    assert best_two(table.head(1), runs, ["hidden"], "m") is None


def test_bootstrap_interval_of_constant_samples_is_the_difference():
    assert bootstrap_mean_difference([2.0, 2.0], [0.5, 0.5, 0.5]) == (1.5, 1.5)
    lo, hi = bootstrap_mean_difference([0.0, 1.0], [0.0, 1.0])
    assert -1.0 <= lo < 0.0 < hi <= 1.0  # symmetric samples: the interval straddles 0


def test_with_many_differing_keys_a_label_shows_where_a_configuration_departs():
    keys = [f"group.k{i}" for i in range(7)]
    columns = {k: ["1", "1", "1"] for k in keys}
    columns["group.k0"] = ["a", "b", "b"]
    columns["group.k6"] = ["1", "2", None]
    table = pl.DataFrame(columns)
    assert config_labels(table, keys) == ["k0=a", "k6=2", "k6=-"]
    assert config_labels(table, keys[:2]) == ["k0=a, k1=1", "k0=b, k1=1", "k0=b, k1=1"]
    assert config_labels(pl.DataFrame({"n": [1]}), []) == ["all runs"]
