"""Tests of modules.ppo: PPO agents (MLP and recurrent) trained by Lightning on the trading env."""

from __future__ import annotations

import math

import pytest
import torch
from helpers.agents import fit, ppo, snapshot
from torchrl.objectives.value.functional import generalized_advantage_estimate

from datamodules.errors import ConfigError
from envs.risk import RULES
from modules.agents.ppo import ACTOR_STATE, CRITIC_STATE

pytestmark = pytest.mark.usefixtures("single_thread")


def changed(before: dict[str, torch.Tensor], net: torch.nn.Module) -> dict[str, bool]:
    return {k: not torch.equal(before[k], v) for k, v in net.state_dict().items()}


# ------------------------------------------------------------------ learning
def test_ppo_update_changes_both_networks(agent_data) -> None:
    module = ppo(agent_data)
    actor, critic = snapshot(module.policy_net), snapshot(module.value_net)
    fit(module, 1)
    assert all(changed(actor, module.policy_net).values())
    assert all(changed(critic, module.value_net).values())
    assert module.iteration == 1 and module.frames == 8 * 16


def test_ppo_logs_losses_diagnostics_rewards_and_risk(agent_data) -> None:
    module = ppo(agent_data, iterations=2, optim={"critic_epochs": 1})
    rec = fit(module, 2)
    logged = rec.steps[-1]
    expected = {
        "train/loss_objective",
        "train/loss_critic",
        "train/loss_entropy",
        "train/entropy",
        "train/kl",
        "train/clip_fraction",
        "train/explained_variance",
        "train/value",
        "train/advantage_std",
        "train/epochs_run",
        "train/kl_early_stop",
        "train/lr_actor",
        "train/lr_critic",
        "train/fps",
        "train/collect_fps",
        "train/frames",
        "train/iteration",
        "train/episodes",
        "train/episode_return",  # episodes of 10 bars end within 16 frames per env
        "train/reward",
        "train/reward_pnl_bps",
        "train/reward_cost_bps",
        "train/reward_penalty",
        "train/turnover",
        *(f"train/risk_{rule}" for rule in RULES),
    }
    assert expected <= set(logged)
    assert all(math.isfinite(logged[k]) for k in expected)
    assert rec.series("train/frames") == [128.0, 256.0]
    assert rec.series("train/iteration") == [1.0, 2.0]
    assert logged["train/episodes"] == module.tracker.completed >= 8
    assert logged["train/fps"] > 0 and logged["train/entropy"] > 0
    assert logged["train/epochs_run"] == 2 and logged["train/kl_early_stop"] == 0
    assert logged["train/lr_actor"] == pytest.approx(3e-4)
    assert logged["train/lr_critic"] == pytest.approx(1e-3)
    assert 0.0 <= logged["train/clip_fraction"] <= 1.0


def test_tiny_target_kl_stops_after_one_epoch(agent_data) -> None:
    # 4 minibatches per epoch: each after the first sees a policy that has moved, so the KL of
    # the first epoch is > 0 and must exceed 1e-9 in every iteration.
    module = ppo(
        agent_data,
        iterations=12,
        num_envs=4,
        frames_per_env=8,
        optim={"epochs": 2, "minibatch_size": 8, "target_kl": 1e-9, "actor_lr": 3e-3},
    )
    rec = fit(module, 12)
    assert rec.series("train/epochs_run") == [1.0] * 12
    assert rec.series("train/kl_early_stop") == [1.0] * 12


@pytest.mark.parametrize("target_kl", [None, 1e9])
def test_without_a_reachable_target_kl_every_epoch_runs(agent_data, target_kl) -> None:
    module = ppo(
        agent_data,
        num_envs=4,
        frames_per_env=8,
        optim={"epochs": 3, "minibatch_size": 8, "target_kl": target_kl},
    )
    rec = fit(module, 1)
    assert rec.series("train/epochs_run") == [3.0]
    assert rec.series("train/kl_early_stop") == [0.0]


@pytest.mark.parametrize(
    "schedule, factors",
    [
        ("constant", [1.0, 1.0, 1.0]),
        ("linear", [2 / 3, 1 / 3, 0.0]),
        ("cosine", [0.75, 0.25, 0.0]),
    ],
)
def test_lr_schedule_over_the_iterations(agent_data, schedule, factors) -> None:
    module = ppo(
        agent_data,
        iterations=3,
        frames_per_env=8,
        optim={"lr_schedule": schedule, "actor_lr": 1e-3, "critic_lr": 2e-3, "epochs": 1},
    )
    rec = fit(module, 3)
    # logged after the iteration's scheduler step: the last iteration ends at ~0 for linear
    lr_actor, lr_critic = rec.series("train/lr_actor"), rec.series("train/lr_critic")
    assert lr_actor == pytest.approx([1e-3 * f for f in factors], rel=1e-6, abs=1e-12)
    assert lr_critic == pytest.approx([2e-3 * f for f in factors], rel=1e-6, abs=1e-12)


