"""Smoke test of bench/train_throughput.py: a --quick run, as a user starts it, writes its rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "train_throughput.py"


@pytest.mark.slow
def test_quick_run_writes_rows(tmp_path: Path) -> None:
    pytest.importorskip("stable_baselines3")
    pytest.importorskip("gym_anytrading")
    out = tmp_path / "train_bench.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,  # nothing may be written beside the caller
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "frames/s" in proc.stdout and "target PPO" in proc.stdout

    report = json.loads(out.read_text())
    rows = report["rows"]
    assert [r for r in rows if r["error"]] == []
    kinds = {(r["system"], r["algorithm"]) for r in rows}
    assert kinds == {("SB3", "ppo"), ("ours", "ppo"), ("SB3", "dqn"), ("ours", "dqn")}
    ours_envs = [r["num_envs"] for r in rows if r["system"] == "ours" and r["algorithm"] == "ppo"]
    assert ours_envs == [64, 256]
    for r in rows:
        assert r["frames"] > 0 and r["seconds"] > 0
        assert r["frames_per_s"] == pytest.approx(r["frames"] / r["seconds"])
        assert r["vs_sb3"] > 0
        assert "others_cpu" in r
        assert set(r["time_split"]) == {"collect", "learn", "other"}
        # Equal sample reuse on both sides: 4 PPO epochs; 8 replayed transitions per frame.
        assert r["reuse"] == pytest.approx(4.0 if r["algorithm"] == "ppo" else 8.0, rel=0.05)

    sb3_ppo = [r for r in rows if r["system"] == "SB3" and r["algorithm"] == "ppo"]
    # SB3's second row runs at its largest minibatch: its whole 8 x 64-frame rollout.
    assert [r["settings"]["batch_size"] for r in sb3_ppo] == [64, 512]
    assert sb3_ppo[0]["vs_sb3"] == pytest.approx(1.0)
    ours_ppo = [r for r in rows if r["system"] == "ours" and r["algorithm"] == "ppo"]
    assert all(r["vs_sb3_same_mb"] > 0 for r in ours_ppo)
    # minibatch auto: a quarter of each iteration's frames (num_envs x 64 steps)
    assert [r["minibatch"] for r in ours_ppo] == [e * 64 // 4 for e in ours_envs]

    targets = {t["algorithm"]: t for t in report["targets"]}
    assert set(targets) == {"ppo", "dqn"}
    assert targets["ppo"]["target"] == 25.0 and targets["dqn"]["target"] == 10.0
    for t in targets.values():  # no verdict (None) when a busy machine spoiled every run
        assert t["row"] is not None and t["whole_run_ratio"] > 0
        assert t["met"] is None if t["ratio"] is None else t["met"] == (t["ratio"] >= t["target"])
    assert not list(tmp_path.glob("lightning_logs"))
