"""DQN's update on plain tensors gives TorchRL's DQNLoss numbers: the same loss, squared TD
errors (the priorities) and gradients, bitwise, for every loss option; and its fused target
update is SoftUpdate's and HardUpdate's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.agents import SMALL_NET, dqn, env_and_evaluation, fit
from tensordict import TensorDict

from modules.agents.dqn import _LOSS_KEYS, DQNModule

pytestmark = pytest.mark.usefixtures("single_thread")

OPTIONS = [
    {"double_dqn": True, "n_steps": 3, "loss_function": "smooth_l1"},
    {"double_dqn": False, "n_steps": 3, "loss_function": "l2"},
    {"double_dqn": True, "n_steps": 1, "loss_function": "l2"},
    {"double_dqn": False, "n_steps": 1, "loss_function": "smooth_l1"},
]


def trained(agent_data, **kwargs):
    torch.manual_seed(0)
    np.random.seed(0)
    module = dqn(agent_data, iterations=2, **kwargs)
    fit(module, 2)  # a filled buffer with updated priorities, moved weights and targets
    return module


@pytest.mark.parametrize("prioritized", [True, False])
@pytest.mark.parametrize("loss", OPTIONS, ids=lambda o: "-".join(map(str, o.values())))
def test_the_update_gives_dqnlosss_loss_priorities_and_gradients(agent_data, loss, prioritized):
    module = trained(agent_data, loss=loss, replay={"prioritized": prioritized})
    torch.manual_seed(5)
    sample = module.replay.sample()
    theirs = sample.clone()
    out = module.loss_module(theirs)
    module.qnet.zero_grad()
    out["loss"].backward()
    want = [p.grad.clone() for p in module.qnet.parameters()]
    loss_value, priority = module.td_loss(sample.flatten_keys("."))
    module.qnet.zero_grad()
    loss_value.backward()
    assert torch.equal(loss_value, out["loss"])
    assert torch.equal(priority, theirs["td_error"])
    for got, expected in zip((p.grad for p in module.qnet.parameters()), want, strict=True):
        assert torch.equal(got, expected)
    assert ("priority_weight" in sample.keys()) == prioritized  # noqa: SIM118 (a TensorDict)


def test_the_replayed_batch_is_the_replay_buffers_sample(agent_data) -> None:
    module = trained(agent_data, replay={"prioritized": True})
    stored = module.replay._storage._storage.flatten_keys(".")
    stored = {key: stored.get(key) for key in stored.keys()}  # noqa: SIM118 (a TensorDict)
    torch.manual_seed(7)
    state = np.random.get_state()
    want = module.replay.sample().flatten_keys(".")
    torch.manual_seed(7)
    np.random.set_state(state)
    rows, index = module._sample(stored)
    assert torch.equal(index, want.get("index"))
    # What the loss reads (the importance weights too), as the buffer's own sample holds it.
    assert set(rows) == {*_LOSS_KEYS, "priority_weight"}
    for key, value in rows.items():
        assert torch.equal(value, want.get(key)), key


@pytest.mark.parametrize("update", ["soft", "hard"])
def test_the_fused_target_update_is_torchrls(agent_data, update) -> None:
    loss = {"target_update": update, "tau": 0.1, "hard_update_period": 2}
    module = trained(agent_data, loss=loss)
    with torch.no_grad():
        for p in module.qnet.parameters():
            p.add_(torch.randn_like(p))
    target = module.loss_module.target_value_network_params
    updater = module.target_updater
    for _ in range(4):  # a hard update copies on one of every `period` steps
        before, counter = target.clone(), getattr(updater, "counter", None)
        updater.step()
        want, want_counter = target.clone(), getattr(updater, "counter", None)
        target.update_(before)
        if counter is not None:
            updater.counter = counter
        module._update_target(*module._target_pairs())
        assert (target == want).all()
        assert getattr(updater, "counter", None) == want_counter


def test_the_collection_policy_writes_what_qvalue_then_epsilon_greedy_write(agent_data) -> None:
    from tensordict.nn import TensorDictSequential

    module = trained(agent_data)
    module.explore.epsilon = 0.3  # some actions greedy, some random
    obs = torch.randn(256, int(module.env.obs_dim))
    ours, theirs = (TensorDict({"observation": obs.clone()}, [256]) for _ in range(2))
    torch.manual_seed(11)
    module.collection_policy()(ours)
    torch.manual_seed(11)
    TensorDictSequential(module.value_network, module.explore)(theirs)
    assert set(ours.keys()) == set(theirs.keys())
    for key in theirs.keys():  # noqa: SIM118 (a TensorDict)
        assert torch.equal(ours[key], theirs[key]), key
        assert ours[key].dtype == theirs[key].dtype, key
    greedy = module.qnet(obs).argmax(-1)
    assert 0 < int((ours["action"] != greedy).sum()) < 256


def eager_gradients(module, rows) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    loss, priority = module.td_loss(rows)
    module.qnet.zero_grad()
    loss.backward()
    return loss.detach(), priority, [p.grad.clone() for p in module.qnet.parameters()]


@pytest.mark.parametrize("loss", OPTIONS[:2], ids=lambda o: "-".join(map(str, o.values())))
def test_the_compiled_update_gives_the_eager_updates_loss_priorities_and_gradients(
    agent_data, loss
) -> None:
    module = trained(agent_data, loss=loss, optim={"compile": True})
    assert module._fused_grads is not None and module._fused_grads.path == "fused"
    online, target = module._target_pairs()
    for seed in (5, 6):  # the graph traced at the first update serves later batches too
        torch.manual_seed(seed)
        rows = module.replay.sample().flatten_keys(".")
        rows = {key: rows.get(key) for key in (*_LOSS_KEYS, "priority_weight") if key in rows}
        want_loss, want_priority, want = eager_gradients(module, rows)
        got_loss, got_priority = module._fused_update(rows, online, target)
        torch.testing.assert_close(got_loss, want_loss, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got_priority, want_priority, rtol=1e-5, atol=1e-6)
        got = [p.grad for p in module.qnet.parameters()]
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_compiled_training_follows_the_eager_training(agent_data) -> None:
    eager = trained(agent_data)
    compiled = trained(agent_data, optim={"compile": True})
    for a, b in zip(eager.qnet.parameters(), compiled.qnet.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_the_compile_is_logged(agent_data, caplog) -> None:
    with caplog.at_level("INFO", logger="modules.agents.dqn"):
        trained(agent_data, optim={"compile": True})
    assert [
        r.getMessage() for r in caplog.records if "DQN update compiled (fused)" in r.getMessage()
    ]


def test_compile_with_dropout_is_a_config_error(agent_data) -> None:
    from datamodules.errors import ConfigError

    with pytest.raises(ConfigError, match=r"model\.network\.dropout=0"):
        dqn(agent_data, network={"dropout": 0.1}, optim={"compile": True})


def test_auto_compiles_a_run_that_plans_enough_updates_and_logs_why(agent_data, caplog) -> None:
    # 8 envs x 8 frames a batch, 2 iterations, 0.5 updates a frame: 64 planned updates.
    with caplog.at_level("INFO", logger="modules.agents.dqn"):
        long = dqn(
            agent_data, iterations=2, optim={"updates_per_frame": 0.5, "compile_min_updates": 64}
        )
        short = dqn(
            agent_data, iterations=2, optim={"updates_per_frame": 0.5, "compile_min_updates": 65}
        )
    assert long.planned_updates() == short.planned_updates() == 64
    assert long.compile_update and not short.compile_update
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("DQN update:")]
    assert logged == [
        "DQN update: compiled (model.optim.compile=auto: 64 planned updates >= "
        "model.optim.compile_min_updates=64)",
        "DQN update: eager (model.optim.compile=auto: 64 planned updates < "
        "model.optim.compile_min_updates=65)",
    ]


def test_auto_counts_the_frames_after_learning_starts(agent_data) -> None:
    module = dqn(agent_data, iterations=4, learning_starts=64, optim={"updates_per_frame": 0.25})
    assert module.planned_updates() == (4 * 64 - 64) // 4


def test_auto_stays_eager_with_dropout_or_a_length_in_episodes(agent_data) -> None:
    dropout = dqn(agent_data, network={"dropout": 0.1}, optim={"compile_min_updates": 0})
    assert not dropout.compile_update
    env, evaluation = env_and_evaluation(agent_data, 8, 0)
    open_ended = DQNModule(
        env,
        evaluation,
        network=SMALL_NET,
        collector={"frames_per_env": 8, "episodes": 3},
        optim={"compile_min_updates": 0},
    )
    assert open_ended.planned_updates() is None and not open_ended.compile_update


def test_the_default_run_plans_too_few_updates_to_compile() -> None:
    # conf/model/dqn.yaml with the envs' default batch: 64 envs x 16 frames an iteration.
    from omegaconf import OmegaConf

    from experiments.config.groups import CONF_DIR

    model = OmegaConf.load(CONF_DIR / "model" / "dqn.yaml")
    num_envs = OmegaConf.load(CONF_DIR / "env" / "single_ticker.yaml").num_envs
    frames = num_envs * model.collector.frames_per_env
    iterations = -(-model.collector.total_frames // frames)
    planned = int(
        (iterations * frames - model.collector.learning_starts) * model.optim.updates_per_frame
    )
    assert model.optim.compile == "auto"
    assert planned == 4531 < model.optim.compile_min_updates


def test_auto_steps_eagerly_under_another_precision_and_true_refuses_it(agent_data, caplog):
    import pytorch_lightning as pl

    from datamodules.errors import ConfigError

    def bf16_trainer() -> pl.Trainer:
        return pl.Trainer(
            max_epochs=1,
            precision="bf16-mixed",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            check_val_every_n_epoch=2,
        )

    auto = dqn(agent_data, optim={"compile_min_updates": 0})
    assert auto.compile_update
    with caplog.at_level("INFO", logger="modules.agents.dqn"):
        bf16_trainer().fit(auto)
    assert not auto.compile_update and auto._fused_grads is None and auto.updates > 0
    assert "DQN update: eager (model.optim.compile=auto, trainer precision bf16-mixed)" in (
        caplog.text
    )
    with pytest.raises(ConfigError, match=r"trainer precision is bf16-mixed"):
        bf16_trainer().fit(dqn(agent_data, optim={"compile": True}))
