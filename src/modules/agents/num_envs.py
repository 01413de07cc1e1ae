"""How many envs an agent steps together, and on how many torch threads.

``env.num_envs=auto`` sizes the batch of envs to the device's memory (PPO's ``auto`` minibatch
then follows it); small CPU batches run on one intra-op thread."""

from __future__ import annotations

import logging
import os

import torch

from datamodules.errors import ConfigError

log = logging.getLogger(__name__)

# Share of the free memory one iteration's batch (and the env state) may take.
MEMORY_SHARE = 0.25


def free_memory(device: torch.device) -> int:
    """Free bytes on ``device``: CUDA's free memory, else the host's available memory."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def frame_bytes(obs_dim: int, num_assets: int) -> int:
    """Bytes one collected frame takes: observation and next observation (float32), the info
    components, reward and done flags, action, log-prob and the learner's per-frame values,
    times 2 for the copies made while learning."""
    per_frame = 2 * 4 * obs_dim + 2 * (6 * 4 + 7) + 64 + 8 * num_assets
    return 2 * per_frame


def auto_num_envs(
    obs_dim: int,
    num_assets: int,
    frames_per_env: int,
    device: torch.device,
    cap: int,
) -> int:
    """The largest power of two of envs whose iteration batch fits in ``MEMORY_SHARE`` of the
    free memory, at most ``cap`` and at least 1. Logs what it chose and why."""
    free = free_memory(device)
    per_env = frame_bytes(obs_dim, num_assets) * int(frames_per_env)
    fits = max(1, int(free * MEMORY_SHARE) // max(per_env, 1))
    chosen = 1
    while chosen * 2 <= min(fits, int(cap)):
        chosen *= 2
    log.info(
        "env.num_envs=auto: %d envs on %s (%.1f GiB free; %.1f MiB per env per iteration; cap %d)",
        chosen,
        device,
        free / 2**30,
        per_env / 2**20,
        cap,
    )
    return chosen


# From this many envs the per-op tensors are big enough for several intra-op threads to pay.
MANY_ENVS = 512


def resolve_num_envs(make_env, span, frames_per_env: int, device) -> int:
    """``env.num_envs`` as a number: as configured, or for ``auto`` the largest power of two
    whose iteration batch fits (:func:`auto_num_envs`), measured on a one-env probe over
    ``span``. ``make_env`` is the run's :class:`envs.factory.EnvFactory`."""
    value = make_env.requested_num_envs
    if str(value) != "auto":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"env.num_envs is {value!r}; use a number >= 1 or auto.")
        return int(value)
    probe = make_env(span, num_envs=1)
    return auto_num_envs(
        probe.obs_dim,
        make_env.market.num_assets,
        int(frames_per_env),
        torch.device(device),
        int(make_env.auto_envs_cap),
    )


def agent_threads(hardware, num_envs: int) -> int | None:
    """Torch intra-op threads for an agent: ``hardware.num_threads`` if set; on CPU with fewer
    than ``MANY_ENVS`` envs, 1 (small batches are dominated by per-op overhead, and OpenMP's
    thread team slows to a crawl when another process shares the cores); else torch's
    default (None)."""
    if hardware.num_threads:
        return int(hardware.num_threads)
    if torch.device(hardware.device).type == "cpu" and num_envs < MANY_ENVS:
        return 1
    return None
