"""envs.statistics.multiple: Hansen's SPA test of many configurations against buy-and-hold."""

from __future__ import annotations

import numpy as np

from envs.statistics.multiple import superior_ability


def test_noise_configurations_do_not_beat_the_benchmark():
    rng = np.random.default_rng(0)
    hold = rng.standard_normal(1500) * 0.01
    models = rng.standard_normal((1500, 20)) * 0.01
    spa = superior_ability(hold, models, reps=500, seed=1)
    assert not spa.rejects()
    assert spa.lower <= spa.consistent <= spa.upper
    assert (spa.models, spa.bars, spa.reps) == (20, 1500, 500)


def test_one_configuration_with_an_edge_makes_the_best_beat_the_benchmark():
    rng = np.random.default_rng(1)
    hold = rng.standard_normal(1500) * 0.01
    models = rng.standard_normal((1500, 20)) * 0.01
    models[:, 4] += 0.002
    spa = superior_ability(hold, models, reps=500, seed=1)
    assert spa.rejects() and spa.best == 4
    assert spa.as_json()["p_value"] < 0.05


def test_the_same_seed_gives_the_same_p_value():
    rng = np.random.default_rng(2)
    hold, models = rng.standard_normal(500) * 0.01, rng.standard_normal((500, 5)) * 0.01
    a = superior_ability(hold, models, reps=300, seed=3)
    b = superior_ability(hold, models, reps=300, seed=3)
    assert a == b
