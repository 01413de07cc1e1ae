"""Jobs sharing a cold feature cache: each may build the file, none reads a half-written one
(a private temporary file renamed into place; a reader parses the very bytes it hashed)."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from helpers.cli import TINY, read_metrics, run_app, run_folders

from datamodules.cache import cached_frame

KEY = "k" * 64
ROWS = 200_000  # a few MB of parquet: long enough to write that readers meet it mid-write


def frame() -> pl.DataFrame:
    rng = np.random.default_rng(0)
    return pl.DataFrame({"a": rng.standard_normal(ROWS), "b": np.arange(ROWS)})


def hammer(args: tuple[str, int]) -> list[str]:
    """Load the cached frame again and again in one process; what went wrong, if anything."""
    folder, rounds = args
    expected = frame()
    problems = []
    for i in range(rounds):
        if i % 3 == 0:  # someone cleans the cache now and then: the next reader rebuilds it
            for p in Path(folder).glob(f"{KEY}.*"):
                p.unlink(missing_ok=True)
        got = cached_frame(folder, KEY, frame)
        if not got.equals(expected):
            problems.append(f"round {i}: a frame that differs from the one built")
    return problems


def test_concurrent_builders_and_readers_never_see_a_half_written_file(tmp_path):
    folder = str(tmp_path / "cache")
    with mp.get_context("spawn").Pool(4) as pool:
        problems = pool.map(hammer, [(folder, 12)] * 4)
    assert problems == [[], [], [], []]
    data, meta = Path(folder, f"{KEY}.parquet"), Path(folder, f"{KEY}.json")
    if data.exists():  # the last writer's file is whole and matches its record
        assert (
            json.loads(meta.read_text())["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
        )
    assert not list(Path(folder).glob(".*.tmp"))  # no temporary left behind


@pytest.mark.slow
def test_a_4_job_joblib_sweep_on_a_cold_cache_runs_on_the_same_features(tmp_path):
    cache = tmp_path / "cache"
    done = run_app(
        "-m",
        "+model=lstm",
        "model.optimizer.lr=0.001,0.002,0.003,0.004",  # one market for all: one cache key
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=4",
        f"paths.cache_dir={cache}",
        "logger=none",
        *TINY,
        output_root=tmp_path / "out",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "unreadable" not in done.stderr and "does not match its record" not in done.stderr
    folders = run_folders(tmp_path / "out")
    assert len(folders) == 4
    (parquet,) = cache.glob("*.parquet")
    meta = json.loads(parquet.with_suffix(".json").read_text())
    assert meta["sha256"] == hashlib.sha256(parquet.read_bytes()).hexdigest()
    assert not list(cache.glob(".*.tmp"))
    # Every job trained on the same bars: the same buy-and-hold result on the test split.
    holds = {json.dumps(read_metrics(f)["test"]["buy_and_hold"]) for f in folders}
    assert len(holds) == 1


CACHE_ON_A_FULL_DISK = """
import logging, resource, signal, sys
import numpy as np, polars as pl
from datamodules.cache import cached_frame
logging.basicConfig(level=logging.WARNING, format="%(message)s")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, resource.RLIM_INFINITY))
frame = pl.DataFrame({"a": np.random.default_rng(0).standard_normal(100_000)})
got = cached_frame(sys.argv[1], "k" * 64, lambda: frame)
print("same frame" if got.equals(frame) else "another frame")
"""


def test_a_cache_that_cannot_be_written_is_a_warning_and_the_run_goes_on(tmp_path):
    import subprocess
    import sys

    folder = tmp_path / "cache"
    done = subprocess.run(
        [sys.executable, "-c", CACHE_ON_A_FULL_DISK, str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "same frame"
    assert "could not write the feature cache" in done.stderr and "MB free there" in done.stderr
    assert not list(folder.iterdir())  # no partial file left behind
