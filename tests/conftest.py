"""Fixtures shared by the tests; helper functions live in the ``helpers`` package."""

from __future__ import annotations

from pathlib import Path

import pytest

from datamodules.market import Market
from datamodules.sources import SampleSource, SyntheticSource

# The fixtures' markets predate data.split's default gap of 20 bars; they keep no gap so
# their normalisation (fitted on the training split) stays what the tests were written on.
NO_GAP = {"gap_bars": 0}


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
