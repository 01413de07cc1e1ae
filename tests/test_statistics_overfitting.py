"""envs.statistics.overfitting: the PBO by CSCV on small matrices worked out by hand, and on
noise and planted signals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from envs.statistics.overfitting import blocks_for, probability_of_overfitting


def blocks_matrix(means: list[list[float]]) -> np.ndarray:
    """Returns of N trials over S blocks of 2 bars: block j of trial n is (x + 1, x - 1) % with
    x = means[n][j], so a half of 2 blocks with means (p, q) has mean (p + q) / 2 and sample
    variance (4 d^2 + 4) / 3 with d = (p - q) / 2."""
    cols = [[v for x in row for v in (x + 1.0, x - 1.0)] for row in means]
    return np.array(cols).T / 100.0


def f(p: float, q: float) -> float:
    """A half's Sharpe ratio up to the constant sqrt(3) / 2: mean / sqrt(d^2 + 1)."""
    return (p + q) / 2 / math.sqrt(((p - q) / 2) ** 2 + 1)


def test_pbo_of_a_small_matrix_equals_the_hand_computation():
    # Trials A, B, C over 4 blocks; C(4, 2) = 6 in/out-of-sample splits.
    a, b, c = [2, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 3]
    # Half Sharpe ratios (up to a constant): f(2,0) = 0.707, f(0,1) = 0.447, f(1,1) = 1,
    # f(0,0) = 0, f(0,3) = 0.832.
    assert (f(2, 0), f(0, 1), f(1, 1), f(0, 3)) == pytest.approx((0.7071, 0.4472, 1, 0.8321), 1e-3)
    # IS {0,1}: A .707 > B .447 > C 0 -> A; OOS {2,3}: A 0, B .447, C .832 -> rank 1 of 3.
    # IS {0,2}: A .707 > B .447 > C 0 -> A; OOS {1,3}: A 0, B .447, C .832 -> rank 1.
    # IS {0,3}: C .832 > A .707 > B 0 -> C; OOS {1,2}: A 0, B 1, C 0 -> tied lowest: rank 1.5.
    # IS {1,2}: B 1 > A 0 = C 0 -> B; OOS {0,3}: A .707, B 0, C .832 -> rank 1.
    # IS {1,3}: C .832 > B .447 > A 0 -> C; OOS {0,2}: A .707, B .447, C 0 -> rank 1.
    # IS {2,3}: C .832 > B .447 > A 0 -> C; OOS {0,1}: A .707, B .447, C 0 -> rank 1.
    # w = rank / (N + 1): 0.25 five times (logit ln(1/3)) and 0.375 once (logit ln(0.6)).
    result = probability_of_overfitting(blocks_matrix([a, b, c]), blocks=4)
    assert result.chosen.tolist() == [0, 0, 2, 1, 2, 2]
    expected = [math.log(1 / 3)] * 2 + [math.log(0.6)] + [math.log(1 / 3)] * 3
    assert result.logits == pytest.approx(expected)
    assert result.pbo == 1.0
    assert (result.blocks, result.block_bars, result.splits, result.trials) == (4, 2, 6, 3)


def test_a_trial_best_in_every_half_has_no_overfitting():
    # D is (3 +- 1) % in every block: f(3, 3) = 3 beats every other half, in and out of
    # sample, so the in-sample winner is always ranked 3 of 3 out of sample: w = 0.75,
    # logit ln(3) > 0, PBO 0.
    result = probability_of_overfitting(
        blocks_matrix([[2, 0, 0, 0], [0, 1, 1, 0], [3, 3, 3, 3]]), blocks=4
    )
    assert result.logits == pytest.approx([math.log(3)] * 6)
    assert result.pbo == 0.0


def test_the_first_bars_that_do_not_fill_a_block_are_left_out():
    m = blocks_matrix([[2, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 3]])
    padded = np.vstack([np.full((3, 3), 0.5), m])  # 3 extra bars in front
    assert probability_of_overfitting(padded, blocks=4).logits == pytest.approx(
        probability_of_overfitting(m, blocks=4).logits
    )


def test_blocks_are_even_and_hold_at_least_four_bars():
    assert blocks_for(2000) == 16
    assert blocks_for(40) == 10
    assert blocks_for(9) == 2


def test_bad_matrices_are_refused():
    with pytest.raises(ValueError, match="N >= 2"):
        probability_of_overfitting(np.zeros((100, 1)))
    with pytest.raises(ValueError, match="finite"):
        probability_of_overfitting(np.full((100, 3), np.nan))
    with pytest.raises(ValueError, match="even"):
        probability_of_overfitting(np.zeros((100, 3)), blocks=5)


def test_pbo_is_one_half_for_pure_noise_and_below_a_tenth_with_a_planted_signal():
    # 50 trials of pure noise: the in-sample and out-of-sample halves are independent, so the
    # in-sample winner's out-of-sample rank is uniform and the PBO is 1/2 in expectation. A
    # single matrix's PBO varies (about 0.3 to 0.75 over draws), so the expectation is
    # estimated over 100 matrices (standard error about 0.015).
    rng = np.random.default_rng(7)
    noise = [
        probability_of_overfitting(rng.standard_normal((1000, 50)) * 0.01).pbo for _ in range(100)
    ]
    assert np.mean(noise) == pytest.approx(0.5, abs=0.05)
    assert np.median(noise) > 0.4
    # One of the 50 with a real edge (a per-bar Sharpe ratio of 0.2): it wins in sample and
    # stays near the top out of sample.
    planted = []
    for _ in range(10):
        m = rng.standard_normal((1000, 50)) * 0.01
        m[:, 17] += 0.002
        planted.append(probability_of_overfitting(m).pbo)
    assert max(planted) < 0.1
