"""Distributed training of RL agents: which hardware configs run, how many processes, and the
Lightning strategy that runs them.

Agents train data-parallel with Lightning's DDP launch and process group but without its
``DistributedDataParallel`` wrapper (the agents call their networks through TorchRL loss
modules, not through ``forward``, so DDP's reducer has nothing to hook): every process runs its
own batched envs (seeded ``seed + rank``) and collector over the training split, computes its
loss on its own batch, and averages the gradients with the others before every optimizer step
(:func:`modules.distributed.average_gradients`), so the weights, broadcast from rank 0 at the
start, stay identical. Lightning's cluster environments (SLURM, torchelastic, LSF, MPI, or its
own launcher) set the ranks, so ``hardware=multi_gpu hardware.num_nodes=N`` under SLURM takes its
ranks from SLURM.

Supported for agents: ``cpu`` and ``gpu`` (one process), ``ddp_cpu`` (N CPU processes, gloo),
``multi_gpu`` (one process per GPU, NCCL, on one or more nodes). Refused with a message:
strategies other than DDP started as copies of the command (FSDP, DeepSpeed, ddp_spawn,
ddp_fork, ddp_notebook...), accelerators other than cpu and gpu, more GPUs than are visible,
``env.num_envs=auto`` with several processes, and resuming with another number of processes.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from pytorch_lightning.strategies import DDPStrategy
from typing_extensions import override

from datamodules.errors import ConfigError
from modules.distributed import broadcast_tensors, module_tensors

log = logging.getLogger(__name__)

GPU_ACCELERATORS = ("gpu", "cuda")
AGENT_ACCELERATORS = ("cpu", *GPU_ACCELERATORS)
# Arguments of DDPStrategy that configure the DistributedDataParallel wrapper agents do without.
WRAPPER_ONLY = (
    "find_unused_parameters",
    "static_graph",
    "gradient_as_bucket_view",
    "bucket_cap_mb",
    "broadcast_buffers",
)
# ... and those that act on its reducer: refused, as they would silently do nothing.
REDUCER_HOOKS = ("ddp_comm_state", "ddp_comm_hook", "ddp_comm_wrapper", "model_averaging_period")

SUPPORTED = (
    "Agents run on hardware=cpu or hardware=gpu (one process), hardware=ddp_cpu (CPU "
    "processes over gloo) or hardware=multi_gpu (one process per GPU over NCCL; "
    "hardware.num_nodes=N for several machines under SLURM)"
)


class AgentDDPStrategy(DDPStrategy):
    """Lightning's DDP (launch, process group, cluster environment, rank-zero checkpointing)
    without the ``DistributedDataParallel`` wrapper: at fit start rank 0's parameters and
    buffers are broadcast to every process, and the agents average their gradients themselves
    before each optimizer step. ``num_threads`` (if given) is re-applied in every process after
    Lightning's launcher has set its own default."""

    strategy_name = "agent_ddp"

    def __init__(self, *args, num_threads: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.num_threads = num_threads

    @override
    def setup_environment(self) -> None:
        super().setup_environment()
        if self.num_threads:
            torch.set_num_threads(int(self.num_threads))

    @override
    def configure_ddp(self) -> None:
        assert self.model is not None
        broadcast_tensors(module_tensors(self.model), src=0)


# ------------------------------------------------------------------ counting processes
def _devices(hw: DictConfig):
    devices = hw.get("devices", 1)
    return list(devices) if isinstance(devices, ListConfig) else devices


def is_gpu(hw: DictConfig) -> bool:
    return str(hw.accelerator) in GPU_ACCELERATORS


def gpu_ids(hw: DictConfig) -> list[int]:
    """The CUDA device indices the hardware config asks for on each machine, read as Lightning
    reads ``devices``: a count (the first n), -1 or ``auto`` (all visible), a list of indices
    or a string of them (``"1,3"``)."""
    devices = _devices(hw)
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
            f"hardware.devices is {devices!r} with accelerator={hw.accelerator}: give a number of "
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


def devices_per_node(hw: DictConfig) -> int:
    """Processes on each machine: GPUs for ``accelerator=gpu``, else ``hardware.devices``."""
    if is_gpu(hw):
        return max(len(gpu_ids(hw)), 1)
    devices = _devices(hw)
    if isinstance(devices, str) and devices.strip().isdigit():
        devices = int(devices)
    if not isinstance(devices, int) or isinstance(devices, bool) or devices < 1:
        raise ConfigError(
            f"hardware.devices is {devices!r} with accelerator={hw.accelerator}: give the number "
            "of CPU processes (e.g. hardware.devices=2, as hardware=ddp_cpu does)."
        )
    return devices


def world_size(hw: DictConfig) -> int:
    """Processes training together: devices per machine x ``hardware.num_nodes``."""
    nodes = int(hw.get("num_nodes", 1) or 1)
    if nodes < 1:
        raise ConfigError(f"hardware.num_nodes is {nodes}; use >= 1 machines.")
    return devices_per_node(hw) * nodes


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


def local_rank() -> int:
    """This process's rank on its machine, known before the Trainer exists: from torchrun,
    SLURM, LSF or MPI, else ``LOCAL_RANK`` (set by Lightning for the processes it starts; 0 for
    the one you started)."""
    return int(_cluster_environment().local_rank())


def launch_rank(hw: DictConfig) -> int:
    """This process's global rank before the Trainer exists (0 in one process). Use it for
    rank-zero-only work done before ``trainer.fit`` (the W&B run id file, config copies)."""
    if world_size(hw) == 1:
        return 0
    from lightning_fabric.plugins.environments import LightningEnvironment

    env = _cluster_environment()
    if not isinstance(env, LightningEnvironment):  # torchrun, SLURM, LSF, MPI: from their env
        return int(env.global_rank())
    # Lightning's own launcher: the node's first process starts the others with LOCAL_RANK.
    node = int(os.environ.get("NODE_RANK", 0))
    return node * devices_per_node(hw) + int(os.environ.get("LOCAL_RANK", 0))


def agent_device(hw: DictConfig) -> torch.device:
    """Where this process's envs and networks live: ``cpu``; ``cuda`` in one GPU process;
    ``cuda:<its GPU>`` in a multi-GPU run (the device Lightning gives this rank)."""
    if not is_gpu(hw):
        return torch.device("cpu")
    if world_size(hw) == 1:
        ids = gpu_ids(hw) if isinstance(_devices(hw), list) else []
        return torch.device("cuda", ids[0]) if ids else torch.device("cuda")
    return torch.device("cuda", gpu_ids(hw)[local_rank()])


# ------------------------------------------------------------------ checking and building
def _strategy_name(strategy) -> str:
    if isinstance(strategy, str):
        return strategy
    return str(strategy.get("_target_", strategy))


def _refuse_strategy(hw: DictConfig, why: str) -> ConfigError:
    return ConfigError(
        f"hardware.strategy={_strategy_name(hw.strategy)} (with hardware.accelerator="
        f"{hw.accelerator}, devices={_devices(hw)}, num_nodes={hw.get('num_nodes', 1)}): {why} "
        "RL agents (+model=ppo, +model=dqn) train data-parallel with DDP only: each process "
        "runs its own envs and collector and the gradients are averaged before every optimizer "
        f"step. {SUPPORTED}. FSDP, DeepSpeed, ddp_spawn/ddp_fork/ddp_notebook and other "
        "strategies are not supported for agents (forecasters take what Lightning supports)."
    )


def _strategy_kwargs(hw: DictConfig) -> dict:
    """The DDP options of ``hardware.strategy`` that agents use (refusing the others)."""
    strategy = hw.strategy
    if isinstance(strategy, str):
        name = strategy
        if name == "auto" or (
            name.startswith("ddp") and not any(k in name for k in ("spawn", "fork", "notebook"))
        ):
            return {}
        raise _refuse_strategy(hw, "this strategy is not supported for agents.")
    if not isinstance(strategy, DictConfig) or "_target_" not in strategy:
        raise _refuse_strategy(hw, "give a strategy name or a config with a _target_.")
    target = str(strategy._target_)
    try:
        cls = get_class(target)
    except Exception as err:  # noqa: BLE001 - any import failure is a bad target
        raise _refuse_strategy(hw, f"its _target_ could not be imported ({err}).") from None
    if cls not in (DDPStrategy, AgentDDPStrategy):
        raise _refuse_strategy(hw, f"{cls.__name__} is not supported for agents.")
    options = OmegaConf.to_container(strategy, resolve=True)
    options.pop("_target_")
    hooks = [k for k in REDUCER_HOOKS if options.get(k) is not None]
    if hooks or options.get("start_method", "popen") != "popen":
        raise _refuse_strategy(
            hw,
            f"{', '.join(hooks) or 'start_method=' + str(options['start_method'])} needs DDP's "
            "wrapper or another launcher, which agents do not use.",
        )
    for key in WRAPPER_ONLY:
        options.pop(key, None)
    return options


def check_agent_hardware(cfg: DictConfig) -> int:
    """Refuse hardware configs agents cannot train on (one paragraph naming the keys and what to
    use instead); return the number of processes the run will have."""
    hw = cfg.hardware
    if str(hw.accelerator) not in AGENT_ACCELERATORS:
        raise ConfigError(
            f"hardware.accelerator is '{hw.accelerator}': agents keep their envs and networks on "
            f"one cpu or cuda device per process. {SUPPORTED}."
        )
    size = world_size(hw)
    if size == 1:
        return 1
    _strategy_kwargs(hw)
    if str(cfg.env.get("num_envs")) == "auto":
        raise ConfigError(
            f"env.num_envs=auto with {size} processes (hardware.devices x hardware.num_nodes): "
            "auto sizes the batch from one device's free memory, which can differ between "
            "processes, and every process must run the same number of envs. Give a number "
            "(e.g. env.num_envs=1024): each process runs that many envs, so an iteration "
            f"collects {size} x env.num_envs x model.collector.frames_per_env frames."
        )
    log.info(
        "agent on %d processes (DDP without its wrapper): each runs env.num_envs=%s envs of its "
        "own (seed + rank) and averages gradients with the others; frames, episodes and "
        "frames/s count over all processes",
        size,
        cfg.env.get("num_envs"),
    )
    return size


def agent_strategy(hw: DictConfig, num_threads: int | None):
    """``(strategy, devices, num_nodes)`` for an agent's Trainer: Lightning's default single
    device in one process, else :class:`AgentDDPStrategy` with the config's DDP options."""
    if world_size(hw) == 1:
        ids = gpu_ids(hw) if is_gpu(hw) and isinstance(_devices(hw), list) else None
        return "auto", ids[:1] if ids else 1, 1
    options = _strategy_kwargs(hw)
    strategy = instantiate(
        {"_target_": f"{__name__}.AgentDDPStrategy", **options}, num_threads=num_threads
    )
    devices = gpu_ids(hw) if is_gpu(hw) else devices_per_node(hw)
    return strategy, devices, int(hw.get("num_nodes", 1) or 1)


def rank_zero_only_report(report):
    """``report`` (the printed table, metrics.json, the plot, the W&B summary) run by global
    rank 0 only; other ranks return the metrics they were given."""

    @functools.wraps(report)
    def wrapped(cfg, module, data, out, logger, results):
        trainer = getattr(module, "_trainer", None)
        if trainer is not None and trainer.global_rank != 0:
            return results
        return report(cfg, module, data, out, logger, results)

    return wrapped


def checkpoint_world_size(path: Path) -> int:
    """How many processes trained the agent that saved the checkpoint at ``path``."""
    from modules.agent import checkpoint_world_size as of_checkpoint

    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return of_checkpoint(checkpoint)
