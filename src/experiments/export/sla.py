"""The deployment gate (``export.sla.*``): what a desk checks before a model goes live,
measured on the bundle just exported and on the run's own files, one line per check.

- ``latency_p99_us``: p99 of one input through ``Policy.load`` / ``Forecaster.load`` (the
  runtime a user gets: ONNX Runtime when installed), microseconds, over ``latency_calls``
  calls after 200 warm-up calls, in this process;
- ``load_s`` and ``peak_memory_mb``: import of the inference API, load and first call in a
  fresh Python process, seconds, and that process's peak resident memory (``VmHWM``), MB;
- ``test_max_drawdown``: the test split's maximum drawdown (``metrics.json``), a positive
  fraction;
- ``test_sharpe`` and ``test_sharpe_low``: the test Sharpe ratio and the lower end of its
  bootstrap interval (``metrics.json["statistics"]["test"]["intervals"]["strategy"]
  ["sharpe"]["low"]``);
- ``env_steps_per_s``: env steps per second while collecting (``train/collect_fps`` in
  ``learning_curves.csv``, median over iterations; agents only).

A line without a threshold passes (``passed`` None: measured only); a threshold whose value
could not be measured fails. :func:`gate` returns the block written to metadata.json as
``sla``; :func:`refusal` the one paragraph an enforced gate fails with.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from experiments.config.schema import SLASettings

WARMUP_CALLS = 200
LOAD_TIMEOUT_S = 120
# Import, load and first call in a fresh process: seconds and peak resident memory (MB).
LOAD_PROBE = """
import json, resource, sys, time
import numpy as np
start = time.perf_counter()
from experiments.inference import Forecaster, Policy
bundle_kind = sys.argv[2]
model = (Policy if bundle_kind == "agent" else Forecaster).load(sys.argv[1])
shapes = [tuple(i["shape"][1:]) for i in model.metadata["formats"]["onnx"]["inputs"]]
inputs = [np.zeros(s, np.float32) for s in shapes]
model(inputs[0]) if bundle_kind == "agent" else model(*inputs)
seconds = time.perf_counter() - start
try:  # the high-water mark of this process's memory (ru_maxrss would carry the parent's)
    with open("/proc/self/status") as fh:
        peak_mb = next(int(l.split()[1]) for l in fh if l.startswith("VmHWM")) / 1024
