"""Fixtures shared by the tests; helper functions live in the ``helpers`` package."""

from __future__ import annotations

from pathlib import Path

import pytest

from datamodules.market import Market
from datamodules.pipeline import build_market_data


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
