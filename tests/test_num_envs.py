"""env.num_envs=auto: a power of two of envs that fits the free memory, within the cap."""

from __future__ import annotations

import logging

import torch

from modules.agents.num_envs import MEMORY_SHARE, auto_num_envs, frame_bytes, free_memory


def test_free_memory_of_the_host_is_positive():
    assert free_memory(torch.device("cpu")) > 0


def test_auto_picks_the_cap_when_memory_is_plentiful_and_logs_its_choice(caplog):
    with caplog.at_level(logging.INFO, logger="modules.agents.num_envs"):
        n = auto_num_envs(26, 2, 64, torch.device("cpu"), cap=256)
    assert n == 256
    assert "256 envs" in caplog.text and "cap 256" in caplog.text


def test_auto_rounds_down_to_a_power_of_two_within_the_cap():
    n = auto_num_envs(26, 2, 64, torch.device("cpu"), cap=1000)
    assert n == 512


def test_auto_shrinks_the_batch_when_an_iteration_would_not_fit():
    free = free_memory(torch.device("cpu"))
    per_env = frame_bytes(26, 2) * 64
    # Frames per env so large that only about 3 envs' batches fit in the memory share.
    frames = int(free * MEMORY_SHARE / (3 * per_env / 64))
    n = auto_num_envs(26, 2, frames, torch.device("cpu"), cap=1 << 20)
    assert n in (1, 2, 4)
