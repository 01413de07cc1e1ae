"""Tests of modules.schedules: the agents' per-iteration learning-rate factors (lr_lambda) and
the forecasters' warm-up + cosine schedule."""

from __future__ import annotations

import math

import pytest
import torch

from datamodules.errors import ConfigError
from modules.schedules import SCHEDULES, lr_lambda, warmup_cosine

KEY = "model.optim.lr_schedule"


def test_schedules_are_constant_linear_cosine() -> None:
    assert SCHEDULES == ("constant", "linear", "cosine")


@pytest.mark.parametrize("total", [10, None])
def test_constant_is_none_whatever_the_length(total) -> None:
    assert lr_lambda("constant", total, KEY) is None


def test_linear_goes_from_one_to_zero() -> None:
    f = lr_lambda("linear", 10, KEY)
    values = [f(step) for step in range(12)]
    assert values[0] == 1.0 and values[5] == pytest.approx(0.5)
    assert values[10] == 0.0 and values[11] == 0.0  # never negative past the end
    assert values[9] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(values[:10], values[1:11], strict=True))


def test_cosine_goes_from_one_to_zero_along_half_a_cosine() -> None:
    f = lr_lambda("cosine", 8, KEY)
    assert f(0) == pytest.approx(1.0)
    assert f(4) == pytest.approx(0.5)
    assert f(2) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert f(8) == pytest.approx(0.0, abs=1e-12)
    assert f(20) == pytest.approx(0.0, abs=1e-12)
    values = [f(step) for step in range(9)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_a_zero_length_does_not_divide_by_zero(kind) -> None:
    f = lr_lambda(kind, 0, KEY)
    assert f(0) == pytest.approx(1.0) and f(1) == pytest.approx(0.0, abs=1e-12)


def test_factor_drives_lambda_lr() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda("linear", 3, KEY))
    lrs = []
    for _ in range(3):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.2, 0.1, 0.0])


def test_unknown_kind_names_the_key_and_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"model\.optim\.lr_schedule is 'step'") as err:
        lr_lambda("step", 10, KEY)
    assert "constant, linear, cosine" in str(err.value)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_a_run_measured_in_episodes_only_allows_constant(kind) -> None:
    with pytest.raises(ConfigError, match=r"model\.optim\.lr_schedule is") as err:
        lr_lambda(kind, None, KEY)
    assert "episodes" in str(err.value) and "constant" in str(err.value)


def test_warmup_cosine_warms_up_then_decays_to_the_floor() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine(opt, total_steps=100, warmup_fraction=0.1, min_lr_ratio=0.05)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(0.1)  # (step + 1) / warmup
    assert lrs[9] == pytest.approx(1.0)
    assert max(lrs) == pytest.approx(1.0)
    assert lrs[100] == pytest.approx(0.05)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
