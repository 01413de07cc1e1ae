"""Gradient steps' per-call helpers for agents that make thousands of small updates.

A DQN update on a CPU takes about 2 ms, and ``torch.nn.utils.clip_grad_norm_`` and
``Optimizer.zero_grad`` spend about 0.1 ms of it on their per-call Python work (grouping the
tensors by device and dtype, profiler ranges, hooks) for a network of six tensors. These do
the same arithmetic with torch's foreach kernels directly (``bench/train_throughput.py``
measures the agents' training; ``tests/test_gradients.py`` checks they equal torch's).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


@torch.no_grad()
def clip_grad_norm(params: Sequence[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale the gradients of ``params`` in place so their global L2 norm is at most
    ``max_norm``; return the norm before clipping. The same operations, in the same order, as
    ``torch.nn.utils.clip_grad_norm_(params, max_norm)`` on tensors of one device and dtype
    (the gradients equal its to the bit); parameters without a gradient are skipped, and
    gradients of several devices or dtypes go to torch's function itself."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    if len({(g.device, g.dtype) for g in grads}) > 1:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)
    torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))
    return total


def drop_grads(params: Sequence[torch.Tensor]) -> None:
    """``optimizer.zero_grad()`` (``set_to_none=True``, torch's default) for ``params``:
    each gradient set to None."""
    for p in params:
        p.grad = None
