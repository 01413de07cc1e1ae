"""What a finished run reports (experiments.run.report and .evidence): intervals and the
verdict in the printed table, metrics.json and the W&B summary; per-bar returns of validation
and test; trade journals that reconcile with the equity curve."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
from helpers.cli import TINY, TINY_AGENT, read_metrics, run_app, run_folders

from envs.metrics import compute_metrics

AGENT = [
    *TINY_AGENT,
    "export.enabled=false",
    "env.risk.loss_cut=0.002",  # stops end test episodes early: the journal closes at the close
]


@pytest.fixture(scope="module", params=["lstm", "ppo"])
def run(request, tmp_path_factory):
    """A forecaster run and an agent run, their folder and what they printed."""
    out = tmp_path_factory.mktemp(request.param) / "outputs"
    extra = TINY if request.param == "lstm" else AGENT
    done = run_app(f"+model={request.param}", *extra, "statistics.reps=300", output_root=out)
    assert done.returncode == 0, done.stderr[-3000:]
    (folder,) = run_folders(out)
    return request.param, folder, done.stdout


def test_the_test_table_shows_intervals_and_the_verdict(run):
    model, _, printed = run
    assert "sharpe" in printed and "psr" in printed
    start = printed.index("│ sharpe ")
    table = printed[start : printed.index("└", start)]
    assert table.count("[") >= 8  # four metrics with intervals, for the model and buy-and-hold
    assert f"{model} beats buy-and-hold" in printed or f"{model} does not beat" in printed
    assert "one-sided at 95%; stationary bootstrap of the test split" in printed
    assert "300 resamples" in printed and "Trades (test):" in printed


def test_metrics_json_keeps_intervals_psr_and_the_verdict_for_validation_and_test(run):
    _, folder, _ = run
    metrics = read_metrics(folder)
    for split in ("val", "test"):
        stats = metrics["statistics"][split]
        ours = stats["intervals"]["strategy"]["sharpe"]
        assert ours["value"] == pytest.approx(metrics[split]["strategy"]["sharpe"], rel=1e-12)
        assert ours["low"] <= ours["value"] <= ours["high"]
        assert 0 <= stats["psr_vs_zero"]["strategy"] <= 1
        assert stats["beats_buy_and_hold"] in (True, False)
        assert stats["seed"] == 42 and stats["resamples"] == 300  # the run's seed by default
        assert "buy_and_hold" in stats["intervals"]
    assert metrics["trades"]["test"]["trades"] >= 1


def test_per_bar_returns_of_validation_and_test_are_kept_and_give_the_metrics(run):
    _, folder, _ = run
    metrics = read_metrics(folder)
    for split in ("val", "test"):
        frame = pl.read_csv(folder / f"returns_{split}.csv", try_parse_dates=True)
        assert frame["timestamp"].dtype == pl.Datetime and frame["timestamp"].is_sorted()
        for series, values in metrics[split].items():
            got = compute_metrics(
                __import__("torch").as_tensor(frame[series].to_numpy()), metrics["periods_per_year"]
            )
            expected = values["total_return"]
            assert float(got["total_return"]) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_the_trade_journal_reconciles_with_the_equity_curve(run):
    _, folder, _ = run
    trades = pl.read_csv(folder / "trades_test.csv", try_parse_dates=True)
    equity = pl.read_csv(folder / "equity_test.csv")["strategy"].to_numpy()
    total = equity[-1] - equity[0]
    summed = math.fsum(trades["pnl"].to_list())
    assert abs(summed - total) <= 1e-9 * max(abs(total), 1e-9 * equity[0]), (summed, total)
    assert set(trades["status"]) <= {"closed", "open"}
    closed = trades.filter(pl.col("status") == "closed")
    assert (closed["exit_bar"] >= closed["entry_bar"]).all()
    assert (closed["entry_time"] <= closed["exit_time"]).all()
    costs = closed.select(pl.sum_horizontal("commission", "spread", "slippage", "impact"))
    assert np.allclose(costs.to_series().to_numpy(), closed["costs"].to_numpy())
    summary = read_metrics(folder)["trades"]["test"]
    assert summary["trades"] == closed.height
    if closed.height:
        assert summary["win_rate"] == pytest.approx((closed["pnl"] > 0).mean())


def test_the_wandb_summary_has_the_intervals_and_tables(run):
    from experiments.compare.offline import read_run

    _, folder, _ = run
    (wandb_run,) = [p for p in (folder / "wandb").glob("offline-run-*")]
    summary = read_run(wandb_run)["summary"]
    for key in ("test/sharpe_low", "test/sharpe_high", "test/psr", "val/sharpe_low"):
        assert isinstance(summary[key], float)
    assert summary["test/beats_buy_and_hold"] in (0.0, 1.0)
    assert summary["test/returns"]["_type"] == "table-file"
    assert summary["test/trades"]["_type"] == "table-file"
    table = json.loads((wandb_run / "files" / summary["test/returns"]["path"]).read_text())
    assert table["columns"][:2] == ["timestamp", "strategy"]
