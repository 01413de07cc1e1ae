"""Tests of modules.agents.rollouts: episode bookkeeping across collector batches, and the
one-batch-per-epoch data source."""

from __future__ import annotations

import torch
from helpers.envs import make_env

from modules.agents.rollouts import EpisodeTracker, Rollouts


# ------------------------------------------------------------------ EpisodeTracker
def batch(rewards: list[list[float]], dones: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, T, 1) reward and done tensors, as a collector batch holds them."""
    r = torch.tensor(rewards, dtype=torch.float32).unsqueeze(-1)
    d = torch.tensor(dones, dtype=torch.bool).unsqueeze(-1)
    return r, d


# Two envs, two batches of 3 steps. Env 0: an episode of 1+2 ends in batch 1, the next one
# (3 + 4) ends at the start of batch 2, and one of 5 + 6 is still running. Env 1: one episode
# spans both batches (10+20+30 + 1+1+1 = 63) and ends at the last step.
FIRST = batch([[1, 2, 3], [10, 20, 30]], [[0, 1, 0], [0, 0, 0]])
SECOND = batch([[4, 5, 6], [1, 1, 1]], [[1, 0, 0], [0, 0, 1]])


def test_tracker_returns_exactly_the_episodes_that_ended() -> None:
    tracker = EpisodeTracker(2, torch.device("cpu"))
    assert tracker.update(*FIRST).tolist() == [3.0]
    assert tracker.completed == 1
    assert tracker.running.tolist() == [3.0, 60.0]
    assert sorted(tracker.update(*SECOND).tolist()) == [7.0, 63.0]
    assert tracker.completed == 3
    assert tracker.running.tolist() == [11.0, 0.0]


def test_tracker_counts_several_episodes_of_one_env_in_a_batch() -> None:
    tracker = EpisodeTracker(1, torch.device("cpu"))
    returns = tracker.update(*batch([[1, -2, 3, 4, 0]], [[1, 1, 0, 1, 1]]))
    assert returns.tolist() == [1.0, -2.0, 7.0, 0.0]  # a zero return is still an episode
    assert tracker.completed == 4 and tracker.running.tolist() == [0.0]


def test_tracker_returns_nothing_while_no_episode_ends() -> None:
    tracker = EpisodeTracker(3, torch.device("cpu"))
    returns = tracker.update(torch.ones(3, 4, 1), torch.zeros(3, 4, 1, dtype=torch.bool))
    assert returns.numel() == 0 and tracker.completed == 0
    assert tracker.running.tolist() == [4.0, 4.0, 4.0]


def test_tracker_state_round_trips(tmp_path) -> None:
    tracker = EpisodeTracker(2, torch.device("cpu"))
    tracker.update(*FIRST)
    path = tmp_path / "tracker.pt"
    torch.save(tracker.state(), path)
    state = torch.load(path, weights_only=True)

    restored = EpisodeTracker(2, torch.device("cpu"))
    restored.load(state)
    assert restored.completed == 1 and restored.running.tolist() == [3.0, 60.0]
    assert sorted(restored.update(*SECOND).tolist()) == [7.0, 63.0]
    assert restored.completed == 3


def test_tracker_state_is_a_copy() -> None:
    tracker = EpisodeTracker(2, torch.device("cpu"))
    tracker.update(*FIRST)
    state = tracker.state()
    tracker.update(*SECOND)
    assert state["running"].tolist() == [3.0, 60.0] and state["completed"] == 1


# ------------------------------------------------------------------ Rollouts
def test_rollouts_yield_one_batch_per_iteration(agent_data) -> None:
    env = make_env(agent_data.market, agent_data.split.train, num_envs=4)
    made = []

    def collect():
        made.append(env.rollout(5, break_when_any_done=False))
        return made[-1]

    rollouts = Rollouts(collect)
    assert len(rollouts) == 1 and not made  # nothing is collected before it is iterated
    for epoch in range(3):
        batches = list(rollouts)
        assert len(batches) == 1 and len(made) == epoch + 1
        assert batches[0] is made[-1]
        assert batches[0].batch_size == torch.Size([4, 5])
