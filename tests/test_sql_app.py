"""The database path as a new user takes it, from the command line: ingest, then train on
``data=sql`` from a DuckDB file and from a real PostgreSQL server; the same bars give the same
numbers as ``data=sample``; a password never reaches the run folder; bad input is one
paragraph before training."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import warm
from helpers.cli import app_env, read_metrics, run_app, run_folders

from datamodules.database.tables import write_bars
from datamodules.database.uri import parse_uri
from datamodules.sources import load_sample

TINY = [
    "env.tickers=[MSFT]",
    "model.trainer.max_epochs=1",
    "model.trainer.limit_train_batches=4",
]
FAST = ["print_config=false", "export.enabled=false", "logger=none"]


def command(*args: str, cwd: Path, module: str = "experiments") -> subprocess.CompletedProcess:
    """``python -m MODULE ARGS`` run in ``cwd``, as a user types it there."""
    return warm.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        timeout=600,
        env=app_env(),
    )


@pytest.fixture(scope="module")
def sample_metrics(tmp_path_factory) -> dict:
    """metrics.json of ``data=sample`` (the shipped MSFT prices), trained with TINY."""
    folder = tmp_path_factory.mktemp("sample")
    shipped = command("+model=lstm", "data=sample", *TINY, *FAST, cwd=folder)
    assert shipped.returncode == 0, shipped.stderr[-3000:]
    [run] = run_folders(folder / "outputs")
    return read_metrics(run)


def test_the_sample_read_from_duckdb_gives_the_numbers_of_data_sample(tmp_path, sample_metrics):
    # The README's commands, in a fresh folder.
    done = command(
        "sample",
        "--to",
        "duckdb:///outputs/market.duckdb",
        cwd=tmp_path,
        module="experiments.ingest",
    )
    assert done.returncode == 0, done.stderr
    duck = command(
        "+model=lstm",
        "data=sql",
        "data.uri=duckdb:///outputs/market.duckdb",
        *TINY,
        *FAST,
        cwd=tmp_path,
    )
    assert duck.returncode == 0, duck.stderr[-3000:]
    [run] = run_folders(tmp_path / "outputs")
    got = read_metrics(run)
    assert got["test"] == sample_metrics["test"] and got["logged"] == sample_metrics["logged"]
    assert got["split"] == sample_metrics["split"]


def test_postgresql_gives_the_same_numbers_and_the_password_never_reaches_the_run_folder(
    tmp_path, postgres_server, postgres_uri, sample_metrics
):
    # The password in the URI on the command line, W&B and the export on: every file of the
    # run folder (configs, Hydra's files, logs, the W&B run, metadata.json, checkpoints) is
    # searched for it.
    password = postgres_server.password
    assert password in postgres_uri
    write_bars(parse_uri(postgres_uri), load_sample(["MSFT"]).drop("_file", "_row"))
    pg = run_app("+model=lstm", "data=sql", f"data.uri={postgres_uri}", *TINY, output_root=tmp_path)
    assert pg.returncode == 0, pg.stderr[-3000:]
    [run] = run_folders(tmp_path)
    assert read_metrics(run)["test"] == sample_metrics["test"]
    assert password not in pg.stdout + pg.stderr
    searched = [p for p in run.rglob("*") if p.is_file()]
    names = {p.name for p in searched}
    assert {"resolved_config.yaml", "overrides.yaml", "hydra.yaml", "config_tree.txt"} <= names
    assert {"train.log", "metadata.json", "data_quality.json", "last.ckpt"} <= names
    assert any(p.suffix == ".wandb" for p in searched)
    assert [str(p) for p in searched if password.encode() in p.read_bytes()] == []
    masked = parse_uri(postgres_uri).masked()
    assert masked in (run / "resolved_config.yaml").read_text()
    assert masked in (run / ".hydra" / "overrides.yaml").read_text()


@pytest.mark.slow
def test_a_multirun_leaves_no_password_in_its_sweep_folder(tmp_path, postgres_server, postgres_uri):
    write_bars(parse_uri(postgres_uri), load_sample(["MSFT"]).drop("_file", "_row"))
    sweep = run_app(
        "-m",
        "+model=lstm",
        "data=sql",
        f"data.uri={postgres_uri}",
        "seed=1,2",
        *TINY,
        "export.enabled=false",
        "print_config=false",
        output_root=tmp_path,
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    assert len(run_folders(tmp_path)) == 2
    files = [p for p in (tmp_path / "multirun").rglob("*") if p.is_file()]
    assert any(p.name == "multirun.yaml" for p in files)
    password = postgres_server.password.encode()
    assert [str(p) for p in files if password in p.read_bytes()] == []
    # Hydra's launcher prints each job's overrides before it runs them: masked there too.
    assert "#0 : " in sweep.stdout + sweep.stderr and "bars\\:***@" in sweep.stdout + sweep.stderr
    assert postgres_server.password not in sweep.stdout + sweep.stderr


@pytest.mark.slow
def test_an_agent_trains_on_two_tickers_read_from_postgresql(tmp_path, postgres_uri):
    done = command(
        "synthetic",
        "--to",
        postgres_uri,
        "--tickers",
        "NVDA,MSFT",
        "--sessions",
        "60",
        cwd=tmp_path,
        module="experiments.ingest",
    )
    assert done.returncode == 0, done.stderr
    run = run_app(
        "+model=ppo",
        "env=dual_ticker",
        "data=sql",
        f"data.uri={postgres_uri}",
        "data.bar_size=15min",
        "data.split.gap_bars=20",
        "env.num_envs=8",
        "++model.collector.frames_per_env=8",
        "++model.collector.iterations=3",
        "++model.eval.every_n_iterations=1",
        "++model.checkpoint.every_n_iterations=1",
        *FAST,
        "quiet=true",
        output_root=tmp_path / "out",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    [folder] = run_folders(tmp_path / "out")
    metrics = read_metrics(folder)
    assert metrics["tickers"] == ["NVDA", "MSFT"]
    assert {"strategy", "buy_and_hold", "flat", "random"} <= set(metrics["test"])
    assert (folder / "data_quality.json").is_file()


SLOW = pytest.mark.slow  # each case is also a test of the source itself (test_sql.py)


@pytest.mark.parametrize(
    "case",
    [
        pytest.param("unreachable", marks=SLOW),
        "wrong password",
        pytest.param("missing table", marks=SLOW),
        pytest.param("unknown ticker", marks=SLOW),
        "scheme",
    ],
)
def test_bad_database_input_stops_the_run_before_training_in_one_paragraph(
    case, tmp_path, postgres_server, postgres_uri
):
    from helpers.postgres import free_port

    write_bars(parse_uri(postgres_uri), load_sample(["MSFT"]).drop("_file", "_row"))
    database = postgres_uri.rsplit("/", 1)[1]
    args, expected = {
        "unreachable": (
            [f"data.uri=postgresql://bars:pw@127.0.0.1:{free_port()}/{database}"],
            "cannot reach the PostgreSQL server at 127.0.0.1",
        ),
        "wrong password": (
            [f"data.uri={postgres_server.database_uri(database, password='wrong-one')}"],
            "refused the password",
        ),
        "missing table": ([f"data.uri={postgres_uri}", "data.table=prices"], "no table 'prices'"),
        "unknown ticker": (
            [f"data.uri={postgres_uri}", "env.tickers=[TSLA]"],
            "env.tickers asks for TSLA, but table bars",
        ),
        "scheme": (
            ["data.uri=mysql://bars:pw@127.0.0.1/db"],
            "the scheme 'mysql' is not supported",
        ),
    }[case]
    run = run_app("+model=lstm", "data=sql", *TINY, *args, *FAST, output_root=tmp_path / "out")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    error = [line for line in run.stderr.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and expected in error[0], run.stderr[-2000:]
    assert postgres_server.password not in run.stderr and "wrong-one" not in run.stderr
    assert not list((tmp_path / "out").rglob("*.ckpt"))
