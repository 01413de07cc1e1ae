"""The body of the in-process two-rank gloo test of ``modules.distributed`` (test_distributed):
kept in its own module so each spawned process imports torch and that module only."""

from __future__ import annotations

import torch
import torch.distributed as dist

from modules.collectives import (
    all_gather,
    average_gradients,
    broadcast_tensors,
    gather_to_rank_zero,
    sum_over_ranks,
)


def collectives(rank: int, store: str, out: str) -> None:
    """Join a world of 2 over gloo, run each helper once, save what this rank saw."""
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    torch.manual_seed(rank)  # different weights and gradients on each rank
    a = torch.nn.Parameter(torch.randn(3, 2))
    b = torch.nn.Parameter(torch.randn(4, dtype=torch.float64))
    unused = torch.nn.Parameter(torch.zeros(2))
    a.grad, b.grad = torch.full((3, 2), float(rank + 1)), torch.arange(4.0).double() * rank
    average_gradients([a, unused], [b])
    before = a.detach().clone()
    broadcast_tensors([a.data, b.data], src=0)
    result = {
        "a_grad": a.grad,
        "b_grad": b.grad,
        "unused_grad": unused.grad,
        "before": before,
        "a": a.detach(),
        "b": b.detach(),
        "sums": sum_over_ranks([rank + 1, 10.0], torch.device("cpu")),
        "gathered": gather_to_rank_zero({"rank": rank, "t": torch.tensor([rank])}),
        "all": all_gather(f"r{rank}"),
    }
    torch.save(result, f"{out}/{rank}.pt")
    dist.destroy_process_group()
