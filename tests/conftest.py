"""Shared helpers: run the app as a user would, in a subprocess, with outputs in tmp_path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from datamodules.market import Market
from datamodules.pipeline import build_market_data

ENV_CONF = Path(__file__).resolve().parents[1] / "conf" / "env"


def env_cfg(name: str = "single_ticker", **sections) -> dict:
    """conf/env/<name>.yaml merged over single_ticker.yaml (as Hydra's defaults list does),
    with ``sections`` merged over its sections (dicts) or replacing its values."""
    cfg = OmegaConf.load(ENV_CONF / "single_ticker.yaml")
    if name != "single_ticker":
        extra = OmegaConf.load(ENV_CONF / f"{name}.yaml")
        extra.pop("defaults")
        cfg = OmegaConf.merge(cfg, extra)
    out = OmegaConf.to_container(cfg)
    for key, value in sections.items():
        out[key] = {**out[key], **value} if isinstance(value, dict) else value
    return out


# A run small enough for tests: 120 sessions of 15-min bars, one short epoch.
TINY = [
    "data.synthetic.sessions=120",
    "model.trainer.max_epochs=1",
    "model.trainer.limit_train_batches=4",
    "print_config=false",
    "export.enabled=false",  # export has its own tests (test_export.py)
]


def app_env() -> dict:
    """The environment the app runs in for tests: W&B offline and quiet, no inherited rank."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0"}
    env.pop("LOCAL_RANK", None)
    return env


def run_app(
    *args: str, output_root: Path, module: str = "experiments", timeout: int = 600
) -> subprocess.CompletedProcess:
    """``python -m experiments ARGS`` with W&B offline and outputs under ``output_root``."""
    cmd = [sys.executable, "-m", module, *args]
    if module == "experiments":
        cmd.append(f"paths.output_root={output_root}")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=app_env())


def ctrl_c_once(cmd: list[str], watch: Path, pattern: str, timeout: float = 300) -> tuple[int, str]:
    """Start ``cmd``, send it one SIGINT as soon as a file matching ``pattern`` appears under
    ``watch`` (training is under way), and return its exit status and stderr."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=app_env()
    )
    deadline = time.time() + timeout
    while time.time() < deadline and not list(watch.rglob(pattern)):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def run_folders(output_root: Path) -> list[Path]:
    """Job folders (those holding metrics.json) under ``output_root``, oldest first."""
    return sorted(p.parent for p in output_root.rglob("metrics.json"))


def read_metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "outputs"


@pytest.fixture(scope="session")
def synthetic() -> Market:
    """Three synthetic tickers, 60 sessions of 15-minute bars."""
    return build_market_data(
        source="synthetic",
        tickers=["AAA", "BBB", "CCC"],
        bar_size="15min",
        seed=0,
        cache_dir=None,
        synthetic={"sessions": 60},
    ).market


@pytest.fixture(scope="session")
def msft() -> Market:
    """Real daily MSFT prices from the shipped sample."""
    return build_market_data(
        source="sample", tickers=["MSFT"], bar_size="1d", seed=0, cache_dir=None
    ).market


BARS = 8  # bars per crafted session: 10:00 to 11:45 in 15-minute bars (two clock hours)


def crafted(
    close: list[float] | np.ndarray, open_: list[float] | np.ndarray | None = None
) -> Market:
    """A market with the given closes, (T,) or (T, A), 15-minute bars, sessions of ``BARS``
    bars from 10:00; each open is the previous close unless given."""
    c = np.asarray(close, dtype=np.float64)
    c = c[:, None] if c.ndim == 1 else c
    if open_ is None:
        o = np.concatenate([c[:1], c[:-1]])
    else:
        o = np.asarray(open_, dtype=np.float64).reshape(c.shape)
    n, a = c.shape
    bar = np.arange(n)
    stamps = (
        np.datetime64("2024-01-01T10:00", "m")
        + (bar // BARS) * np.timedelta64(1, "D")
        + (bar % BARS) * np.timedelta64(15, "m")
    ).astype("datetime64[us]")
    return Market(
        tickers=tuple(f"X{i}" for i in range(a)),
        timestamps=stamps,
        open=o,
        high=np.maximum(o, c),
        low=np.minimum(o, c),
        close=c,
        volume=np.full((n, a), 1e6),
        session=bar // BARS,
        bar_minutes=15.0,
        bars_per_session=float(BARS),
        sessions_per_year=252.0,
        features=np.log(c / o).astype(np.float32)[:, :, None],
        feature_names=("gap",),
        time_features=np.zeros((n, 0), np.float32),
        time_feature_names=(),
        sigma=np.full((n, a), 0.01),
        adv=np.full((n, a), 1e6),
    )


# ------------------------------------------------------------------ RL agents (see agent_helpers)
@pytest.fixture(scope="session")
def agent_data():
    """One synthetic ticker, 40 sessions of 15-minute bars, split train/val/test."""
    return build_market_data(
        source="synthetic",
        tickers=["AAA"],
        bar_size="15min",
        seed=0,
        window=4,
        cache_dir=None,
        synthetic={"sessions": 40},
    )


@pytest.fixture
def single_thread():
    """Tiny networks step faster on one intra-op thread (and far faster when the cores are
    shared with other processes); the thread count is restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
