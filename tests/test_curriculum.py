"""Curricula from the command line: phases run in order as their own W&B runs in one group,
each phase's config is the run's config plus exactly its overrides, weights and optimizer state
carry over (across shape changes too), and an interrupted curriculum resumes where it stopped."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import warm
from helpers.cli import TINY, app_env, ctrl_c_once, run_app
from omegaconf import OmegaConf

from datamodules.errors import ConfigError
from experiments.compare.offline import offline_runs, read_run
from experiments.curriculum.phases import parse_phases
from modules.agents.ppo import PPOModule
from modules.forecasters.module import ForecastModule

AGENT = [
    "data.synthetic.sessions=60",
    "env.num_envs=8",
    "model.collector.frames_per_env=16",
    "model.eval.every_n_iterations=1",
    "model.checkpoint.every_n_iterations=1",
    "print_config=false",
    "quiet=true",
    "export.enabled=false",  # export has its own tests (test_export.py)
]
PHASES = ["nvda_focus", "balanced", "portfolio"]


def _root(out: Path) -> Path:
    (root,) = [p.parent for p in out.rglob("curriculum.json")]
    return root


def _flat(path: Path) -> dict:
    """A resolved_config.yaml as {dotted.key: value}."""

    def walk(node, prefix=""):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from walk(v, f"{prefix}{k}.")
        else:
            yield prefix[:-1], node

    return dict(walk(yaml.safe_load(path.read_text())))


def _phase_end(folder: Path) -> dict:
    return torch.load(folder / "phase_end.pt", weights_only=True)


@pytest.fixture(scope="module")
def three_phase(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("three_phase") / "outputs"
    done = run_app(
        "+model=ppo",
        "env=dual_ticker",
        "curriculum=dual_ticker_3phase",
        "curriculum.scale=0.02",
        *AGENT,
        output_root=out,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return _root(out)


def test_dual_ticker_3phase_runs_every_phase_as_its_own_wandb_run_in_one_group(three_phase):
    folders = sorted((three_phase / "phases").iterdir())
    assert [f.name for f in folders] == [f"0{i + 1}_{n}" for i, n in enumerate(PHASES)]
    for folder in folders:
        assert (folder / "metrics.json").exists() and (folder / "phase_end.pt").exists()
    runs = [read_run(r) for r in offline_runs(three_phase)]
    assert sorted(r["job_type"] for r in runs) == sorted(PHASES)
    assert len({r["group"] for r in runs}) == 1
    assert runs[0]["group"].startswith("dual_ticker_3phase-")
    state = json.loads((three_phase / "curriculum.json").read_text())
    assert [p["status"] for p in state["phases"]] == ["done"] * 3


def test_compare_of_a_curriculum_gives_the_sweep_statistics_of_its_phases(three_phase, tmp_path):
    from helpers.cli import run_compare

    done = run_compare(str(three_phase / "phases"), "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    # Each phase is one configuration (one trial): deflated Sharpe over 3 trials, PBO, SPA.
    assert "3 runs in 3 configurations" in done.stdout
    assert (
        "after 3 trials" in done.stdout and "SPA test (Hansen) of 3 configurations" in done.stdout
    )
    assert "Probability of backtest overfitting" in done.stdout
    assert (tmp_path / "selection.csv").exists()


def test_the_global_step_continues_across_phases(three_phase):
    state = json.loads((three_phase / "curriculum.json").read_text())
    ends = [p["global_step"] for p in state["phases"]]
    assert ends[0] > 0 and ends[0] < ends[1] < ends[2]
    runs = {r["job_type"]: r for r in map(read_run, offline_runs(three_phase))}
    # Each phase's W&B steps start where the previous phase ended.
    for previous, phase in zip(PHASES, PHASES[1:], strict=False):
        end = next(p["global_step"] for p in state["phases"] if p["name"] == previous)
        assert runs[phase]["summary"]["trainer/global_step"] >= end


def test_each_phase_config_is_the_run_config_plus_exactly_its_overrides(three_phase):
    base = _flat(three_phase / "resolved_config.yaml")
    for folder in sorted((three_phase / "phases").iterdir()):
        applied = yaml.safe_load((folder / "overrides.yaml").read_text())
        expected = {}
        for override in applied:
            key, value = override.split("=", 1)
            expected[key] = yaml.safe_load(value)
        phase = _flat(folder / "resolved_config.yaml")
        differing = {
            k for k in base.keys() | phase.keys() if base.get(k) != phase.get(k) and k != "resume"
        }
        assert differing == {k for k, v in expected.items() if base.get(k) != v}, folder.name
        for key, value in expected.items():
            assert phase[key] == value, (folder.name, key)
    weights = [
        yaml.safe_load((f / "resolved_config.yaml").read_text())["env"]["reward"]["weights"]
        for f in sorted((three_phase / "phases").iterdir())
    ]
    assert weights == [[0.8, 0.2], [0.5, 0.5], [0.4, 0.6]]


def test_weights_are_carried_into_every_later_phase(three_phase):
    first, second, third = sorted((three_phase / "phases").iterdir())
    for folder in (second, third):
        carry = json.loads((folder / "carry.json").read_text())
        assert carry["copied"] > 0 and carry["fresh"] == [] and carry["remapped"] == []
    assert not (first / "carry.json").exists()
    # Training went on from the carried weights: each phase ends elsewhere than the last.
    a, b = _phase_end(first)["state_dict"], _phase_end(second)["state_dict"]
    assert not torch.equal(a["policy_net.head.weight"], b["policy_net.head.weight"])


def test_resuming_a_finished_curriculum_runs_nothing_again(three_phase):
    before = {f: (f / "metrics.json").stat().st_mtime for f in (three_phase / "phases").iterdir()}
    runs = offline_runs(three_phase)
    out = three_phase.parents[2]
    done = run_app(
        "+model=ppo",
        "env=dual_ticker",
        "curriculum=dual_ticker_3phase",
        "curriculum.scale=0.02",
        *AGENT,
        f"resume={three_phase}",
        output_root=out,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    after = {f: (f / "metrics.json").stat().st_mtime for f in (three_phase / "phases").iterdir()}
    assert after == before
    assert offline_runs(three_phase) == runs


CUSTOM = """
name: carry_check
scale: 1.0
phases:
  - name: learn
    iterations: 2
    overrides: ["env.tickers=[NVDA]"]
  - name: frozen
    iterations: 2
    overrides: ["env.tickers=[NVDA]", "model.optim.actor_lr=0.0", "model.optim.critic_lr=0.0"]
  - name: add_msft
    iterations: 1
    overrides: ["env.tickers=[NVDA,MSFT]"]
