"""Collectives for agents trained by several processes (Lightning DDP without its wrapper).

Every process runs its own envs and collector and computes its loss on its own batch; right
before each optimizer step the agents call :func:`average_gradients`, so every process steps
with the same (mean) gradient and the weights stay identical. Each helper is a no-op in one
process (no process group, or a group of one), so the single-process path is unchanged.

Tensors handed to a collective live on the module's device (NCCL wants CUDA tensors, gloo
takes CPU ones); object collectives move tensors to the CPU first, so a state gathered from
``cuda:1`` never lands on another process's GPU.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist


def world_size() -> int:
    """Processes in the default group (1 without one)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return 0


def _buckets(tensors: Iterable[torch.Tensor]) -> list[list[torch.Tensor]]:
    """``tensors`` grouped by (device, dtype), in first-seen order (the same on every rank)."""
    groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    return list(groups.values())


def _scatter_back(flat: torch.Tensor, tensors: Sequence[torch.Tensor]) -> None:
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset : offset + n].view_as(t))
        offset += n


def average_gradients(*param_groups: Iterable[torch.Tensor]) -> None:
    """Replace each parameter's gradient by its mean over all processes: one flattened
    ``all_reduce(SUM)`` per (device, dtype), then a division by the world size. Call it after
    ``backward`` and before clipping and ``optimizer.step()``; pass every parameter that the
    coming steps update (e.g. PPO's actor and critic together: one collective for both).

    Parameters without a gradient are skipped; which ones have none is a property of the
    model's graph, the same on every process. A no-op in one process."""
    n = world_size()
    if n == 1:
        return
    grads = [p.grad for group in param_groups for p in group if p.grad is not None]
    for bucket in _buckets(grads):
        flat = torch.cat([g.reshape(-1) for g in bucket])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(n)
        _scatter_back(flat, bucket)


def broadcast_tensors(tensors: Iterable[torch.Tensor], src: int = 0) -> None:
    """Overwrite ``tensors`` in place with rank ``src``'s values (flattened per device and
    dtype: one broadcast each). A no-op in one process."""
    if world_size() == 1:
        return
    with torch.no_grad():
        for bucket in _buckets(tensors):
            flat = torch.cat([t.reshape(-1) for t in bucket])
            dist.broadcast(flat, src=src)
            _scatter_back(flat, bucket)


def module_tensors(module: torch.nn.Module) -> list[torch.Tensor]:
    """Every parameter and buffer of ``module`` (each tensor once; sparse ones left out)."""
    seen: set[int] = set()
    out = []
    for t in [*module.parameters(), *module.buffers()]:
        if id(t) not in seen and not t.is_sparse:
            seen.add(id(t))
            out.append(t.data if isinstance(t, torch.nn.Parameter) else t)
    return out


def sum_over_ranks(values: Sequence[float], device: torch.device) -> list[float]:
    """``values`` summed element-wise over all processes (one float64 all_reduce: exact for
    integers below 2**53). Returns them unchanged in one process."""
    if world_size() == 1:
        return [float(v) for v in values]
    buf = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.tolist()


def to_cpu(obj: Any) -> Any:
    """``obj`` with every tensor (in dicts, lists and tuples) moved to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, Mapping):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def gather_to_rank_zero(obj: Any) -> list[Any] | None:
    """Every process's ``obj`` (tensors moved to the CPU), as a list indexed by rank on rank 0;
    None on the other ranks. ``[obj]`` in one process."""
    if world_size() == 1:
        return [obj]
    gathered: list[Any] | None = [None] * world_size() if rank() == 0 else None
    dist.gather_object(to_cpu(obj), gathered, dst=0)
    return gathered


def all_gather(obj: Any) -> list[Any]:
    """Every process's picklable ``obj``, as a list indexed by rank, on every rank."""
    if world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def weights_digest(named: Mapping[str, torch.Tensor]) -> str:
    """A short hash of the exact bytes of ``named`` tensors (by sorted name): equal digests
    mean bit-identical weights."""
    h = hashlib.sha256()
    for name in sorted(named):
        t = named[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
