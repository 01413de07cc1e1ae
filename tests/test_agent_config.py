"""Tests of modules.agents.config: the agents' config sections, checked at construction (the
run's config check builds them before anything heavy is imported)."""

from __future__ import annotations

import pytest

from datamodules.config import dataclass_from
from datamodules.errors import ConfigError
from modules.agents.config import (
    CollectorConfig,
    DQNLossConfig,
    DQNOptimConfig,
    ExplorationConfig,
    PPOLossConfig,
    PPOOptimConfig,
    ReplayCollectorConfig,
    ReplayConfig,
)

KEYS = ("iterations", "total_frames", "episodes")


# ------------------------------------------------------------------ the run's length
def test_iterations_win_over_frames_and_episodes() -> None:
    length = CollectorConfig(iterations=3, total_frames=10_000, episodes=5)
    assert length.max_iterations(100) == 3
    assert length.describe == "3 iterations"


def test_total_frames_win_over_episodes_and_round_up_to_whole_iterations() -> None:
    length = CollectorConfig(total_frames=1000, episodes=5)
    assert length.max_iterations(300) == 4  # 1000 / 300 = 3.33 -> 4
    assert length.max_iterations(250) == 4
    assert length.max_iterations(5000) == 1
    assert length.describe == "1,000 frames"


def test_episodes_alone_leave_the_iterations_open() -> None:
    length = CollectorConfig(episodes=7)
    assert length.max_iterations(100) is None
    assert length.describe == "7 episodes"


def test_no_length_names_every_collector_key() -> None:
    with pytest.raises(ConfigError) as err:
        CollectorConfig()
    for key in KEYS:
        assert f"model.collector.{key}" in str(err.value)


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("value", [0, -3])
def test_values_below_one_are_rejected(key, value) -> None:
    with pytest.raises(ConfigError, match=rf"model\.collector\.{key} is {value}"):
        CollectorConfig(**{key: value})


def test_a_bad_value_is_rejected_even_when_another_key_wins() -> None:
    with pytest.raises(ConfigError, match=r"model\.collector\.episodes"):
        CollectorConfig(iterations=2, episodes=0)


# ------------------------------------------------------------------ the sections' checks
@pytest.mark.parametrize(
    ("build", "key"),
    [
        (lambda: PPOLossConfig(gamma=1.5), "model.loss.gamma"),
        (lambda: PPOLossConfig(critic_loss="huber"), "model.loss.critic_loss"),
        (lambda: PPOOptimConfig(epochs=0), "model.optim.epochs"),
        (lambda: PPOOptimConfig(minibatch_size=0), "model.optim.minibatch_size"),
        (lambda: PPOOptimConfig(lr_schedule="step"), "model.optim.lr_schedule"),
        (lambda: DQNLossConfig(target_update="slow"), "model.loss.target_update"),
        (lambda: DQNLossConfig(n_steps=0), "model.loss.n_steps"),
        (lambda: ReplayConfig(size=10, batch_size=32), "model.replay.size"),
        (lambda: ExplorationConfig(schedule="cosine"), "model.exploration.schedule"),
        (lambda: ReplayCollectorConfig(iterations=1, learning_starts=-1), "learning_starts"),
        (lambda: DQNOptimConfig(compile="yes"), "model.optim.compile"),
        (lambda: DQNOptimConfig(compile=1), "model.optim.compile"),
        (lambda: DQNOptimConfig(compile_min_updates=-1), "model.optim.compile_min_updates"),
    ],
)
def test_a_bad_value_names_its_key(build, key) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build()


def test_dqn_compile_is_auto_by_default_and_takes_true_and_false() -> None:
    assert DQNOptimConfig().compile == "auto"
    assert DQNOptimConfig(compile=True).compile is True
    assert DQNOptimConfig(compile=False).compile is False


def test_minibatch_size_auto_is_kept_for_the_agent_to_size() -> None:
    assert PPOOptimConfig(minibatch_size="auto").minibatch_size == "auto"


def test_sections_come_from_mappings_with_unknown_keys_named() -> None:
    assert dataclass_from(PPOLossConfig, {"gamma": 0.9}, "model.loss").gamma == 0.9
    assert dataclass_from(PPOLossConfig, None, "model.loss") == PPOLossConfig()
    with pytest.raises(ConfigError, match="model.loss has unknown key"):
        dataclass_from(PPOLossConfig, {"gama": 0.9}, "model.loss")
