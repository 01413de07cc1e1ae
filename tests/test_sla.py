"""The deployment gate ``export.sla.*``: measured at every export (p99 latency through
Policy.load, load time and peak memory in a fresh process, test drawdown, Sharpe and its
interval's lower end, env steps/s) and written to metadata.json with pass/fail per line; shown
in report.html; with ``enforce=true`` a missed threshold fails the export with one paragraph
and publishes no export/."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
from helpers.cli import TINY_AGENT, run_app, run_folders
from helpers.configs import compose

from datamodules.errors import ConfigError
from experiments.config.job import check_job
from experiments.config.schema import SLASettings
from experiments.export import sla

RUN = ["+model=ppo", "env=dual_ticker", *TINY_AGENT, "quiet=true", "logger=none"]
CHECKS = [
    "latency_p99_us",
    "load_s",
    "peak_memory_mb",
    "test_max_drawdown",
    "test_sharpe",
    "test_sharpe_low",
    "env_steps_per_s",
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A run exported with the default gate: measured, no threshold."""
    out = tmp_path_factory.mktemp("sla") / "outputs"
    done = run_app(*RUN, output_root=out)
    assert done.returncode == 0, done.stderr[-3000:]
    (folder,) = run_folders(out)
    return folder


def lines(meta: dict) -> dict[str, dict]:
    return {c["name"]: c for c in meta["sla"]["checks"]}


def test_every_export_measures_the_gate_into_metadata_json(exported):
    meta = json.loads((exported / "export" / "metadata.json").read_text())
    gate = lines(meta)
    assert list(gate) == CHECKS
    assert meta["sla"]["passed"] and not meta["sla"]["enforce"]
    assert all(c["passed"] is None and c["threshold"] is None for c in gate.values())
    assert 0 < gate["latency_p99_us"]["value"] < 1e5
    assert 0 < gate["load_s"]["value"] < 60
    assert 20 < gate["peak_memory_mb"]["value"] < 4000  # the fresh process's own peak
    metrics = json.loads((exported / "metrics.json").read_text())
    test = metrics["test"]["strategy"]
    assert gate["test_max_drawdown"]["value"] == pytest.approx(abs(test["max_drawdown"]))
    assert gate["test_sharpe"]["value"] == pytest.approx(test["sharpe"])
    low = metrics["statistics"]["test"]["intervals"]["strategy"]["sharpe"]["low"]
    assert gate["test_sharpe_low"]["value"] == pytest.approx(low)
    with open(exported / "learning_curves.csv", newline="") as fh:
        rates = [float(r["train/collect_fps"]) for r in csv.DictReader(fh)]
    assert gate["env_steps_per_s"]["value"] == pytest.approx(statistics.median(rates))


def test_the_report_shows_the_gate_of_the_export(exported):
    text = (exported / "report.html").read_text()
    assert "export/: export.sla passed; not enforced" in text
    meta = json.loads((exported / "export" / "metadata.json").read_text())
    shown = f'data-key="sla.latency_p99_us.value">{lines(meta)["latency_p99_us"]["value"]:.4f}<'
    assert shown in text


def test_each_threshold_passes_or_fails_its_line(exported):
    bundle = exported / "export"
    measured = lines(json.loads((bundle / "metadata.json").read_text()))
    sharpe = measured["test_sharpe"]["value"]
    strict = SLASettings(
        max_latency_us=1e6,
        max_load_s=60,
        max_memory_mb=8000,
        max_drawdown=1.0,
        min_sharpe=sharpe + 1.0,  # missed
        min_sharpe_low=-1e6,
        min_steps_per_s=1.0,
        latency_calls=200,
    )
    gate = sla.gate(bundle, exported, "agent", strict)
    verdicts = {c["name"]: c["passed"] for c in gate["checks"]}
    assert verdicts == {**dict.fromkeys(CHECKS, True), "test_sharpe": False}
    assert not gate["passed"]
    assert gate["failed"] == [f"test_sharpe {sharpe:.4g}, needs >= {sharpe + 1.0:g}"]


def test_a_threshold_that_cannot_be_measured_fails(exported, tmp_path):
    # A run folder without learning curves or metrics (an export from elsewhere).
    gate = sla.gate(exported / "export", tmp_path, "agent", SLASettings(min_steps_per_s=1.0))
    (steps,) = [c for c in gate["checks"] if c["name"] == "env_steps_per_s"]
    assert steps["value"] is None and steps["passed"] is False and "agents only" in steps["note"]
    assert not gate["passed"]


def test_a_policy_missing_its_latency_fails_the_export_under_enforce(tmp_path):
    out = tmp_path / "outputs"
    done = run_app(
        *RUN, "export.sla.max_latency_us=0.01", "export.sla.enforce=true", output_root=out
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    (message,) = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert "misses its deployment gate (export.sla.enforce=true): latency_p99_us" in message
    assert "needs <= 0.01 us" in message
    (folder,) = run_folders(out)
    assert not (folder / "export").exists()  # nothing published
    kept = json.loads((folder / "export-failed-sla" / "metadata.json").read_text())
    assert lines(kept)["latency_p99_us"]["passed"] is False and not kept["sla"]["passed"]
    assert "export-failed-sla/: export.sla failed" in (folder / "report.html").read_text()


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("export.sla.max_drawdown=1.5", "export.sla.max_drawdown is 1.5"),
        ("export.sla.max_latency_us=-3", "export.sla.max_latency_us is -3"),
        ("export.sla.latency_calls=10", "export.sla.latency_calls is 10"),
    ],
)
def test_a_bad_threshold_is_refused_before_anything_runs(override, needle):
    with pytest.raises(ConfigError) as err:
        check_job(compose("+model=ppo", override))
    assert needle in str(err.value) and "\n" not in str(err.value).strip()
