"""Tests of modules.dqn: DQN agents trained by Lightning on the trading env (replay, update
budget, exploration, target networks, n-step returns, checkpointable replay state)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from helpers.agents import dqn, fit, snapshot, trainer
from tensordict import TensorDict

from datamodules.errors import ConfigError
from modules.agents.config import ExplorationConfig
from modules.agents.replay import load_replay_state, replay_state

pytestmark = pytest.mark.usefixtures("single_thread")

FRAMES = 8 * 8  # frames per iteration of agent_helpers.dqn: 8 envs x 8 frames


def online_and_target(module) -> tuple[TensorDict, TensorDict]:
    loss = module.loss_module
    return loss.value_network_params.detach().clone(), loss.target_value_network_params.clone()


def same(a: TensorDict, b: TensorDict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a.keys(True, True))


class Targets(pl.Callback):
    """Online and target parameters after each iteration."""

    def __init__(self) -> None:
        self.online: list[TensorDict] = []
        self.target: list[TensorDict] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        online, target = online_and_target(pl_module)
        self.online.append(online)
        self.target.append(target)


def fit_tracking_targets(module, iterations: int) -> Targets:
    targets = Targets()
    trainer(iterations, callbacks=[targets]).fit(module)
    return targets


# ------------------------------------------------------------------ replay and updates
def test_replay_fills_with_every_collected_transition(agent_data) -> None:
    module = dqn(agent_data, iterations=3)
    rec = fit(module, 3)
    assert rec.series("train/replay_size") == [FRAMES, 2 * FRAMES, 3 * FRAMES]
    assert len(module.replay) == 3 * FRAMES
    assert rec.series("train/frames") == [FRAMES, 2 * FRAMES, 3 * FRAMES]


def test_replay_keeps_the_latest_size_transitions(agent_data) -> None:
    module = dqn(agent_data, iterations=3, replay={"size": 100})
    rec = fit(module, 3)
    assert rec.series("train/replay_size") == [64.0, 100.0, 100.0]


def test_no_updates_before_learning_starts(agent_data) -> None:
    module = dqn(agent_data, iterations=3, learning_starts=2 * FRAMES)
    before = snapshot(module.qnet)
    rec = fit(module, 3)
    # 0.25 updates per frame once the buffer holds learning_starts frames
    assert rec.series("train/updates") == [0.0, 16.0, 32.0]
    assert module.updates == 32
    assert "train/loss" not in rec.steps[0] and "train/loss" in rec.steps[1]
    assert all(math.isfinite(rec.steps[-1][k]) for k in ("train/loss", "train/td_error"))
    assert any(not torch.equal(before[k], v) for k, v in module.qnet.state_dict().items())


def test_nothing_is_learned_while_the_buffer_fills(agent_data) -> None:
    module = dqn(agent_data, iterations=1, learning_starts=1000)
    before = snapshot(module.qnet)
    rec = fit(module, 1)
    assert rec.series("train/updates") == [0.0]
    assert all(torch.equal(before[k], v) for k, v in module.qnet.state_dict().items())
    assert rec.series("train/epsilon") == [1.0]  # exploration decays from learning_starts


def test_updates_follow_updates_per_frame_with_fractions_carried_over(agent_data) -> None:
    module = dqn(agent_data, iterations=3, optim={"updates_per_frame": 0.01})
    rec = fit(module, 3)
    # 0.64 updates per iteration: 0.64 -> 0, 1.28 -> 1, 1.92 -> 1
    assert rec.series("train/updates") == [0.0, 1.0, 1.0]
    assert module._update_debt == pytest.approx(0.92)


# ------------------------------------------------------------------ exploration
def test_linear_epsilon() -> None:
    cfg = ExplorationConfig(schedule="linear", eps_start=1.0, eps_end=0.1, decay_frames=100)
    assert cfg.epsilon(0) == 1.0
    assert cfg.epsilon(50) == pytest.approx(0.55)
    assert cfg.epsilon(100) == pytest.approx(0.1)
    assert cfg.epsilon(10_000) == pytest.approx(0.1)


def test_exponential_epsilon() -> None:
    cfg = ExplorationConfig(schedule="exponential", eps_start=1.0, eps_end=0.1, decay_frames=100)
    assert cfg.epsilon(0) == pytest.approx(1.0)
    assert cfg.epsilon(100) == pytest.approx(0.1 + 0.9 / math.e)
    assert cfg.epsilon(200) == pytest.approx(0.1 + 0.9 / math.e**2)
    assert cfg.epsilon(100_000) == pytest.approx(0.1)


@pytest.mark.parametrize("schedule", ["linear", "exponential"])
def test_training_epsilon_follows_the_schedule_after_learning_starts(agent_data, schedule) -> None:
    module = dqn(
        agent_data,
        iterations=3,
        learning_starts=FRAMES,
        exploration={"schedule": schedule, "eps_end": 0.2, "decay_frames": 100},
    )
    rec = fit(module, 3)
    cfg = module.exploration
    expected = [cfg.epsilon(0), cfg.epsilon(FRAMES), cfg.epsilon(2 * FRAMES)]
    assert rec.series("train/epsilon") == pytest.approx(expected)
    assert module.explore.epsilon == pytest.approx(expected[-1])
    assert expected[0] > expected[1] > expected[2] > 0.2 - 1e-9


def test_epsilon_greedy_explores_with_probability_epsilon(agent_data) -> None:
    module = dqn(agent_data)
    td = TensorDict({"action": torch.zeros(4000, dtype=torch.long)}, batch_size=[4000])
    module.explore.epsilon = 0.0
    assert bool((module.explore(td.clone())["action"] == 0).all())
    module.explore.epsilon = 0.6
    actions = module.explore(td.clone())["action"]
    # random actions are uniform over 3, so 0.6 x 2/3 = 40 % of actions change
    assert float((actions != 0).float().mean()) == pytest.approx(0.4, abs=0.03)
    assert set(actions.tolist()) == {0, 1, 2}


def test_greedy_policy_is_the_argmax_of_q(agent_data) -> None:
    module = dqn(agent_data)
    obs = torch.randn(16, int(module.env.observation_spec["observation"].shape[-1]))
    assert torch.equal(module.greedy_policy()(obs), module.qnet(obs).argmax(-1))


# ------------------------------------------------------------------ target networks
def test_hard_target_update_copies_every_period_updates(agent_data) -> None:
    # one update per iteration (1/64 per frame), a copy every 3 updates
    module = dqn(
        agent_data,
        iterations=6,
        loss={"target_update": "hard", "hard_update_period": 3},
        optim={"updates_per_frame": 1 / FRAMES},
    )
    seen = fit_tracking_targets(module, 6)
    copied = [same(o, t) for o, t in zip(seen.online, seen.target, strict=True)]
    assert copied == [False, False, True, False, False, True]


def test_hard_target_is_a_frozen_copy_between_updates(agent_data) -> None:
    module = dqn(
        agent_data,
        iterations=8,
        loss={"target_update": "hard", "hard_update_period": 3},
        optim={"updates_per_frame": 1 / FRAMES},
    )
    initial, _ = online_and_target(module)
    assert same(initial, module.loss_module.target_value_network_params)
    seen = fit_tracking_targets(module, 8)
    # every target is the initial weights or an earlier online network, never a blend
    earlier = [initial, *seen.online]
    for i, target in enumerate(seen.target):
        assert any(same(target, o) for o in earlier[: i + 2])
    assert same(seen.target[0], initial)  # one update: no copy yet
    assert same(seen.target[1], initial)
    copies = [
        i for i, (o, t) in enumerate(zip(seen.online, seen.target, strict=True)) if same(o, t)
    ]
    assert copies  # the target was refreshed, and stays fixed until the next copy
    first = copies[0]
    assert not same(seen.target[first], initial)
    assert same(seen.target[first + 1], seen.target[first])


def test_soft_target_update_is_polyak_averaging(agent_data) -> None:
    module = dqn(
        agent_data,
        loss={"target_update": "soft", "tau": 0.1},
        optim={"updates_per_frame": 1 / FRAMES},  # exactly one update
    )
    initial, _ = online_and_target(module)
    rec = fit(module, 1)
    assert rec.series("train/updates") == [1.0]
    online, target = online_and_target(module)
    assert not same(online, initial)
    for key in initial.keys(True, True):
        expected = 0.9 * initial[key] + 0.1 * online[key]
        torch.testing.assert_close(target[key], expected)


# ------------------------------------------------------------------ n-step returns
def test_n_step_transitions_carry_steps_to_next_obs(agent_data) -> None:
    module = dqn(agent_data, loss={"n_steps": 3}, optim={"updates_per_frame": 1 / FRAMES})
    fit(module, 1)
    stored = module.replay[: len(module.replay)]
    assert {"steps_to_next_obs", "gamma", "nonterminal"} <= set(stored.keys())
    steps = stored["steps_to_next_obs"]
    assert set(steps.tolist()) <= {1, 2, 3} and int(steps.max()) == 3
    torch.testing.assert_close(stored["gamma"], 0.99 ** steps.float())
    # Rows of one env are stored in order: a full 3-step transition's next observation is the
    # observation three bars later (unless the episode ended at the third bar: then a reset
    # follows). Done flags stay those of each transition's own step.
    per_env = stored.reshape(8, 8)
    checked = 0
    for env in range(8):
        row = per_env[env]
        for t in range(8 - 3):
            if int(row["steps_to_next_obs"][t]) == 3 and not bool(row["next", "done"][t + 2]):
                torch.testing.assert_close(row["next", "observation"][t], row["observation"][t + 3])
                checked += 1
    assert checked > 10


def test_one_step_transitions_have_no_n_step_keys(agent_data) -> None:
    module = dqn(agent_data, loss={"n_steps": 1}, optim={"updates_per_frame": 1 / FRAMES})
    assert module.postproc() is None
    fit(module, 1)
    stored = module.replay[: len(module.replay)]
    assert not {"steps_to_next_obs", "gamma", "nonterminal"} & set(stored.keys())


# ------------------------------------------------------------------ replay state
def saved_and_loaded(agent_data, tmp_path, prioritized: bool):
    """A DQN agent after two iterations, and a fresh one given its replay state through
    torch.save and a weights-only torch.load."""
    module = dqn(agent_data, iterations=2, replay={"prioritized": prioritized})
    fit(module, 2)  # two batches stored, priorities updated by 32 updates
    path = tmp_path / "replay.pt"
    torch.save(replay_state(module.replay), path)
    state = torch.load(path, weights_only=True)
    fresh = dqn(agent_data, iterations=2, replay={"prioritized": prioritized})
    load_replay_state(fresh.replay, state)
    return module, fresh


@pytest.mark.parametrize("prioritized", [True, False])
def test_replay_state_restores_size_cursor_and_priorities(agent_data, tmp_path, prioritized):
    module, fresh = saved_and_loaded(agent_data, tmp_path, prioritized)
    assert len(fresh.replay) == len(module.replay) == 2 * FRAMES
    assert fresh.replay._writer._cursor == module.replay._writer._cursor
    if prioritized:
        ours, theirs = module.replay.sampler, fresh.replay.sampler
        stored = range(2 * FRAMES)
        sums = [ours._sum_tree[i] for i in stored]
        assert len(set(sums)) > 1  # updates made the priorities differ
        assert [theirs._sum_tree[i] for i in stored] == sums
        assert [theirs._min_tree[i] for i in stored] == [ours._min_tree[i] for i in stored]


@pytest.mark.parametrize("prioritized", [True, False])
def test_replay_state_round_trip_gives_the_same_sample(agent_data, tmp_path, prioritized):
    module, fresh = saved_and_loaded(agent_data, tmp_path, prioritized)
    samples = []
    for buffer in (module.replay, fresh.replay):
        torch.manual_seed(7)
        np.random.seed(7)
        samples.append(buffer.sample())
    ours, theirs = samples
    assert set(theirs.keys(True, True)) == set(ours.keys(True, True))
    for key in ours.keys(True, True):
        torch.testing.assert_close(ours[key], theirs[key])
    if prioritized:
        weights = ours["priority_weight"]
        assert not torch.allclose(weights, weights[0].expand_as(weights))  # not uniform


def test_replay_state_holds_only_plain_values(agent_data) -> None:
    module = dqn(agent_data)
    fit(module, 1)

    def plain(value) -> bool:
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, list | tuple):
            return all(plain(v) for v in value)
        return value is None or isinstance(value, torch.Tensor | int | float | bool | str)

    assert plain(replay_state(module.replay))


# ------------------------------------------------------------------ config errors
@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_recurrent_q_network_is_a_config_error(agent_data, kind) -> None:
    with pytest.raises(ConfigError, match="model/network=mlp"):
        dqn(agent_data, network={"kind": kind})


@pytest.mark.parametrize(
    "section, values, match",
    [
        ("loss", {"target_update": "polyak"}, r"model\.loss\.target_update"),
        ("loss", {"n_steps": 0}, r"model\.loss\.n_steps"),
        ("exploration", {"schedule": "cosine"}, r"model\.exploration\.schedule"),
        ("replay", {"size": 16, "batch_size": 32}, r"model\.replay\.size"),
        ("replay", {"batch_size": 0}, r"model\.replay\.batch_size"),
        ("optim", {"updates_per_frame": 0}, r"model\.optim\.updates_per_frame"),
    ],
)
def test_config_errors_name_the_key(agent_data, section, values, match) -> None:
    with pytest.raises(ConfigError, match=match):
        dqn(agent_data, **{section: values})


def test_linear_lr_schedule_reaches_zero_at_the_last_iteration(agent_data) -> None:
    module = dqn(
        agent_data, iterations=3, learning_starts=FRAMES + 1, optim={"lr_schedule": "linear"}
    )
    rec = fit(module, 3)
    assert rec.series("train/updates")[0] == 0
    assert rec.series("train/lr")[-1] == pytest.approx(0.0, abs=1e-12)


def test_linear_lr_schedule_without_a_warm_up(agent_data) -> None:
    module = dqn(agent_data, iterations=3, optim={"lr_schedule": "linear", "lr": 1e-3})
    rec = fit(module, 3)
    lrs = rec.series("train/lr")
    assert lrs == pytest.approx([1e-3 * 2 / 3, 1e-3 / 3, 0.0], rel=1e-6, abs=1e-12)
