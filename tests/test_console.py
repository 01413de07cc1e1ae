"""What a run prints: the metrics table stays one line per metric in a log or a pipe."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
from experiments.run.console import metrics_table
columns = {name: {"sharpe": 1.2345, "total_return": -0.0123} for name in
           ("lstm", "buy_and_hold", "flat", "equal_weight")}
bounds = {name: {"sharpe": (-1.23, 3.45)} for name in columns}
metrics_table("lstm on NVDA, MSFT (synthetic, 15min) - test split", columns,
              ["sharpe", "total_return"], bounds)
"""


def test_the_metrics_table_is_one_line_per_metric_when_piped() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    sharpe = [line for line in lines if "sharpe" in line]
    assert len(sharpe) == 1 and sharpe[0].count("1.2345 [-1.23, 3.45]") == 4
    assert 80 < max(len(line) for line in lines) <= 160  # wider than rich's 80 columns
