"""The hardware a run trains on, resolved once from the ``hardware`` config group.

The run builds one :class:`Hardware` (``experiments.runtime.hardware.resolve_hardware``) before
anything is trained and hands it to the model family, which picks its Lightning strategy from
it. Nothing below re-derives ranks, devices or world sizes from the config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

GPU_ACCELERATORS = ("gpu", "cuda")


@dataclass(frozen=True)
class Hardware:
    """One process's view of the run's hardware.

    ``accelerator``, ``devices``, ``num_nodes``, ``precision`` and ``deterministic`` are
    Lightning's Trainer arguments as configured. ``world_size`` counts the processes that
    train together (devices per machine x machines); ``rank`` is this process's global rank,
    known before the Trainer exists (0 in one process); ``device`` is where this process's
    tensors live (``cpu``, ``cuda`` or ``cuda:<its GPU>``); ``gpu_ids`` the CUDA indices used
    on each machine (empty on CPU). ``strategy`` is Lightning's strategy (a name, or the
    object its ``_target_`` built) and ``strategy_config`` the config it came from, for
    families that run their processes their own way. ``num_threads``: torch intra-op threads
    set explicitly (None = the run's default); ``keep_freed_mib``: MiB of freed memory the
    process keeps for reuse (None = the C library's defaults; see
    ``experiments.runtime.allocator``)."""

    accelerator: str
    devices: Any
    num_nodes: int
    world_size: int
    rank: int
    device: torch.device
    gpu_ids: tuple[int, ...]
    strategy: Any
    strategy_config: str | Mapping
    precision: str
    deterministic: bool
    num_threads: int | None = None
    keep_freed_mib: int | None = None

    @property
    def is_gpu(self) -> bool:
        return self.accelerator in GPU_ACCELERATORS

    @property
    def strategy_name(self) -> str:
        """The configured strategy as text: its name, or its ``_target_``."""
        config = self.strategy_config
        if isinstance(config, Mapping):
            return str(config.get("_target_", config))
        return str(config)

    def describe(self) -> str:
        """``accelerator=cpu devices=2 num_nodes=1 strategy=...`` for messages."""
        return (
            f"hardware.accelerator={self.accelerator}, devices={self.devices}, "
            f"num_nodes={self.num_nodes}, strategy={self.strategy_name}"
        )
