"""Smoke tests of the speed benches (bench/backtest.py, bench/compare_read.py,
bench/env_throughput.py): a small run, as a user starts it, prints its table and its targets
and writes its rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def bench(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        cwd=cwd,  # nothing may be written beside the caller
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done


@pytest.mark.slow
def test_backtest_bench_prices_like_vectorbt(tmp_path: Path) -> None:
    pytest.importorskip("vectorbt")
    out = tmp_path / "backtest.json"
    done = bench("backtest.py", "--quick", "--json", str(out), cwd=tmp_path)
    assert "vs vectorbt warm" in done.stdout and "target ours" in done.stdout
    report = json.loads(out.read_text())
    checks = report["checks"]
    assert checks["equity_vs_vectorbt_max_rel"] < 1e-9  # the bound, impact off
    assert checks["compiled_vs_eager_equity_max_rel"] < 1e-12
    assert checks["metrics_vs_empyrical_max_rel"] < 1e-9
    assert checks["trades_per_path"] > 0
    variants = {(r["what"], r["variant"]) for r in report["rows"]}
    assert ("ours, all frictions", "compiled, warm") in variants
    assert ("vectorbt, commission only", "warm") in variants
    assert all(r["seconds"] > 0 for r in report["rows"])
    assert list(tmp_path.iterdir()) == [out]


@pytest.mark.slow
def test_compare_read_bench_times_the_whole_command(tmp_path: Path) -> None:
    out = tmp_path / "compare.json"
    done = bench("compare_read.py", "--runs", "5", "--json", str(out), cwd=tmp_path)
    assert "python -m experiments.compare" in done.stdout
    rows = {r["what"]: r["seconds"] for r in json.loads(out.read_text())["rows"]}
    assert len(rows) == 3 and all(s > 0 for s in rows.values())
    whole = next(s for w, s in rows.items() if "whole command" in w)
    alone = next(s for w, s in rows.items() if "reading alone (load_offline" in w)
    assert alone < whole


@pytest.mark.slow
def test_env_bench_marks_the_default_path_and_checks_the_targets(tmp_path: Path) -> None:
    pytest.importorskip("gym_anytrading")
    out = tmp_path / "env.json"
    args = ["--envs", "64", "--seconds", "0.2", "--compile-min-envs", "100000", "--json", str(out)]
    done = bench("env_throughput.py", *args, cwd=tmp_path)
    assert "target default dual_ticker at 4096 envs" in done.stdout
    report = json.loads(out.read_text())
    ours = [r for r in report["rows"] if r["env"].startswith("ours")]
    defaults = [r for r in ours if r["default"]]
    # At 64 envs the default (env.compile=auto) is the eager step, one row per env.
    assert {r["env"] for r in defaults} == {
        "ours single_ticker",
        "ours dual_ticker",
        "ours portfolio",
    }
    assert all(r["variant"] == "eager" and r["steps_per_s"] > 0 for r in defaults)
    targets = report["meta"]["targets"]
    assert [t["num_envs"] for t in targets] == [4096, 65536, 4096]
    assert all(t["value"] is None and t["met"] is None for t in targets)  # 4096 not measured


def test_env_bench_judges_the_minimal_env_targets_on_the_median_of_its_paired_rounds() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import env_throughput as eb
    finally:
        sys.path.remove(str(ROOT / "bench"))
    ours = eb.row("ours dual_ticker", "cpu", 4096, "compiled", default=True, steps_per_s=1.0)
    ours.update(vs_minimal_compiled=0.42, vs_anytrading=50.0)
    paired = [{"num_envs": 4096, "ratios": [0.48, 0.52, 0.55], "median": 0.52}]
    paired[0].update(low=0.48, high=0.55)
    at_4096, at_65536, vs_gym = eb.check_targets([ours], paired)
    assert at_4096["value"] == 0.52 and at_4096["window"] == 0.42 and at_4096["met"] is True
    assert at_4096["paired"] is paired[0]
    assert at_65536["value"] is None and at_65536["met"] is None  # not measured
    assert vs_gym["value"] == 50.0 and vs_gym["paired"] is None  # a single row's ratio
    # Without paired rounds the table's own ratio is judged.
    assert eb.check_targets([ours])[0]["value"] == 0.42
