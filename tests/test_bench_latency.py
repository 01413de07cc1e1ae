"""Smoke test of bench/latency.py: the quick run prints the table and writes every row."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_latency_bench_writes_a_row_per_runtime_and_load_rows(tmp_path):
    out = tmp_path / "latency.json"
    done = subprocess.run(
        [sys.executable, "bench/latency.py", "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Policy.load (onnxruntime)" in done.stdout
    report = json.loads(out.read_text())
    runtimes = {(r["model"], r["runtime"]) for r in report["latency"]}
    assert ("ppo", "numpy MLP (floor)") in runtimes and ("lstm", "TorchScript") in runtimes
    assert all(r["p50_us"] > 0 and r["p99_us"] >= r["p50_us"] for r in report["latency"])
    assert {r["runtime"] for r in report["load"]} == {"onnxruntime", "torchscript"}