"""


@pytest.fixture(scope="module")
def custom(tmp_path_factory) -> Path:
    """A user's own curriculum, found through hydra.searchpath: one ticker, then two."""
    base = tmp_path_factory.mktemp("custom")
    conf = base / "conf" / "curriculum"
    conf.mkdir(parents=True)
    (conf / "carry_check.yaml").write_text(CUSTOM)
    out = base / "outputs"
    done = run_app(
        "+model=ppo",
        "curriculum=carry_check",
        f"hydra.searchpath=[file://{base / 'conf'}]",
        "logger=none",
        *AGENT,
        output_root=out,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return _root(out)


def test_a_phase_that_does_not_learn_ends_with_the_weights_it_was_given(custom):
    learn, frozen, _ = sorted((custom / "phases").iterdir())
    a, b = _phase_end(learn), _phase_end(frozen)
    for key, value in a["state_dict"].items():
        if value.dim() > 0:
            assert torch.equal(b["state_dict"][key], value), key


def test_the_optimizer_state_continues_into_the_next_phase(custom):
    learn, frozen, _ = sorted((custom / "phases").iterdir())
    a, b = _phase_end(learn)["optimizers"], _phase_end(frozen)["optimizers"]
    steps_a = float(a[0]["state"][0]["step"])
    steps_b = float(b[0]["state"][0]["step"])
    assert steps_a > 0 and steps_b > steps_a  # Adam's step count went on, not restarted


def test_a_phase_adding_a_ticker_starts_new_inputs_at_zero_and_new_actions_neutral(custom):
    _, frozen, dual = sorted((custom / "phases").iterdir())
    carry = json.loads((dual / "carry.json").read_text())
    assert "held.MSFT" in carry["new_inputs"] and carry["dropped_inputs"] == []
    assert set(carry["new_actions"]) >= {"MSFT=+1", "MSFT=-1", "NVDA=+1,MSFT=+1"}
    assert any(k.endswith("trunk.encoder.0.weight") for k in carry["remapped"])
    assert any(k.endswith("head.weight") for k in carry["remapped"])
    assert carry["fresh"] == []
    # The dual-ticker phase trained one iteration; its logits for the old actions still come
    # from the carried rows, and the net reads 26 inputs where it read 13.
    before, after = _phase_end(frozen), _phase_end(dual)
    assert before["state_dict"]["policy_net.trunk.encoder.0.weight"].shape[1] == 13
    assert after["state_dict"]["policy_net.trunk.encoder.0.weight"].shape[1] == 26
    assert after["state_dict"]["policy_net.head.weight"].shape[0] == 9


def test_the_forecaster_curriculum_fine_tunes_hourly_weights_on_5min_bars(out):
    done = run_app(
        "+model=lstm",
        "curriculum=forecaster_1h_to_5min",
        "curriculum.scale=0.25",
        *TINY,
        "logger=none",
        output_root=out,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    root = _root(out)
    hourly, fine = sorted((root / "phases").iterdir())
    assert yaml.safe_load((hourly / "resolved_config.yaml").read_text())["data"]["bar_size"] == "1h"
    assert yaml.safe_load((fine / "resolved_config.yaml").read_text())["data"]["bar_size"] == "5min"
    carry = json.loads((fine / "carry.json").read_text())
    assert carry["copied"] > 0 and carry["fresh"] == []
    assert json.loads((fine / "metrics.json").read_text())["test"]["strategy"]


def test_a_phase_override_of_an_unknown_key_is_refused_naming_the_phase(tmp_path, out):
    conf = tmp_path / "conf" / "curriculum"
    conf.mkdir(parents=True)
    (conf / "typo.yaml").write_text(
        "name: typo\nscale: 1.0\nphases:\n"
        "  - name: first\n    iterations: 1\n    overrides: ['env.cost.scale=0']\n"
    )
    done = run_app(
        "+model=ppo",
        "curriculum=typo",
        f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
        "logger=none",
        *AGENT,
        output_root=out,
    )
    assert done.returncode == 2
    assert "curriculum phase 'first'" in done.stderr and "env.cost.scale" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_curriculum_on_ddp_hardware_is_refused(out):
    done = run_app(
        "+model=ppo",
        "env=dual_ticker",
        "curriculum=dual_ticker_3phase",
        "hardware=ddp_cpu",
        "logger=none",
        *AGENT,
        output_root=out,
    )
    assert done.returncode == 2
    assert "one process" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "phases, message",
    [
        ([{"name": "a", "overrides": []}], "exactly one length"),
        ([{"name": "a", "frames": 10, "epochs": 1, "overrides": []}], "exactly one length"),
        ([{"name": "a", "frames": 0, "overrides": []}], "whole number >= 1"),
        ([{"name": "a", "frames": 10, "overrides": ["nokey"]}], "Hydra override strings"),
        ([{"name": "a", "frames": 10, "lenght": 3}], "unknown keys lenght"),
        ([{"name": "a", "frames": 1}, {"name": "a", "frames": 1}], "names must differ"),
    ],
)
def test_malformed_phases_are_refused_with_the_phase_named(phases, message):
    cfg = OmegaConf.create({"name": "mine", "scale": 1.0, "phases": phases})
    with pytest.raises(ConfigError, match=message) as err:
        parse_phases(cfg)
    assert "conf/curriculum/mine.yaml" in str(err.value)


def test_a_phase_length_in_a_unit_the_model_does_not_use_is_refused():
    (phase,) = parse_phases(
        OmegaConf.create({"name": "m", "phases": [{"name": "a", "epochs": 2, "overrides": []}]})
    )
    assert phase.length_overrides(ForecastModule, 1.0)[0] == "model.trainer.max_epochs=2"
    with pytest.raises(ConfigError, match="does not use"):
        phase.length_overrides(PPOModule, 1.0)


def test_scale_shrinks_every_length_rounding_up():
    cfg = OmegaConf.create(
        {"name": "m", "scale": 0.01, "phases": [{"name": "a", "frames": 50000, "overrides": []}]}
    )
    (phase,) = parse_phases(cfg)
    assert phase.length_overrides(PPOModule, 0.01)[0] == "model.collector.total_frames=500"
    assert phase.length_overrides(PPOModule, 1e-9)[0] == "model.collector.total_frames=1"


@pytest.mark.slow
def test_an_interrupted_curriculum_resumes_at_the_phase_it_stopped_in(tmp_path):
    out = tmp_path / "outputs"
    cmd = [
        sys.executable,
        "-m",
        "experiments",
        "+model=ppo",
        "env=dual_ticker",
        "curriculum=dual_ticker_3phase",
        "curriculum.scale=0.05",
        *AGENT,
        "model.eval.every_n_iterations=10",
        "quiet=false",
        "logger=none",
        f"paths.output_root={out}",
    ]
    code, err = ctrl_c_once(cmd, out, "phases/02_balanced/checkpoints/last.ckpt")
    assert code == 0, err[-3000:]
    assert "Interrupted in curriculum phase balanced" in err
    root = _root(out)
    resume = err.split("Resume with:")[1].strip().splitlines()[0]
    assert f"resume={root}" in resume
    first_done = (root / "phases" / "01_nvda_focus" / "metrics.json").stat().st_mtime
    state = json.loads((root / "curriculum.json").read_text())
    assert [p.get("status") for p in state["phases"]] == ["done", "running", None]

    done = warm.run([*cmd, f"resume={root}"], env=app_env())
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((root / "curriculum.json").read_text())
    assert [p["status"] for p in state["phases"]] == ["done"] * 3
    assert (root / "phases" / "01_nvda_focus" / "metrics.json").stat().st_mtime == first_done
    log = (root / "train.log").read_text()
    assert "phase 1 (nvda_focus) already finished" in log
    assert "resuming from" in log and "02_balanced" in log


def test_resume_auto_finds_a_curriculum_with_an_unfinished_phase(tmp_path):
    from experiments.runtime.resume import find_resumable

    overrides = ["+model=ppo", "curriculum=dual_ticker_3phase"]
    run = tmp_path / "runs" / "2026-01-01" / "10-00-00_ppo"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    state = {"phases": [{"name": "a", "status": "done"}, {"name": "b", "status": "running"}]}
    (run / "curriculum.json").write_text(json.dumps(state))
    assert find_resumable(str(tmp_path), [*overrides, "resume=auto"]) == run
    state["phases"][1]["status"] = "done"
    (run / "curriculum.json").write_text(json.dumps(state))
    assert find_resumable(str(tmp_path), [*overrides, "resume=auto"]) is None
