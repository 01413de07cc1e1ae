"""The ``hardware`` config group resolved once into a :class:`modules.hardware.Hardware`.

Counts the processes (GPUs per machine or CPU processes, times machines), finds this process's
global rank before the Trainer exists (from Lightning's launcher, torchrun, SLURM, LSF or MPI)
and its device, builds Lightning's strategy from its ``_target_`` when it has one, and refuses
a GPU config on a machine without a CUDA device. Everything downstream takes the result.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from datamodules.errors import ConfigError
from experiments.config.schema import HardwareSettings
from modules.family import saved_world_size
from modules.hardware import GPU_ACCELERATORS, Hardware


def _plain(value):
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


def gpu_ids(devices, accelerator: str) -> list[int]:
    """The CUDA device indices asked for on each machine, read as Lightning reads ``devices``:
    a count (the first n), -1 or ``auto`` (all visible), a list of indices or a string of
    them (``"1,3"``)."""
    if isinstance(devices, str):
        text = devices.strip()
        if text in ("auto", "-1"):
            devices = -1
        elif "," in text:
            devices = [int(i) for i in text.split(",") if i.strip()]
        elif text.isdigit():
            devices = int(text)
    visible = torch.cuda.device_count()
    if devices == -1:
        ids = list(range(visible))
    elif isinstance(devices, int) and not isinstance(devices, bool) and devices >= 1:
        ids = list(range(devices))
    elif isinstance(devices, list) and devices:
        ids = [int(i) for i in devices]
    else:
        raise ConfigError(
            f"hardware.devices is {devices!r} with accelerator={accelerator}: give a number of "
            "GPUs per machine, -1 for all of them, or a list of GPU indices."
        )
    if len(ids) > visible or any(i < 0 or i >= visible for i in ids):
        raise ConfigError(
            f"hardware.devices={devices} asks for GPUs {ids} on each machine but this one sees "
            f"{visible} (torch.cuda.device_count(); CUDA_VISIBLE_DEVICES narrows it). Set "
            f"hardware.devices to at most {visible} (or -1 for all of them), or run where the "
            "GPUs are."
        )
    return ids


def cpu_processes(devices, accelerator: str) -> int:
    """Processes on each machine without GPUs: ``hardware.devices``."""
    if isinstance(devices, str) and devices.strip().isdigit():
        devices = int(devices)
    if not isinstance(devices, int) or isinstance(devices, bool) or devices < 1:
        raise ConfigError(
            f"hardware.devices is {devices!r} with accelerator={accelerator}: give the number "
            "of CPU processes (e.g. hardware.devices=2, as hardware=ddp_cpu does)."
        )
    return devices


def _cluster_environment():
    """The cluster environment Lightning will pick (same order as its connector)."""
    from lightning_fabric.plugins.environments import (
        LightningEnvironment,
        LSFEnvironment,
        MPIEnvironment,
        SLURMEnvironment,
        TorchElasticEnvironment,
    )

    for env in (TorchElasticEnvironment, SLURMEnvironment, LSFEnvironment, MPIEnvironment):
        if env.detect():
            return env()
    return LightningEnvironment()


def _ranks(world_size: int, per_node: int) -> tuple[int, int]:
    """(global rank, local rank) of this process before the Trainer exists: from torchrun,
    SLURM, LSF or MPI, else Lightning's launcher (``NODE_RANK``, ``LOCAL_RANK``; 0 for the
    process you started)."""
    if world_size == 1:
        return 0, 0
    from lightning_fabric.plugins.environments import LightningEnvironment

    env = _cluster_environment()
    if not isinstance(env, LightningEnvironment):
        return int(env.global_rank()), int(env.local_rank())
    local = int(os.environ.get("LOCAL_RANK", 0))
    return int(os.environ.get("NODE_RANK", 0)) * per_node + local, local


def _strategy(config):
    if isinstance(config, Mapping) and "_target_" in config:
        from hydra.utils import instantiate

        return instantiate(config)
    return config


NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"
NVML_LIBRARY = "libnvidia-ml.so.1"  # what torch.cuda loads for its NVML-based device count


def skip_a_failing_nvml_check() -> bool:
    """Turn torch's NVML-based CUDA check off where NVML cannot be loaded; True if it did.

    Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` when imported, so that
    ``torch.cuda.is_available()`` asks NVML instead of initialising CUDA (which would break
    forked workers). Without NVML's library (a machine with no NVIDIA driver) the ask fails
    and torch falls back to the CUDA runtime's count anyway, after a failed ``dlopen`` every
    time: about 30 us a call, and Adam/AdamW make the call at every optimizer step (their
    graph-capture check): 5% of an iteration of an agent making many small updates on a CPU.
    There the setting protects nothing, so it is set to 0; the answer of ``is_available()`` is
    the same either way."""
    import lightning_fabric  # noqa: F401 (sets the variable on import: do it first)

    if os.environ.get(NVML_CHECK) != "1":
        return False
    try:
        ctypes.CDLL(NVML_LIBRARY)
    except OSError:
        os.environ[NVML_CHECK] = "0"
        return True
    return False


def resolve_hardware(cfg: DictConfig | Mapping) -> Hardware:
    """The run's :class:`~modules.hardware.Hardware` from ``cfg.hardware`` (see module doc)."""
    skip_a_failing_nvml_check()
    hw = _plain(cfg)
    accelerator = str(hw.get("accelerator", "cpu"))
    if accelerator in GPU_ACCELERATORS and not torch.cuda.is_available():
        raise ConfigError(
            f"hardware.accelerator is '{accelerator}' but no CUDA device is visible "
            "(torch.cuda.is_available() is False). Use hardware=cpu (or hardware=ddp_cpu), or "
            "run on a machine with a GPU and a CUDA build of torch."
        )
    devices = hw.get("devices", 1)
    nodes = int(hw.get("num_nodes", 1) or 1)
    if nodes < 1:
        raise ConfigError(f"hardware.num_nodes is {nodes}; use >= 1 machines.")
    gpus = gpu_ids(devices, accelerator) if accelerator in GPU_ACCELERATORS else []
    per_node = max(len(gpus), 1) if gpus else cpu_processes(devices, accelerator)
    world = per_node * nodes
    rank, local = _ranks(world, per_node)
    if not gpus:
        device = torch.device("cpu")
    elif world == 1:
        device = (
            torch.device("cuda", gpus[0]) if isinstance(devices, list) else torch.device("cuda")
        )
    else:
        device = torch.device("cuda", gpus[local])
    strategy_config = hw.get("strategy", "auto")
    threads = hw.get("num_threads")
    keep = hw.get("keep_freed_mib", HardwareSettings.keep_freed_mib)  # a config without the key
    return Hardware(
        accelerator=accelerator,
        devices=devices,
        num_nodes=nodes,
        world_size=world,
        rank=rank,
        device=device,
        gpu_ids=tuple(gpus),
        strategy=_strategy(strategy_config),
        strategy_config=strategy_config,
        precision=str(hw.get("precision", "32-true")),
        deterministic=bool(hw.get("deterministic", False)),
        num_threads=int(threads) if threads else None,
        keep_freed_mib=int(keep) if keep is not None else None,
    )


def checkpoint_world_size(path: Path) -> int:
    """How many processes trained the model that saved the checkpoint at ``path``."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return saved_world_size(checkpoint)