except (OSError, StopIteration):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_mb = peak / 1024 if sys.platform != "darwin" else peak / 2**20
print(json.dumps({"load_s": seconds, "peak_memory_mb": peak_mb}))
"""


@dataclass(frozen=True)
class Check:
    """One line of the gate: the measured ``value`` (None: not measured, with ``note``),
    its ``unit``, the threshold (None: none) and whether it must be at most or at least it."""

    name: str
    value: float | None
    unit: str
    threshold: float | None
    at_most: bool
    note: str = ""

    @property
    def passed(self) -> bool | None:
        if self.threshold is None:
            return None
        if self.value is None or not math.isfinite(self.value):
            return False
        return self.value <= self.threshold if self.at_most else self.value >= self.threshold

    @property
    def rule(self) -> str:
        if self.threshold is None:
            return "no threshold"
        return f"{'<=' if self.at_most else '>='} {self.threshold:g} {self.unit}".strip()

    def as_json(self) -> dict:
        return {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "threshold": self.threshold,
            "rule": self.rule,
            "passed": self.passed,
            **({"note": self.note} if self.note and self.value is None else {}),
        }

    def words(self) -> str:
        shown = "not measured" if self.value is None else f"{self.value:.4g} {self.unit}".strip()
        why = f" ({self.note})" if self.note and self.value is None else ""
        return f"{self.name} {shown}{why}, needs {self.rule}"


def latency_p99_us(bundle: Path, bundle_kind: str, calls: int) -> float:
    """p99 latency of one input through the inference API, microseconds."""
    from experiments.inference import Forecaster, Policy

    model = (Policy if bundle_kind == "agent" else Forecaster).load(bundle)
    shapes = [tuple(i["shape"][1:]) for i in model.metadata["formats"]["onnx"]["inputs"]]
    inputs = [np.zeros(s, np.float32) for s in shapes]
    args = inputs[:1] if bundle_kind == "agent" else inputs

    def one() -> None:
        model(*args)
        if bundle_kind == "agent":
            model.reset()

    for _ in range(WARMUP_CALLS):
        one()
    times = np.empty(calls)
    clock = time.perf_counter_ns
    for i in range(calls):
        t0 = clock()
        one()
        times[i] = clock() - t0
    return float(np.percentile(times, 99) / 1e3)


def fresh_load(bundle: Path, bundle_kind: str) -> dict:
    """``{"load_s", "peak_memory_mb"}`` of a fresh process loading the bundle (see
    :data:`LOAD_PROBE`); raises ``RuntimeError`` with its stderr when it fails."""
    import os

    src = str(Path(__file__).resolve().parents[2])  # the folder holding experiments/
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, "-c", LOAD_PROBE, str(bundle), bundle_kind],
        capture_output=True,
        text=True,
        timeout=LOAD_TIMEOUT_S,
        env=env,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "")
    return json.loads(done.stdout.strip().splitlines()[-1])


def collect_rate(run_dir: Path) -> float | None:
    """Median ``train/collect_fps`` over the iterations in ``learning_curves.csv``."""
    path = Path(run_dir) / "learning_curves.csv"
    if not path.is_file():
        return None
    with open(path, newline="") as fh:
        rates = [
            float(r["train/collect_fps"]) for r in csv.DictReader(fh) if r.get("train/collect_fps")
        ]
    return float(np.median(rates)) if rates else None


def test_numbers(run_dir: Path) -> dict[str, float | None]:
    """The test split's max drawdown (positive), Sharpe and its interval's lower end."""
    path = Path(run_dir) / "metrics.json"
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"drawdown": None, "sharpe": None, "low": None}
    strategy = (metrics.get("test") or {}).get("strategy") or {}
    interval = (((metrics.get("statistics") or {}).get("test") or {}).get("intervals") or {}).get(
        "strategy", {}
    ).get("sharpe") or {}
    dd = strategy.get("max_drawdown")
    return {
        "drawdown": abs(float(dd)) if dd is not None else None,
        "sharpe": _float(strategy.get("sharpe")),
        "low": _float(interval.get("low")),
    }


def _float(value) -> float | None:
    return float(value) if value is not None else None


def gate(bundle: Path, run_dir: Path, bundle_kind: str, settings: SLASettings) -> dict:
    """Measure every check on ``bundle`` (an export folder of ``bundle_kind``: agent |
    forecaster) and the run's files; the ``sla`` block of metadata.json."""
    started = time.perf_counter()
    notes: dict[str, str] = {}
    try:
        latency = latency_p99_us(bundle, bundle_kind, settings.latency_calls)
    except Exception as err:  # noqa: BLE001 - a failed measurement is a failed line
        latency, notes["latency"] = None, f"{type(err).__name__}: {err}"
    try:
        loaded = fresh_load(bundle, bundle_kind)
    except (RuntimeError, subprocess.TimeoutExpired, ValueError, IndexError) as err:
        loaded, notes["load"] = {}, f"the fresh process failed: {err}"
    numbers = test_numbers(run_dir)
    steps = collect_rate(run_dir) if bundle_kind == "agent" else None
    s = settings
    checks = [
        Check("latency_p99_us", latency, "us", s.max_latency_us, True, notes.get("latency", "")),
        Check("load_s", loaded.get("load_s"), "s", s.max_load_s, True, notes.get("load", "")),
        Check(
            "peak_memory_mb",
            loaded.get("peak_memory_mb"),
            "MB",
            s.max_memory_mb,
            True,
            notes.get("load", ""),
        ),
        Check(
            "test_max_drawdown", numbers["drawdown"], "", s.max_drawdown, True, "no metrics.json"
        ),
        Check("test_sharpe", numbers["sharpe"], "", s.min_sharpe, False, "no test Sharpe ratio"),
        Check(
            "test_sharpe_low",
            numbers["low"],
            "",
            s.min_sharpe_low,
            False,
            "no bootstrap interval in metrics.json",
        ),
        Check(
            "env_steps_per_s",
            steps,
            "steps/s",
            s.min_steps_per_s,
            False,
            "agents only: no learning_curves.csv with train/collect_fps",
        ),
    ]
    passed = all(c.passed is not False for c in checks)
    return {
        "enforce": bool(s.enforce),
        "passed": passed,
        "checks": [c.as_json() for c in checks],
        "failed": [c.words() for c in checks if c.passed is False],
        "seconds": round(time.perf_counter() - started, 3),
    }


def summary(sla: dict | None) -> str:
    """``; deployment gate ...`` for the export's log line ('' when not measured)."""
    if not sla:
        return ""
    values = {c["name"]: c["value"] for c in sla["checks"]}

    def num(name: str, fmt: str) -> str:
        v = values.get(name)
        return "n/a" if v is None else format(v, fmt)

    state = "passed" if sla["passed"] else ("FAILED" if sla["enforce"] else "missed (not enforced)")
    return (
        f"; deployment gate {state}: p99 {num('latency_p99_us', '.1f')} us, load "
        f"{num('load_s', '.2f')} s, {num('peak_memory_mb', '.0f')} MB peak"
    )


def refusal(sla: dict, kept: Path) -> str:
    """The paragraph an enforced gate fails with."""
    return (
        f"The export misses its deployment gate (export.sla.enforce=true): "
        f"{'; '.join(sla['failed'])}. The bundle was not published as export/; it is kept, "
        f"with the measurement in its metadata.json, in {kept}. Relax the thresholds in "
        "export.sla, or improve the model."
    )
