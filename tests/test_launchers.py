"""Multirun sweeps as a user runs them: the joblib and submitit_local launchers, the Optuna
presets in conf/hparams_search/, and each job's share of the cores."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pytest
import yaml
from helpers.cli import TINY, read_metrics, run_app, run_compare, run_folders
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from experiments.compare.offline import offline_runs, read_run
from experiments.config.groups import CONF_DIR
from experiments.config.resolvers import register_resolvers
from experiments.runtime import sweeps as launchers

# With +model swept, Hydra composes the sweep once without a model: set model keys with ++.
SWEEP_TINY = [f"++{o}" if o.startswith("model.") else o for o in TINY]
# An agent small enough for tests (as tests/test_agents.py runs them).
AGENT_TINY = [
    "data.synthetic.sessions=60",
    "env.num_envs=8",
    "model.collector.frames_per_env=8",
    "model.collector.iterations=3",
    "model.eval.every_n_iterations=1",
    "model.checkpoint.every_n_iterations=1",
    "print_config=false",
    "quiet=true",
]


def _sweep_dir(out: Path) -> Path:
    [sweep] = [p for p in (out / "multirun").glob("*/*") if p.is_dir()]
    return sweep


def _trial_folders(sweep: Path) -> list[Path]:
    """Every job folder of a sweep (also those of trials that left no metrics.json)."""
    return sorted(p.parent for p in sweep.glob("*/.hydra"))


# ------------------------------------------------------------------ joblib
@pytest.mark.slow  # moved out of the default suite (its time); CI runs it
def test_joblib_sweep_runs_each_job_in_its_own_wandb_run_in_one_group(out):
    done = run_app(
        "-m",
        "+model=lstm,transformer",
        "seed=0,1",
        "hydra/launcher=joblib",
        *SWEEP_TINY,
        output_root=out,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=-1" in done.stdout + done.stderr  # all cores by default
    folders = run_folders(out)
    assert len(folders) == 4
    models = sorted(read_metrics(f)["model"] for f in folders)
    assert models == ["lstm", "lstm", "transformer", "transformer"]
    runs = [read_run(r) for r in offline_runs(out)]
    assert len(runs) == 4 and len({r["run_id"] for r in runs}) == 4
    assert all(r["state"] == "finished" for r in runs)
    [group] = {r["group"] for r in runs}
    sweep = _sweep_dir(out)
    assert group == f"sweep-{sweep.parent.name}-{sweep.name}"
    # n_jobs=-1 runs as many jobs at once as there are cores: one torch thread each.
    for folder in folders:
        assert "1 torch thread(s) per job" in (folder / "train.log").read_text()


# ------------------------------------------------------------------ Optuna
@pytest.fixture(scope="module")
def lstm_study(tmp_path_factory) -> Path:
    """The outputs of a finished two-trial study of the lstm_optuna preset."""
    out = tmp_path_factory.mktemp("study") / "outputs"
    done = run_app(
        "+model=lstm",
        "hparams_search=lstm_optuna",
        "hydra.sweeper.n_trials=2",
        *TINY,
        output_root=out,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.slow  # moved out of the default suite (its time); CI runs it
def test_lstm_optuna_preset_reports_the_best_trial_of_its_study(lstm_study):
    out = lstm_study
    sweep = _sweep_dir(out)  # the preset sets hydra.mode=MULTIRUN: no -m needed
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    folders = run_folders(out)
    assert len(folders) == 2
    scores = [read_metrics(f)["logged"]["val/sharpe"] for f in folders]
    assert results["best_value"] == max(scores)
    best = folders[scores.index(max(scores))]
    overrides = yaml.safe_load((best / ".hydra" / "overrides.yaml").read_text())
    sampled = dict(o.split("=", 1) for o in overrides if "=" in o)
    assert set(results["best_params"]) == {
        "model.optimizer.lr",
        "model.network.hidden_size",
        "model.network.num_layers",
        "model.network.dropout",
    }
    for key, value in results["best_params"].items():
        assert float(sampled[key]) == pytest.approx(float(value))
    runs = [read_run(r) for r in offline_runs(out)]
    assert len(runs) == 2
    [group] = {r["group"] for r in runs}
    assert group == f"lstm_optuna-{sweep.parent.name}-{sweep.name}"
    assert not any("hparams_search" in r["name"] for r in runs)


@pytest.mark.slow
def test_compare_of_an_optuna_study_ranks_its_trials_by_the_study_metric(lstm_study, tmp_path):
    sweep = _sweep_dir(lstm_study)
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    done = run_compare(str(sweep), "--metric", "val/sharpe")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 runs in 2 configurations, sorted by val/sharpe" in done.stdout
    table = pl.read_csv(sweep / "comparison.csv", infer_schema_length=0)
    keys = table.columns[: table.columns.index("n")]
    # The columns are the sampled parameters the two trials differ in (a choice may repeat).
    assert keys and set(keys) <= set(results["best_params"])
    best = table.row(0, named=True)
    assert float(best["val/sharpe mean"]) == results["best_value"]  # one double, not two
    for key in keys:
        assert float(best[key]) == pytest.approx(float(results["best_params"][key]))


@pytest.mark.slow
def test_ppo_optuna_preset_maximises_the_validation_score(out):
    done = run_app(
        "+model=ppo",
        "hparams_search=ppo_optuna",
        "hydra.sweeper.n_trials=2",
        *AGENT_TINY,
        "logger=none",
        output_root=out,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = yaml.safe_load((_sweep_dir(out) / "optimization_results.yaml").read_text())
    scores = [read_metrics(f)["logged"]["val/score"] for f in run_folders(out)]
    assert len(scores) == 2
    assert results["best_value"] == max(scores)
    assert {"model.optim.actor_lr", "model.loss.clip_epsilon", "model.loss.gamma"} <= set(
        results["best_params"]
    )


@pytest.mark.slow
def test_a_diverging_optuna_trial_scores_the_worst_value_and_the_study_goes_on(out):
    done = run_app(
        "+model=ppo",
        "hparams_search=ppo_optuna",
        "hydra.sweeper.n_trials=2",
        *AGENT_TINY,
        "env.reward.scale=1e40",  # float32 rewards overflow: every trial diverges
        "logger=none",
        output_root=out,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    sweep = _sweep_dir(out)
    assert len(_trial_folders(sweep)) == 2  # the first trial's failure did not stop the study
    assert "the study goes on" in done.stdout + done.stderr
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_value"] == -math.inf


# ------------------------------------------------------------------ submitit
@pytest.mark.slow
def test_submitit_local_sweep_runs_both_jobs(out):
    done = run_app(
        "-m",
        "+model=lstm",
        "seed=0,1",
        "hydra/launcher=submitit_local",
        "hydra.launcher.cpus_per_task=1",  # two jobs at once on two cores: one thread each
        *TINY,
        "logger=none",
        output_root=out,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    folders = run_folders(out)
    assert len(folders) == 2
    assert all(read_metrics(f)["model"] == "lstm" for f in folders)
    assert (_sweep_dir(out) / ".submitit").is_dir()
    for folder in folders:
        assert "1 torch thread(s) per job" in (folder / "train.log").read_text()


# ------------------------------------------------------------------ threads per job
JOBLIB = {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"}
BASIC_SWEEPER = {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"}
OPTUNA = {"_target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"}
SUBMITIT = {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"}


@pytest.mark.parametrize(
    ("launcher", "sweeper", "cores", "threads"),
    [
        ({**JOBLIB, "n_jobs": 2}, BASIC_SWEEPER, 2, 1),
        ({**JOBLIB, "n_jobs": -1}, BASIC_SWEEPER, 8, 1),
        ({**JOBLIB, "n_jobs": 2}, BASIC_SWEEPER, 8, 4),
        ({**JOBLIB, "n_jobs": 3}, BASIC_SWEEPER, 8, 2),
        ({**JOBLIB, "n_jobs": -2}, BASIC_SWEEPER, 8, 1),  # 7 jobs at once
        ({**JOBLIB, "n_jobs": -7}, BASIC_SWEEPER, 8, 4),  # 2 jobs at once
        ({**JOBLIB, "n_jobs": 16}, BASIC_SWEEPER, 8, 1),
        ({**JOBLIB, "n_jobs": -1}, {**BASIC_SWEEPER, "max_batch_size": 2}, 8, 4),
        ({**JOBLIB, "n_jobs": -1}, {**OPTUNA, "n_jobs": 1}, 8, 8),  # one trial at a time
        ({**SUBMITIT, "cpus_per_task": 3}, BASIC_SWEEPER, 8, 3),
        ({**SUBMITIT, "cpus_per_task": None}, BASIC_SWEEPER, 8, None),
        ({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, {}, 8, None),
    ],
)
def test_each_job_gets_its_share_of_the_cores(launcher, sweeper, cores, threads):
    assert launchers.launcher_threads(launcher, sweeper, cores) == threads


@pytest.fixture
def hydra_job(monkeypatch):
    """``compose(*overrides)`` sets HydraConfig as inside a job of that command, on 2 cores."""
    register_resolvers()
    monkeypatch.setattr(launchers, "cpu_cores", lambda: 2)
    saved = HydraConfig.instance().cfg

    def compose_job(*overrides: str):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield compose_job
    HydraConfig.instance().cfg = saved


def test_two_joblib_jobs_on_two_cores_get_one_thread_each_unless_told(hydra_job):
    joblib_job = ["+model=lstm", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    cfg = hydra_job(*joblib_job, "hydra.mode=MULTIRUN")
    assert launchers.job_threads(cfg) == 1
    cfg = hydra_job(*joblib_job, "hydra.mode=MULTIRUN", "hardware.num_threads=2")
    assert launchers.job_threads(cfg) == 2  # explicit wins
    cfg = hydra_job(*joblib_job, "hydra.mode=RUN")
    assert launchers.job_threads(cfg) is None  # a single run launches nothing


def test_optuna_trials_without_a_score_report_the_worst_value(hydra_job):
    hydra_job("+model=lstm", "hparams_search=lstm_optuna")
    assert launchers.failed_trial_value() == -math.inf
    hydra_job("+model=lstm", "hparams_search=lstm_optuna", "hydra.sweeper.direction=minimize")
    assert launchers.failed_trial_value() == math.inf
    hydra_job("+model=lstm", "hydra.mode=MULTIRUN")  # the basic sweeper ignores return values
    assert launchers.failed_trial_value() is None
