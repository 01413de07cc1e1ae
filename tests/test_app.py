"""The Hydra app end to end, run as a user runs it: `python -m experiments ...`."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import torch
import yaml
from helpers.cli import TINY, read_metrics, run_app, run_folders

from datamodules.sources import sample_path
from experiments.compare.offline import offline_runs, read_run


def _assert_clean_error(done, *needles: str) -> None:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout
    text = done.stderr + done.stdout
    for needle in needles:
        assert needle in text, text[-2000:]


def test_without_a_model_it_exits_naming_the_choices(out):
    done = run_app(output_root=out)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "+model=NAME" in lines[0] and "lstm" in lines[0] and "transformer" in lines[0]


def test_unknown_model_name_is_a_clear_error(out):
    _assert_clean_error(run_app("+model=gpt", output_root=out), "model/gpt", "lstm")


def test_lstm_run_reports_test_metrics_beside_buy_and_hold_and_logs_to_wandb(out):
    done = run_app("+model=lstm", *TINY, output_root=out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "buy_and_hold" in done.stdout and "sharpe" in done.stdout
    [folder] = run_folders(out)
    assert folder.parent.parent.name == "runs"
    assert folder.name.endswith("_lstm")
    metrics = read_metrics(folder)
    for side in ("strategy", "buy_and_hold"):
        assert {"sharpe", "max_drawdown", "total_return", "periods_per_year"} <= set(
            metrics["test"][side]
        )
    assert metrics["synthetic"] is True
    assert (folder / "plots" / "equity_test.png").stat().st_size > 10_000
    assert (folder / "checkpoints" / "last.ckpt").exists()
    assert (folder / ".hydra" / "config.yaml").exists()
    resolved = yaml.safe_load((folder / "resolved_config.yaml").read_text())

    [wandb_run] = offline_runs(folder)
    run = read_run(wandb_run)
    config = run["config"]
    assert config["overrides"] == ["+model=lstm", *TINY, f"paths.output_root={out}"]
    assert {k: v for k, v in config.items() if k not in ("overrides", "_wandb")} == resolved
    assert "synthetic" in run["tags"] and "lstm" in run["tags"]
    assert run["state"] == "finished"
    assert "test/sharpe" in run["summary"] and "test/buy_and_hold_sharpe" in run["summary"]
    assert "val/auroc" in run["summary"] and "val/balanced_accuracy" in run["summary"]


def test_transformer_run_logs_attention_maps(out):
    done = run_app("+model=transformer", *TINY, "model.attention_every_n_epochs=1", output_root=out)
    assert done.returncode == 0, done.stderr[-3000:]
    [folder] = run_folders(out)
    assert (folder / "plots" / "attention_epoch000.png").exists()
    [wandb_run] = offline_runs(folder)
    images = list(wandb_run.rglob("media/images/val/attention*.png"))
    assert images, "attention maps were not logged to W&B"


def test_same_seed_gives_identical_results(out):
    # A new interpreter, then a warm one (helpers.warm): two processes, two hash seeds.
    for fresh in (True, False):
        done = run_app("+model=lstm", *TINY, "seed=3", "logger=none", output_root=out, fresh=fresh)
        assert done.returncode == 0, done.stderr[-3000:]
    first, second = (read_metrics(f) for f in run_folders(out))
    assert first["test"] == second["test"]
    assert first["logged"] == second["logged"]


@pytest.mark.slow
def test_two_runs_in_the_same_second_get_separate_folders(out):
    # Pin the folder name so the second run would collide if folders were reused.
    pinned = [f"hydra.run.dir=${{unique_dir:{out}/runs/fixed}}", "logger=none"]
    for _ in range(2):
        done = run_app("+model=lstm", *TINY, *pinned, output_root=out)
        assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in run_folders(out)) == ["fixed", "fixed-1"]


def test_lstm_trains_on_the_shipped_real_prices(out):
    done = run_app(
        "+model=lstm",
        "data=sample",
        "env.tickers=[MSFT]",
        *TINY[1:],
        "logger=none",
        output_root=out,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = read_metrics(run_folders(out)[0])
    assert metrics["synthetic"] is False
    assert metrics["tickers"] == ["MSFT"]
    assert 240 <= metrics["periods_per_year"] <= 260


def test_a_csv_of_your_own_with_a_non_iso_timestamp_format_trains(out, tmp_path):
    raw = pl.read_parquet(sample_path()).filter(pl.col("ticker") == "IBM")
    csv = tmp_path / "ibm.csv"
    raw.select(
        pl.col("timestamp").dt.strftime("%d/%m/%Y").alias("Date"),
        pl.col("open").alias("Open"),
        pl.col("high").alias("High"),
        pl.col("low").alias("Low"),
        pl.col("close").alias("Close"),
        pl.col("volume").alias("Vol"),
        pl.lit("x").alias("Comment"),
    ).write_csv(csv)
    done = run_app(
        "+model=lstm",
        "data=csv",
        f"data.files={{IBM:{csv}}}",  # as a user types it (the old +data.files.IBM= works too)
        "env.tickers=[IBM]",
        "data.bar_size=1d",
        "data.timestamp_format=%d/%m/%Y",
        "data.columns.timestamp=Date",
        "data.columns.volume=Vol",
        *TINY[1:],
        "logger=none",
        output_root=out,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert read_metrics(run_folders(out)[0])["tickers"] == ["IBM"]


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        (
            ["data=csv", "+data.files.XYZ=/nowhere/xyz.csv", "env.tickers=[XYZ]"],
            ["data.files.XYZ", "does not exist"],
        ),
        (["data=sample", "env.tickers=[TSLA]"], ["TSLA", "AAPL, GOOG, IBM, MSFT"]),
        (
            ["data=sample", "env.tickers=[MSFT]", "data.bar_size=1h"],
            ["data.bar_size=1h", "finer", "1d"],
        ),
        (["data.bar_size=7parsecs"], ["data.bar_size", "7parsecs"]),
        (["hardware=gpu"], ["hardware.accelerator", "no CUDA device"]),
    ],
    ids=[
        "missing-file",
        "unknown-ticker",
        "bar-finer-than-data",
        "bad-bar-size",
        "gpu-without-cuda",
    ],
)
def test_bad_input_is_one_clear_paragraph_before_training(out, overrides, needles):
    if "hardware=gpu" in overrides and torch.cuda.is_available():
        pytest.skip("a CUDA device is present: hardware=gpu is valid here")
    done = run_app("+model=lstm", *overrides, *TINY[1:], output_root=out)
    _assert_clean_error(done, *needles)
    assert done.returncode == 2
    assert "Epoch" not in done.stdout
    assert not run_folders(out)


def test_a_multirun_whose_third_job_is_invalid_fails_before_the_first_job_starts(out):
    done = run_app(
        "-m",
        "+model=ppo",
        "env.num_envs=4,8,-3",
        "data.synthetic.sessions=40",
        "logger=none",
        "print_config=false",
        output_root=out,
    )
    assert done.returncode == 2
    assert "job 3 of 3" in done.stderr and "env.num_envs is -3" in done.stderr
    assert "No job was started" in done.stderr and "Traceback" not in done.stderr
    assert not run_folders(out) and not list(out.rglob("train.log"))


def test_a_typo_in_a_key_is_one_paragraph_naming_the_closest_key(out):
    done = run_app("+model=ppo", "+env.costs.comission_bps=1", output_root=out)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len([line for line in done.stderr.splitlines() if line.strip()]) == 1
    assert "did you mean commission_bps" in done.stderr


@pytest.mark.slow
def test_multirun_leaves_four_wandb_runs_in_one_group(out):
    # With +model swept, Hydra composes the sweep without a model: set model keys with ++.
    tiny = [f"++{o}" if o.startswith("model.") else o for o in TINY]
    done = run_app("-m", "+model=lstm,transformer", "seed=0,1", *tiny, output_root=out)
    assert done.returncode == 0, done.stderr[-3000:]
    folders = run_folders(out)
    assert len(folders) == 4
    assert all(f.parent.parent.parent.name == "multirun" for f in folders)
    runs = [read_run(r) for r in offline_runs(out)]
    assert len(runs) == 4
    assert len({r["run_id"] for r in runs}) == 4
    groups = {r["group"] for r in runs}
    assert len(groups) == 1 and groups != {""}
    names = sorted(r["name"].split(",data.")[0] for r in runs)
    assert names == ["lstm,seed=0", "lstm,seed=1", "transformer,seed=0", "transformer,seed=1"]
    assert not any("output_root" in r["name"] for r in runs)
    assert all(r["state"] == "finished" for r in runs)


@pytest.mark.slow  # moved out of the default suite (its time); CI runs it
def test_ddp_cpu_trains_with_two_processes(out):
    done = run_app("+model=lstm", "hardware=ddp_cpu", *TINY, output_root=out)
    assert done.returncode == 0, done.stderr[-3000:]
    text = done.stdout + done.stderr
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in text
    [folder] = run_folders(out)
    assert (folder / "metrics.json").exists()
    assert len(offline_runs(folder)) == 1  # rank 0 alone logs


@pytest.mark.slow
@pytest.mark.parametrize(
    ("strength", "learns"), [(0.3, True), (0.0, False)], ids=["planted", "none"]
)
def test_lstm_learns_a_planted_component_and_nothing_else(out, strength, learns):
    """Strength 0.3 makes P(correct direction) = 0.5 + asin(0.3)/pi ~ 0.597 for a perfect model."""
    done = run_app(
        "+model=lstm",
        f"data.synthetic.planted_strength={strength}",
        "logger=none",
        "print_config=false",
        output_root=out,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = read_metrics(run_folders(out)[0])
    accuracy = metrics["logged"]["test/accuracy"]
    if learns:
        assert accuracy > 0.56
        assert metrics["test"]["strategy"]["sharpe"] > 1.0
    else:
        # ~2300 test labels: the std of a coin's accuracy is ~0.01; 0.53 is 3 sigma.
        assert accuracy < 0.53


def test_config_of_a_run_is_saved_as_a_tree(out):
    shown = [o for o in TINY if not o.startswith("print_config")]  # the tree is printed
    done = run_app("+model=lstm", *shown, "logger=none", output_root=out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "config" in done.stdout and "synthetic" in done.stdout
    [folder] = run_folders(out)
    tree = (folder / "config_tree.txt").read_text()
    assert "planted_strength" in tree and "hardware" in tree
    assert Path(folder / "resolved_config.yaml").exists()
