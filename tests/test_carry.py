"""Carrying weights between curriculum phases whose envs differ (modules/carry.py)."""

from __future__ import annotations

import pytest
import torch
from helpers.agents import SMALL_NET, dqn, ppo
from helpers.envs import env_cfg, env_factory

from datamodules.sources import SyntheticSource
from modules.agents.base import Evaluation
from modules.agents.ppo import PPOModule
from modules.carry import Layout, carry_weights


def _data(tickers):
    return SyntheticSource(
        tickers=tickers,
        bar_size="15min",
        seed=0,
        cache_dir=None,
        synthetic={"sessions": 30},
        split={"gap_bars": 0},
    ).build()


@pytest.fixture(scope="module")
def single():
    return _data(["NVDA"])


@pytest.fixture(scope="module")
def dual():
    return _data(["NVDA", "MSFT"])


def _ppo_on(data, env: dict, seed: int, network: dict | None = None, loss: dict | None = None):
    torch.manual_seed(seed)
    factory = env_factory(data.market, env)
    trading = factory(data.split.train, num_envs=4, seed=seed)
    evaluation = Evaluation(factory, data.split.val, data.split.test, seed)
    return PPOModule(
        trading,
        evaluation,
        collector={"frames_per_env": 8, "iterations": 1},
        network={**SMALL_NET, **(network or {})},
        loss=loss or {},
        optim={"minibatch_size": 16},
    )


def _dual_obs_from(old: Layout, new: Layout, single_obs: torch.Tensor) -> torch.Tensor:
    """Observations of the new env whose shared columns equal ``single_obs``; new ones random."""
    obs = torch.randn(single_obs.shape[0], len(new.inputs))
    for j, name in enumerate(new.inputs):
        if name in old.inputs:
            obs[:, j] = single_obs[:, old.inputs.index(name)]
    return obs


def test_same_env_copies_every_weight(single):
    before = ppo(single, seed=0)
    after = ppo(single, seed=1)
    report = carry_weights(after, before.state_dict(), before.layout(), after.layout())
    assert not report.shapes_changed
    for name, value in before.policy_net.state_dict().items():
        assert torch.equal(after.policy_net.state_dict()[name], value), name
    for name, value in before.value_net.state_dict().items():
        assert torch.equal(after.value_net.state_dict()[name], value), name


def test_new_ticker_inputs_start_at_zero_weight_and_new_actions_start_neutral(single, dual):
    before = _ppo_on(single, env_cfg("single_ticker"), seed=0)
    after = _ppo_on(dual, env_cfg("dual_ticker"), seed=1)
    old, new = before.layout(), after.layout()
    assert len(old.actions) == 3 and len(new.actions) == 9
    report = carry_weights(after, before.state_dict(), old, new)
    assert "held.MSFT" in report.new_inputs and "MSFT=+1" in report.new_actions
    weight = after.policy_net.trunk.encoder[0].weight
    for j, name in enumerate(new.inputs):
        if name not in old.inputs:
            assert torch.count_nonzero(weight[:, j]) == 0, name
    single_obs = torch.randn(5, len(old.inputs))
    with torch.no_grad():
        old_logits = before.policy_net(single_obs)
        new_logits = after.policy_net(_dual_obs_from(old, new, single_obs))
        old_value = before.value_net(single_obs)
        new_value = after.value_net(_dual_obs_from(old, new, single_obs))
    for j, meaning in enumerate(new.actions):
        source = old.actions.index(meaning) if meaning in old.actions else old.neutral
        torch.testing.assert_close(new_logits[:, j], old_logits[:, source], rtol=0, atol=1e-6)
    torch.testing.assert_close(new_value, old_value, rtol=0, atol=1e-6)
    # The loss module's copies are the same tensors as the networks'.
    head = after.loss_module.actor_network_params["module", "0", "module", "head", "weight"]
    assert torch.equal(head.data, after.policy_net.head.weight.data)


def test_dqn_q_values_of_new_actions_equal_the_old_neutral_action(single, dual):
    before = dqn(single, seed=0)
    after = dqn(dual, seed=1)
    old, new = before.layout(), after.layout()
    assert len(new.actions) == 9
    carry_weights(after, before.state_dict(), old, new)
    single_obs = torch.randn(4, len(old.inputs))
    with torch.no_grad():
        q_old = before.qnet(single_obs)
        q_new = after.qnet(_dual_obs_from(old, new, single_obs))
    flat = old.neutral
    for j, meaning in enumerate(new.actions):
        source = old.actions.index(meaning) if meaning in old.actions else flat
        torch.testing.assert_close(q_new[:, j], q_old[:, source], rtol=0, atol=1e-5)
    # The target network followed the online one through the carry.
    target = after.loss_module.target_value_network_params
    online = after.loss_module.value_network_params
    for key, value in online.items(include_nested=True, leaves_only=True):
        assert target.get(key).shape == value.shape


def test_recurrent_policy_carries_its_core_and_remaps_its_encoder(single, dual):
    gru = {"kind": "gru"}
    before = _ppo_on(single, env_cfg("single_ticker"), seed=0, network=gru)
    after = _ppo_on(dual, env_cfg("dual_ticker"), seed=1, network=gru)
    report = carry_weights(after, before.state_dict(), before.layout(), after.layout())
    assert not report.fresh
    torch.testing.assert_close(
        after.policy_net.trunk.core.cells[0].weight_hh,
        before.policy_net.trunk.core.cells[0].weight_hh,
    )


def test_a_layer_whose_width_changed_keeps_its_new_initialisation(single):
    before = _ppo_on(single, env_cfg("single_ticker"), seed=0)
    after = _ppo_on(single, env_cfg("single_ticker"), seed=1, network={"hidden_sizes": (32,)})
    report = carry_weights(after, before.state_dict(), before.layout(), after.layout())
    assert "policy_net.trunk.encoder.0.weight" in report.fresh
    assert report.shapes_changed and "left at their new initialisation" in report.summary()


def test_loss_coefficients_come_from_the_new_phase_config(single):
    before = _ppo_on(single, env_cfg("single_ticker"), seed=0, loss={"clip_epsilon": 0.2})
    after = _ppo_on(single, env_cfg("single_ticker"), seed=1, loss={"clip_epsilon": 0.1})
    carry_weights(after, before.state_dict(), before.layout(), after.layout())
    assert float(after.loss_module.clip_epsilon) == pytest.approx(0.1)


def test_layout_round_trips_through_a_plain_dict(single):
    layout = ppo(single).layout()
    assert Layout.from_dict(layout.to_dict()) == layout
