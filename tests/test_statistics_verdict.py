"""envs.statistics.verdict: a split's intervals, PSRs and one-sided verdict against
buy-and-hold and flat; its false-positive rate on markets with nothing to find."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from envs.statistics.verdict import split_statistics

YEAR = 252


def market(rng: np.random.Generator, bars: int, drift: float = 0.0) -> np.ndarray:
    return rng.standard_normal(bars) * 0.01 + drift


def test_a_strategy_with_a_real_edge_beats_buy_and_hold_and_flat():
    rng = np.random.default_rng(0)
    r = market(rng, 1500)
    edge = np.abs(r) * 0.3 + rng.standard_normal(1500) * 0.002  # knows part of each move
    stats = split_statistics("test", {"strategy": edge, "buy_and_hold": r}, YEAR, reps=500)
    assert stats.beats_benchmark and stats.beats_flat
    assert stats.psr_zero["strategy"] > 0.99 and stats.psr_benchmark > 0.99
    assert "beats buy-and-hold" in stats.sentence() and "beats flat" in stats.sentence()


def test_buy_and_hold_itself_does_not_beat_buy_and_hold():
    r = market(np.random.default_rng(1), 800, drift=0.001)
    stats = split_statistics("test", {"strategy": r, "buy_and_hold": r}, YEAR, reps=300)
    assert stats.beats_benchmark is False
    assert stats.difference.value == 0.0
    assert stats.psr_benchmark == pytest.approx(0.5)
    assert stats.sentence("lstm").startswith("lstm does not beat buy-and-hold")


def test_the_json_and_the_logged_scalars_carry_every_interval_and_no_nan():
    rng = np.random.default_rng(2)
    r = market(rng, 400)
    series = {"strategy": r * 0.5, "buy_and_hold": r, "flat": np.zeros(400)}
    stats = split_statistics("val", series, YEAR, reps=200, seed=3)
    doc = json.loads(json.dumps(stats.as_json(), allow_nan=False))
    assert doc["intervals"]["flat"]["sharpe"]["value"] is None  # a flat line has no Sharpe
    assert set(doc["intervals"]["strategy"]) == {
        "sharpe",
        "sortino",
        "annual_return",
        "max_drawdown",
    }
    assert doc["seed"] == 3 and doc["resamples"] == 200 and doc["one_sided"] is True
    scalars = stats.scalars("val/")
    assert {"val/sharpe_low", "val/sharpe_high", "val/psr", "val/beats_flat"} <= set(scalars)
    assert {"val/buy_and_hold_sharpe_low", "val/sharpe_diff_vs_buy_and_hold_low"} <= set(scalars)
    assert all(v is None or math.isfinite(v) for v in scalars.values())


def test_without_buy_and_hold_only_the_verdict_against_flat_is_given():
    stats = split_statistics("test", {"strategy": market(np.random.default_rng(4), 300)}, YEAR)
    assert stats.beats_benchmark is None and stats.difference is None
    assert "buy-and-hold" not in stats.sentence()


@pytest.mark.slow
def test_a_random_signal_beats_buy_and_hold_in_5_percent_of_markets_with_nothing_to_find():
    # 1,000 markets of 500 bars with zero drift and no costs; the strategy holds a random
    # position in {-1, 0, 1} each bar. Neither it nor buy-and-hold has an edge, so a
    # one-sided 95% verdict may call it a winner in 5% +- 2.5% of them; the same for flat.
    rng = np.random.default_rng(12)
    beats_hold = beats_flat = 0
    for i in range(1000):
        r = market(rng, 500)
        signal = rng.integers(-1, 2, size=500)
        stats = split_statistics(
            "test", {"strategy": signal * r, "buy_and_hold": r}, YEAR, reps=1000, seed=i
        )
        beats_hold += stats.beats_benchmark
        beats_flat += stats.beats_flat
    assert beats_hold / 1000 == pytest.approx(0.05, abs=0.025), beats_hold
    assert beats_flat / 1000 == pytest.approx(0.05, abs=0.025), beats_flat
