"""Data-parallel training of RL agents: which hardware they run on, and the Lightning strategy.

Agents train data-parallel with Lightning's DDP launch and process group but without its
``DistributedDataParallel`` wrapper (the agents call their networks through TorchRL loss
modules, not through ``forward``, so DDP's reducer has nothing to hook): every process runs its
own batched envs (seeded ``seed + rank``) and collector over the training split, computes its
loss on its own batch, and averages the gradients with the others before every optimizer step
(:func:`modules.collectives.average_gradients`), so the weights, broadcast from rank 0 at the
start, stay identical. Lightning's cluster environments (SLURM, torchelastic, LSF, MPI, or its
own launcher) set the ranks, so ``hardware=multi_gpu hardware.num_nodes=N`` under SLURM takes its
ranks from SLURM.

Supported for agents: ``cpu`` and ``gpu`` (one process), ``ddp_cpu`` (N CPU processes, gloo),
``multi_gpu`` (one process per GPU, NCCL, on one or more nodes). Refused with a message:
strategies other than DDP started as copies of the command (FSDP, DeepSpeed, ddp_spawn,
ddp_fork, ddp_notebook...), accelerators other than cpu and gpu, ``env.num_envs=auto`` with
several processes, and resuming with another number of processes.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping

import torch
from pytorch_lightning.strategies import DDPStrategy
from typing_extensions import override

from datamodules.errors import ConfigError
from modules.collectives import broadcast_tensors, module_tensors
from modules.family import StrategyPlan
from modules.hardware import Hardware

log = logging.getLogger(__name__)

AGENT_ACCELERATORS = ("cpu", "gpu", "cuda")
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


def _refuse(hw: Hardware, why: str) -> ConfigError:
    return ConfigError(
        f"hardware.strategy={hw.strategy_name} (with hardware.accelerator={hw.accelerator}, "
        f"devices={hw.devices}, num_nodes={hw.num_nodes}): {why} RL agents train data-parallel with DDP only: each process "
        "runs its own envs and collector and the gradients are averaged before every "
        f"optimizer step. {SUPPORTED}. FSDP, DeepSpeed, ddp_spawn/ddp_fork/ddp_notebook and "
        "other strategies are not supported for agents (forecasters take what Lightning "
        "supports)."
    )


def _locate(target: str) -> object:
    module, _, name = target.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _strategy_options(hw: Hardware) -> dict:
    """The DDP options of ``hardware.strategy`` that agents use (refusing the others)."""
    strategy = hw.strategy_config
    if isinstance(strategy, str):
        name = strategy
        if name == "auto" or (
            name.startswith("ddp") and not any(k in name for k in ("spawn", "fork", "notebook"))
        ):
            return {}
        raise _refuse(hw, "this strategy is not supported for agents.")
    if not isinstance(strategy, Mapping) or "_target_" not in strategy:
        raise _refuse(hw, "give a strategy name or a config with a _target_.")
    try:
        cls = _locate(str(strategy["_target_"]))
    except (ImportError, AttributeError) as err:
        raise _refuse(hw, f"its _target_ could not be imported ({err}).") from None
    if cls not in (DDPStrategy, AgentDDPStrategy):
        raise _refuse(hw, f"{getattr(cls, '__name__', cls)} is not supported for agents.")
    options = {k: v for k, v in strategy.items() if not str(k).startswith("_")}
    hooks = [k for k in REDUCER_HOOKS if options.get(k) is not None]
    if hooks or options.get("start_method", "popen") != "popen":
        raise _refuse(
            hw,
            f"{', '.join(hooks) or 'start_method=' + str(options['start_method'])} needs DDP's "
            "wrapper or another launcher, which agents do not use.",
        )
    for key in WRAPPER_ONLY:
        options.pop(key, None)
    return options


def check_agent_hardware(hw: Hardware, num_envs: int | str) -> int:
    """Refuse hardware configs agents cannot train on (one paragraph naming the keys and what to
    use instead); return the number of processes the run will have. ``num_envs`` is the
    configured ``env.num_envs``."""
    if hw.accelerator not in AGENT_ACCELERATORS:
        raise ConfigError(
            f"hardware.accelerator is '{hw.accelerator}': agents keep their envs and networks on "
            f"one cpu or cuda device per process. {SUPPORTED}."
        )
    size = hw.world_size
    if size == 1:
        return 1
    _strategy_options(hw)
    if str(num_envs) == "auto":
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
        num_envs,
    )
    return size


def agent_strategy(hw: Hardware, num_threads: int | None) -> StrategyPlan:
    """Lightning's default single device in one process, else :class:`AgentDDPStrategy` with
    the config's DDP options, one process per device."""
    if hw.world_size == 1:
        ids = list(hw.gpu_ids) if hw.is_gpu and isinstance(hw.devices, list | tuple) else None
        return StrategyPlan("auto", ids[:1] if ids else 1, 1)
    options = _strategy_options(hw)
    strategy = AgentDDPStrategy(**options, num_threads=num_threads)
    devices = list(hw.gpu_ids) if hw.is_gpu else hw.world_size // max(hw.num_nodes, 1)
    return StrategyPlan(strategy, devices, hw.num_nodes)