def test_lr_schedule_needs_a_known_length(agent_data) -> None:
    module = ppo(agent_data, length={"episodes": 3}, optim={"lr_schedule": "linear"})
    with pytest.raises(ConfigError, match=r"model\.optim\.lr_schedule"):
        module.configure_optimizers()


def test_minibatches_are_frames_for_mlp_and_whole_rows_for_recurrent(agent_data) -> None:
    mlp = ppo(agent_data, optim={"minibatch_size": 48})
    batch = mlp.collect()
    mlp._advantages(batch)
    sizes = [mb.batch_size for mb in mlp._minibatches(batch)]
    assert sizes == [torch.Size([48]), torch.Size([48]), torch.Size([32])]

    gru = ppo(agent_data, network={"kind": "gru"}, optim={"minibatch_size": 48})
    batch = gru.collect()  # [8 envs, 16 frames]: 48 frames round to 3 rows
    gru._advantages(batch)
    sizes = [mb.batch_size for mb in gru._minibatches(batch)]
    assert sizes == [torch.Size([3, 16]), torch.Size([3, 16]), torch.Size([2, 16])]


# ------------------------------------------------------------------ advantages
def gae_by_hand(values, next_values, reward, done, terminated, gamma, lmbda):
    """The GAE recursion, one env row at a time: tensors (N, T, 1)."""
    adv = torch.zeros_like(values)
    carry = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        not_term = (~terminated[:, t]).float()
        not_done = (~done[:, t]).float()
        delta = reward[:, t] + gamma * not_term * next_values[:, t] - values[:, t]
        carry = delta + gamma * lmbda * not_done * carry
        adv[:, t] = carry
    return adv, adv + values


