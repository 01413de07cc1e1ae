"""A multirun killed part way and started again with the same command and ``resume=auto``
skips the jobs that finished, continues the interrupted ones from their own checkpoints (same
folder, same W&B run id) and runs the rest; every job ends with the metrics of a sweep that
was never stopped. Basic and joblib launchers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import warm
from helpers.cli import app_env, read_metrics

from datamodules.errors import ConfigError
from experiments.runtime.sweep_resume import (
    DONE_FILE,
    check_same_job,
    find_sweep,
    sweep_folder,
)


def sweep_cmd(out: Path, seeds: int, *extra: str) -> list[str]:
    """A grid sweep of ``seeds`` DQN jobs of 20 iterations (``last.ckpt`` every 5)."""
    return [
        sys.executable,
        "-m",
        "experiments",
        "-m",
        "+model=dqn",
        "env=single_ticker",
        f"seed={','.join(str(s) for s in range(seeds))}",
        "data.synthetic.sessions=60",
        "env.num_envs=8",
        "model.collector.frames_per_env=8",
        "model.collector.iterations=20",
        "model.collector.learning_starts=64",
        "model.replay.batch_size=32",
        "model.eval.every_n_iterations=10",
        "model.checkpoint.every_n_iterations=5",
        "print_config=false",
        "quiet=true",
        "export.enabled=false",
        f"paths.output_root={out}",
        *extra,
    ]


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    done = warm.run(cmd, env=app_env(), timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def the_sweep(out: Path) -> Path:
    (sweep,) = (out / "multirun").glob("*/*")
    return sweep


def offline_ids(job: Path) -> list[str]:
    return [p.name.rsplit("-", 1)[-1] for p in (job / "wandb").glob("offline-run-*")]


def kill_and_continue(out: Path, seeds: int, kill_in: int, *extra: str) -> dict[int, float]:
    """Start the sweep in its own process group, SIGKILL the group (jobs and launcher workers)
    once job ``kill_in`` (0-based) saved a checkpoint, start it again with ``resume=auto``, and
    check what was skipped and what continued. Returns {job: metrics.json mtime} of the jobs
    that had finished before the kill."""
    first = sweep_cmd(out, seeds, *extra)

    def job_checkpoint() -> Path:  # the sweep folder is made at start, then the job's file
        sweeps = list((out / "multirun").glob("*/*"))
        return (sweeps[0] if sweeps else out / "none") / str(kill_in) / "checkpoints" / "last.ckpt"

    with open(os.devnull, "w") as sink:
        proc = subprocess.Popen(
            first, stdout=sink, stderr=sink, env=app_env(), start_new_session=True
        )
        deadline = time.time() + 600
        while time.time() < deadline and not job_checkpoint().exists() and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, "the sweep ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    sweep = the_sweep(out)
    finished = {
        int(p.parent.name): (p.parent / "metrics.json").stat().st_mtime_ns
        for p in sweep.glob(f"*/{DONE_FILE}")
    }
    assert kill_in not in finished and len(finished) < seeds
    interrupted_id = offline_ids(sweep / str(kill_in))
    assert len(interrupted_id) == 1

    again = run([*first, "resume=auto"])
    assert the_sweep(out) == sweep  # the same folder, no new sweep
    assert f"{len(finished)} job(s) finished (skipped)" in again.stdout + again.stderr
    for job, mtime in finished.items():  # not run again
        assert (sweep / str(job) / "metrics.json").stat().st_mtime_ns == mtime
    # The killed job continued in its folder, in its W&B run, from its checkpoint.
    killed = sweep / str(kill_in)
    assert list((killed / ".hydra").glob("resumed-*"))
    ids = offline_ids(killed)
    assert len(ids) == 2 and set(ids) == set(interrupted_id)
    for job in range(seeds):
        assert (sweep / str(job) / DONE_FILE).is_file()
    return finished


def assert_same_metrics(straight: Path, resumed: Path, seeds: int) -> None:
    for job in range(seeds):
        a = read_metrics(straight / str(job))
        b = read_metrics(resumed / str(job))
        assert a["test"] == b["test"], job
        assert a["logged"] == b["logged"], job


def test_a_killed_sweep_continues_where_it_stopped(tmp_path):
    finished = kill_and_continue(tmp_path / "out", 2, 1)
    assert set(finished) == {0}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_a_6_job_sweep_killed_in_job_4_ends_with_the_metrics_of_an_uninterrupted_one(
    tmp_path, launcher
):
    extra = ["hydra/launcher=joblib"] if launcher == "joblib" else []
    run(sweep_cmd(tmp_path / "straight", 6, *extra))
    kill_and_continue(tmp_path / "killed", 6, 3, *extra)
    assert_same_metrics(the_sweep(tmp_path / "straight"), the_sweep(tmp_path / "killed"), 6)


def _sweep(root: Path, name: str, overrides: list[str]) -> Path:
    folder = root / "multirun" / "2026-01-01" / name
    folder.mkdir(parents=True)
    (folder / "multirun.yaml").write_text(
        yaml.safe_dump({"hydra": {"overrides": {"task": overrides}}})
    )
    return folder


def test_resume_auto_picks_the_newest_sweep_of_the_same_command(tmp_path):
    old = _sweep(tmp_path, "10-00-00", ["+model=dqn", "seed=0,1"])
    time.sleep(0.01)
    new = _sweep(tmp_path, "11-00-00", ["+model=dqn", "seed=0,1", "resume=auto"])
    _sweep(tmp_path, "12-00-00", ["+model=dqn", "seed=0,1,2"])
    assert find_sweep(str(tmp_path), ["seed=0,1", "+model=dqn", "resume=auto"]) == new
    os.utime(old, (time.time() + 10, time.time() + 10))
    assert find_sweep(str(tmp_path), ["+model=dqn", "seed=0,1"]) == old
    fresh = str(tmp_path / "multirun" / "2026-01-02" / "09-00-00")
    assert sweep_folder(fresh, "auto", str(tmp_path), ["+model=ppo", "seed=0,1"]) == fresh
    assert sweep_folder(fresh, None, str(tmp_path), ["+model=dqn", "seed=0,1"]) == fresh
    assert sweep_folder(fresh, str(new), str(tmp_path), ["+model=ppo"]) == str(new)
    with pytest.raises(ConfigError, match="not a sweep folder"):
        sweep_folder(fresh, str(tmp_path), str(tmp_path), [])


def test_a_job_folder_holding_another_job_is_refused(tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["+model=dqn", "seed=0"]))
    check_same_job(tmp_path, ["seed=0", "+model=dqn", "resume=auto"])  # the same job
    with pytest.raises(ConfigError, match="holds a job started with other overrides"):
        check_same_job(tmp_path, ["+model=dqn", "seed=1"])


def test_resume_of_a_multirun_names_a_sweep_folder_or_is_one_paragraph(tmp_path):
    done = warm.run(
        sweep_cmd(tmp_path, 2, f"resume={tmp_path}"),
        env=app_env(),
        timeout=300,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and "not a sweep folder" in lines[0]


# An LSTM forecaster small enough for tests (helpers.cli.TINY).
LSTM_TINY = [
    "data.synthetic.sessions=120",
    "model.trainer.max_epochs=1",
    "model.trainer.limit_train_batches=4",
    "print_config=false",
    "quiet=true",
    "export.enabled=false",
]


@pytest.mark.slow
def test_an_optuna_study_in_storage_continues_its_trials_after_a_kill(tmp_path):
    import optuna
    from optuna.trial import TrialState

    out = tmp_path / "out"
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    cmd = [
        sys.executable,
        "-m",
        "experiments",
        "+model=lstm",
        "hparams_search=lstm_optuna",
        "hydra.sweeper.n_trials=4",
        f"hydra.sweeper.storage={storage}",
        *LSTM_TINY,
        f"paths.output_root={out}",
    ]
    with open(os.devnull, "w") as sink:
        proc = subprocess.Popen(
            cmd, stdout=sink, stderr=sink, env=app_env(), start_new_session=True
        )
        deadline = time.time() + 600
        while time.time() < deadline and not list(out.glob(f"multirun/*/*/1/{DONE_FILE}")):
            assert proc.poll() is None, "the study ended before it could be killed"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    sweep = the_sweep(out)
    before = {p.parent.name: p.stat().st_mtime_ns for p in sweep.glob(f"*/{DONE_FILE}")}
    assert {"0", "1"} <= set(before) and len(before) < 4

    run([*cmd, "resume=auto"])
    assert the_sweep(out) == sweep
    study = optuna.load_study(study_name="lstm_optuna", storage=storage)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4  # n_trials in all, the trials before the kill included
    for trial in complete:  # each trial in the folder of its number, with its value
        folder = sweep / str(trial.number)
        assert read_metrics(folder)["logged"]["val/sharpe"] == pytest.approx(trial.value)
    for job, mtime in before.items():  # the finished trials' folders were not touched
        assert (sweep / job / DONE_FILE).stat().st_mtime_ns == mtime
    # The restarted sampler proposed new trials, not the study's first ones again.
    assert len({tuple(sorted(t.params.items())) for t in complete}) == 4
    killed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(killed) <= 1 and len(study.trials) == 4 + len(killed)
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(max(t.value for t in complete))


@pytest.mark.slow
def test_an_in_memory_optuna_study_replays_its_finished_trials_and_goes_on(tmp_path):
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "experiments",
        "+model=lstm",
        "hparams_search=lstm_optuna",
        *LSTM_TINY,
        "logger=none",
        f"paths.output_root={out}",
    ]
    run([*cmd, "hydra.sweeper.n_trials=2"])
    sweep = the_sweep(out)
    before = {p.parent.name: p.stat().st_mtime_ns for p in sweep.glob(f"*/{DONE_FILE}")}
    assert set(before) == {"0", "1"}
    # The seeded sampler proposes the same first trials: they are skipped with their values.
    again = run([*cmd, "hydra.sweeper.n_trials=3", "resume=auto"])
    assert the_sweep(out) == sweep
    assert "2 job(s) finished (skipped)" in again.stdout + again.stderr
    for job, mtime in before.items():
        assert (sweep / job / DONE_FILE).stat().st_mtime_ns == mtime
    scores = [read_metrics(sweep / str(n))["logged"]["val/sharpe"] for n in range(3)]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(max(scores))
