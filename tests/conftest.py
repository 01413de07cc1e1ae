"""Fixtures shared by the tests; helper functions live in the ``helpers`` package."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from datamodules.market import Market
from datamodules.sources import SampleSource, SyntheticSource
from experiments.runtime import collection

# The fixtures' markets predate data.split's default gap of 20 bars; they keep no gap so
# their normalisation (fitted on the training split) stays what the tests were written on.
NO_GAP = {"gap_bars": 0}


# ------------------------------------------------------------------ running on every core
MAX_WORKERS = 4  # `-n auto` (pyproject.toml) starts one worker per core, at most this many


def pytest_xdist_auto_num_workers(config) -> int:
    """Workers for ``-n auto``: one per core (each imports torch: a few hundred MB), at most
    MAX_WORKERS."""
    return max(1, min(os.cpu_count() or 1, MAX_WORKERS))


def pytest_configure(config) -> None:
    """A worker of pytest-xdist runs torch on one thread, and so do the processes its tests
    start (the app as a user runs it): the workers already share the cores, and an OpenMP team
    of threads crawls when another process holds a core it waits for. A thread count the app
    sets itself (hardware.num_threads, the agents' and launchers' policies) still wins."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


def pytest_sessionstart(session) -> None:
    """No cyclic garbage collection while the test modules import torch, Lightning and the
    rest, as the app's commands do."""
    collection.pause()


def pytest_collection_finish(session) -> None:
    """What collection imported lives until the session ends: into the collector's permanent
    generation, which its passes during the tests skip; then collect again."""
    collection.resume()


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "outputs"


@pytest.fixture(scope="session")
def synthetic() -> Market:
    """Three synthetic tickers, 60 sessions of 15-minute bars."""
    return (
        SyntheticSource(
            tickers=["AAA", "BBB", "CCC"],
            bar_size="15min",
            seed=0,
            cache_dir=None,
            split=NO_GAP,
            synthetic={"sessions": 60},
        )
        .build()
        .market
    )


@pytest.fixture(scope="session")
def msft() -> Market:
    """Real daily MSFT prices from the shipped sample."""
    return (
        SampleSource(tickers=["MSFT"], bar_size="1d", cache_dir=None, split=NO_GAP).build().market
    )


# ------------------------------------------------------------------ RL agents (see agent_helpers)
@pytest.fixture(scope="session")
def agent_data():
    """One synthetic ticker, 40 sessions of 15-minute bars, split train/val/test."""
    return SyntheticSource(
        tickers=["AAA"],
        bar_size="15min",
        seed=0,
        window=4,
        cache_dir=None,
        split=NO_GAP,
        synthetic={"sessions": 40},
    ).build()


@pytest.fixture
def single_thread():
    """Tiny networks step faster on one intra-op thread (and far faster when the cores are
    shared with other processes); the thread count is restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------ databases (see helpers/postgres)
@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server: the one ``TEST_POSTGRES_URI`` names (``.ci/run`` starts it),
    else a throwaway one started here. Without one the test is skipped, saying why; in CI
    (``CI=true``) it fails instead."""
    from helpers import postgres

    if os.environ.get(postgres.ENV_URI):
        yield postgres.Server(os.environ[postgres.ENV_URI])
        return
    try:
        server = postgres.start()
    except postgres.Unavailable as err:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true, but no PostgreSQL server could be started: {err}")
        pytest.skip(f"no PostgreSQL server could be started here ({err})")
    yield server
    server.stop()


@pytest.fixture
def postgres_uri(postgres_server, request) -> str:
    """The URI (with the password) of a fresh, empty database on the test server, dropped
    after the test."""
    import adbc_driver_postgresql.dbapi as pg

    name = "t_" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:12]
    with pg.connect(postgres_server.uri, autocommit=True) as db, db.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        cur.execute(f"CREATE DATABASE {name}")
    yield postgres_server.database_uri(name)
    with pg.connect(postgres_server.uri, autocommit=True) as db, db.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def duckdb_uri(tmp_path: Path) -> str:
    """The URI of a DuckDB file (not created yet) in the test's folder."""
    return f"duckdb:///{tmp_path / 'market.duckdb'}"


@pytest.fixture(params=["duckdb", "postgresql"])
def database_uri(request) -> str:
    """Each kind of database in turn: a DuckDB file, then a fresh PostgreSQL database."""
    fixture = "duckdb_uri" if request.param == "duckdb" else "postgres_uri"
    return request.getfixturevalue(fixture)
