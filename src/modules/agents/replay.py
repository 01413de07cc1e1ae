"""A replay buffer's state as plain tensors, so an agent's checkpoint loads with
``torch.load(weights_only=True)`` and resumes with exactly the buffer it saved."""

from __future__ import annotations

import copy

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import PrioritizedSampler, TensorDictReplayBuffer


def replay_state(buffer: TensorDictReplayBuffer) -> dict:
    """A replay buffer's state (storage, writer, sampler priorities) as plain tensors and
    numbers, so a checkpoint holding it loads with ``weights_only=True``."""
    state = _plain(buffer.state_dict())
    storage = state["_storage"]
    if isinstance(storage.get("_storage"), dict):  # keep the filled rows only
        filled = int(storage["_len"])
        storage["_storage"] = {k: v[:filled].clone() for k, v in storage["_storage"].items()}
    sampler = buffer.sampler
    if isinstance(sampler, PrioritizedSampler):
        leaves = torch.arange(sampler._max_capacity)
        state["_sampler"]["_sum_tree"] = torch.as_tensor(sampler._sum_tree[leaves])
        state["_sampler"]["_min_tree"] = torch.as_tensor(sampler._min_tree[leaves])
    return state


def load_replay_state(buffer: TensorDictReplayBuffer, state: dict) -> None:
    """Restore what :func:`replay_state` returned into a buffer built with the same config."""
    sampler = buffer.sampler
    saved = dict(state["_sampler"])
    if isinstance(sampler, PrioritizedSampler):
        leaves = torch.arange(sampler._max_capacity)
        for key in ("_sum_tree", "_min_tree"):
            tree = copy.deepcopy(getattr(sampler, key))
            tree[leaves] = saved[key]
            saved[key] = tree
    sampler.load_state_dict(saved)
    storage, stored = buffer._storage, state["_storage"]
    rows = stored.get("_storage")
    if isinstance(rows, dict) and rows:
        # The filled rows (flat "next.observation" keys), padded back to the capacity.
        size = storage.max_size
        padded = {
            k: torch.cat([v, v.new_zeros((size - v.shape[0], *v.shape[1:]))])
            for k, v in rows.items()
        }
        storage._storage = TensorDict(
            padded, batch_size=[size], device=None if storage.device == "auto" else storage.device
        ).unflatten_keys(".")
        storage.initialized = True
    storage._len = int(stored["_len"])
    buffer._writer.load_state_dict(state["_writer"])


def _plain(state):
    """A replay buffer's state dict as nested dicts of tensors and numbers."""
    if isinstance(state, dict):
        return {k: _plain(v) for k, v in state.items()}
    if isinstance(state, TensorDictBase):
        return _plain(dict(state.state_dict()))
    return state