def test_advantages_equal_torchrl_gae_on_a_batch(agent_data) -> None:
    module = ppo(agent_data, loss={"gamma": 0.9, "gae_lambda": 0.8})
    batch = module.collect()
    assert bool(batch["next", "done"].any())  # episodes end inside the batch
    module._advantages(batch)

    with torch.no_grad():
        values = module.value_net(batch["observation"])
        next_values = module.value_net(batch["next", "observation"])
    reward = batch["next", "reward"]
    done, terminated = batch["next", "done"], batch["next", "terminated"]
    adv, target = generalized_advantage_estimate(
        0.9, 0.8, values, next_values, reward, done, terminated, time_dim=-2
    )
    torch.testing.assert_close(batch["state_value"], values)
    torch.testing.assert_close(batch["advantage"], adv)
    torch.testing.assert_close(batch["value_target"], target)

    by_hand, by_hand_target = gae_by_hand(values, next_values, reward, done, terminated, 0.9, 0.8)
    torch.testing.assert_close(batch["advantage"], by_hand, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(batch["value_target"], by_hand_target, rtol=1e-4, atol=1e-4)


def test_recurrent_advantages_replay_the_stored_critic_states(agent_data) -> None:
    module = ppo(agent_data, network={"kind": "gru"})
    batch = module.collect()
    module._advantages(batch)
    net = module.value_net
    n, t = batch.shape
    values, next_values = [], []
    with torch.no_grad():
        for i in range(t):  # one step at a time, from the state the collector stored
            step = batch[:, i]
            v, _ = net(step["observation"], step["is_init"], step[CRITIC_STATE])
            nv, _ = net(
                step["next", "observation"],
                torch.zeros(n, 1, dtype=torch.bool),
                step["next", CRITIC_STATE],
            )
            values.append(v)
            next_values.append(nv)
    values, next_values = torch.stack(values, 1), torch.stack(next_values, 1)
    torch.testing.assert_close(batch["state_value"], values, rtol=1e-4, atol=1e-5)
    adv, target = generalized_advantage_estimate(
        0.99,
        0.95,
        values,
        next_values,
        batch["next", "reward"],
        batch["next", "done"],
        batch["next", "terminated"],
        time_dim=-2,
    )
    torch.testing.assert_close(batch["advantage"], adv, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(batch["value_target"], target, rtol=1e-4, atol=1e-3)


# ------------------------------------------------------------------ recurrent PPO
def test_recurrent_ppo_trains_with_gru(agent_data) -> None:
    module = ppo(
        agent_data,
        iterations=2,
        num_envs=4,
        frames_per_env=12,
        network={"kind": "gru"},
        optim={"epochs": 1, "minibatch_size": 24},  # two rows of 12 frames
    )
    batch = module.collect()
    assert batch[ACTOR_STATE].shape == (4, 12, 1, 8)
    assert batch[CRITIC_STATE].shape == (4, 12, 1, 8)
    assert bool(batch["is_init"][:, 0].all())  # the first step of every env is a reset
    assert not bool(batch["is_init"][:, 1].any())
    assert not torch.equal(batch["next", ACTOR_STATE][:, 0], batch[ACTOR_STATE][:, 0])
    # the state a step starts from is the one the previous step ended with (no reset between)
    carried = ~batch["is_init"][:, 1:].squeeze(-1)
    torch.testing.assert_close(
        batch[ACTOR_STATE][:, 1:][carried], batch["next", ACTOR_STATE][:, :-1][carried]
    )

    actor, critic = snapshot(module.policy_net), snapshot(module.value_net)
    rec = fit(module, 2)
    assert all(changed(actor, module.policy_net).values())  # encoder, GRU cell and head
    assert all(changed(critic, module.value_net).values())
    assert any(k.startswith("trunk.core.") for k in actor)
    assert all(math.isfinite(v) for v in rec.steps[-1].values())
    assert rec.series("train/iteration") == [1.0, 2.0]
    assert rec.series("train/frames") == [48.0, 96.0]


def test_recurrent_greedy_policy_carries_state(agent_data) -> None:
    module = ppo(agent_data, network={"kind": "gru"})
    with torch.no_grad():  # sharpen the near-uniform first policy so the state shows
        module.policy_net.head.weight.mul_(300.0)
    obs_dim = int(module.env.observation_spec["observation"].shape[-1])
    paths, steps = 32, 6
    torch.manual_seed(1)
    history = torch.randn(paths, steps, obs_dim)

    def after_history(obs: torch.Tensor) -> torch.Tensor:
        act = module.greedy_policy()
        for i in range(steps):  # a different history per path ...
            act(history[:, i])
        return act(obs)  # ... then one observation

    candidates = [torch.randn(1, obs_dim).expand(paths, obs_dim) for _ in range(4)]
    differ = [len(set(after_history(same).tolist())) > 1 for same in candidates]
    assert any(differ)  # identical observations, different actions after different histories
    for same in candidates:  # a fresh policy starts from a zero state: one action for all
        assert len(set(module.greedy_policy()(same).tolist())) == 1

    # Stepping the greedy policy equals running the whole sequence through the network.
    same = candidates[differ.index(True)]
    seq = torch.cat([history, same.unsqueeze(1)], dim=1)
    zeros = torch.zeros(paths, steps + 1, *module.net_cfg.state_shape)
    with torch.no_grad():
        logits, _ = module.policy_net(seq, torch.zeros(paths, steps + 1, dtype=torch.bool), zeros)
    assert torch.equal(after_history(same), logits[:, -1].argmax(-1))


def test_mlp_greedy_policy_is_a_function_of_the_observation(agent_data) -> None:
    module = ppo(agent_data)
    act = module.greedy_policy()
    obs = torch.randn(16, int(module.env.observation_spec["observation"].shape[-1]))
    first = act(obs)
    act(torch.randn_like(obs))
    assert torch.equal(act(obs), first)
    assert torch.equal(first, module.policy_net(obs).argmax(-1))


# ------------------------------------------------------------------ config errors
@pytest.mark.parametrize(
    "optim, match",
    [
        ({"epochs": 0}, r"model\.optim\.epochs"),
        ({"critic_epochs": -1}, "critic_epochs"),
        ({"minibatch_size": 0}, r"model\.optim\.minibatch_size"),
    ],
)
def test_optim_config_errors(agent_data, optim, match) -> None:
    with pytest.raises(ConfigError, match=match):
        ppo(agent_data, optim=optim)


def test_unknown_lr_schedule_is_a_config_error_before_the_agent_is_built(agent_data) -> None:
    with pytest.raises(ConfigError, match=r"model\.optim\.lr_schedule is 'step'"):
        ppo(agent_data, optim={"lr_schedule": "step"})
