"""Gradient clipping by global norm and dropping gradients: the same numbers as torch's own
``clip_grad_norm_`` and ``zero_grad``."""

from __future__ import annotations

import pytest
import torch

from modules.gradients import clip_grad_norm, drop_grads


def _net_with_grads(seed: int = 0, dtype=torch.float32) -> list[torch.nn.Parameter]:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(13, 64), torch.nn.Tanh(), torch.nn.Linear(64, 3)).to(
        dtype
    )
    net(torch.randn(512, 13, dtype=dtype)).pow(2).sum().backward()
    return list(net.parameters())


@pytest.mark.parametrize("max_norm", [1e-3, 1.0, 1e9], ids=["clipped", "clipped-less", "not"])
def test_clipping_equals_torchs_to_the_bit(max_norm):
    ours, theirs = _net_with_grads(), _net_with_grads()
    norm = clip_grad_norm(ours, max_norm)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
    assert torch.equal(norm, expected)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a.grad, b.grad)
    total = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in ours]))
    assert float(total) <= max_norm * (1 + 1e-5)


def test_parameters_without_a_gradient_are_skipped_and_none_at_all_gives_zero():
    params = _net_with_grads()
    params[0].grad = None
    theirs = _net_with_grads()
    theirs[0].grad = None
    assert torch.equal(clip_grad_norm(params, 0.5), torch.nn.utils.clip_grad_norm_(theirs, 0.5))
    assert params[0].grad is None
    assert float(clip_grad_norm([torch.nn.Parameter(torch.ones(2))], 1.0)) == 0.0


def test_gradients_of_two_dtypes_are_clipped_as_torch_clips_them():
    ours = _net_with_grads() + _net_with_grads(1, torch.float64)
    theirs = _net_with_grads() + _net_with_grads(1, torch.float64)
    assert torch.equal(clip_grad_norm(ours, 0.1), torch.nn.utils.clip_grad_norm_(theirs, 0.1))
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a.grad, b.grad)


def test_dropping_gradients_leaves_none_as_zero_grad_does():
    params = _net_with_grads()
    drop_grads(params)
    assert all(p.grad is None for p in params)
