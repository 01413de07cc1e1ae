"""FusedFunction: traced once over fake tensors and compiled by inductor, it returns what its
function returns eagerly; a Python branch on tensor data goes to torch.compile, never baked in.
Each test that compiles (inductor's start-up, about 10 s cold, then a few seconds) is in the
slow set, as the other compiling tests are."""

from __future__ import annotations

from collections import namedtuple

import pytest
import torch
import torch.utils._pytree as pytree

from envs.fused import FusedFunction, anchored, tracing

Pair = namedtuple("Pair", ["low", "high"])  # a container other than dict, tuple and list


def step(state: dict[str, torch.Tensor], x: torch.Tensor):
    total = state["a"] * x + state["b"].sum(-1)
    pair = Pair(total.min(), {"max": total.max()})
    return {"a": total, "b": state["b"] * 2.0}, (total.sum(), [x + 1.0, x > 1.0]), pair


@pytest.mark.slow
def test_a_fused_function_returns_what_the_function_returns_eagerly() -> None:
    fused = FusedFunction(step, "test step")
    state = {"a": torch.arange(4.0), "b": torch.linspace(0.1, 1.3, 12).reshape(4, 3)}
    x = torch.tensor([0.5, 1.5, 2.5, -3.0])
    for _ in range(3):  # the first call compiles; the others run the compiled graph
        out, ref = fused(state, x), step(state, x)
        assert pytree.tree_structure(out) == pytree.tree_structure(ref)
        for got, want in zip(pytree.tree_leaves(out), pytree.tree_leaves(ref), strict=True):
            assert got.dtype == want.dtype and torch.equal(got, want)
        state = out[0]
    assert fused.path == "fused" and fused.reason is None


def add_twice(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    return state["a"] + 2.0 * x


@pytest.mark.slow
def test_a_tensor_passed_twice_at_the_first_call_stays_two_inputs() -> None:
    fused = FusedFunction(add_twice, "test add")
    a = torch.arange(4.0)
    assert torch.equal(fused({"a": a}, a), 3.0 * a)  # compiled with x the same tensor as a
    x = torch.tensor([1.0, -1.0, 0.5, 2.0])
    assert torch.equal(fused({"a": a}, x), a + 2.0 * x)
    assert fused.path == "fused"


@pytest.mark.slow
def test_tracing_is_true_while_the_function_is_traced_only() -> None:
    seen: list[bool] = []

    def fn(state: dict[str, torch.Tensor], x: torch.Tensor):
        seen.append(tracing())
        return {"a": state["a"] + x}

    fused = FusedFunction(fn, "test step")
    for _ in range(3):
        fused({"a": torch.zeros(3)}, torch.ones(3))
    assert seen == [True]  # traced once; the compiled calls run no Python of fn
    assert not tracing()


def test_an_anchored_flag_is_the_flag_itself_outside_a_fused_graph() -> None:
    flag, index = torch.tensor([True, False, True]), torch.tensor([4, 5, 6])
    assert anchored(flag, index) is flag


@pytest.mark.slow
def test_an_anchored_flag_keeps_its_values_inside_a_fused_graph() -> None:
    def fn(state: dict[str, torch.Tensor], action: torch.Tensor):
        limited = (action.abs() > 0.5).any(-1)  # read from the action alone
        return {"t": state["t"] + 1, "hit": anchored(limited, state["t"])}

    fused = FusedFunction(fn, "test anchored")
    gen = torch.Generator().manual_seed(0)
    state = {"t": torch.arange(64)}
    for _ in range(3):
        action = torch.rand(64, 2, generator=gen) * 2 - 1
        out = fused(state, action)
        assert out["hit"].dtype == torch.bool
        assert torch.equal(out["hit"], (action.abs() > 0.5).any(-1))
        state = {"t": out["t"]}
    assert fused.path == "fused"


@pytest.mark.slow
def test_a_python_branch_on_tensor_data_is_compiled_by_torch_compile_not_baked_in() -> None:
    def fn(state: dict[str, torch.Tensor], x: torch.Tensor):
        if bool((x > 0).all()):  # data-dependent: a trace over real values would fix the branch
            return {"a": state["a"] + x}
        return {"a": state["a"] - x}

    fused = FusedFunction(fn, "test step")
    zeros = torch.zeros(3)
    assert torch.equal(fused({"a": zeros}, torch.ones(3))["a"], torch.ones(3))
    assert torch.equal(fused({"a": zeros}, -torch.ones(3))["a"], torch.ones(3))  # 0 - (-1)
    assert fused.path == "torch.compile"
    assert fused.reason


def gather_and_scale(state: dict[str, torch.Tensor], index: torch.Tensor):
    return {"a": state["a"][index] * 2.0 + 1.0}


@pytest.mark.slow
def test_a_fused_function_compiles_under_its_inductor_options_only() -> None:
    from torch._inductor import config

    default_simdlen = config.cpp.simdlen
    state, index = {"a": torch.arange(64.0)}, torch.arange(64).flip(0)
    scalar = FusedFunction(gather_and_scale, "test scalar", {"cpp.simdlen": 1})
    vector = FusedFunction(gather_and_scale, "test vector")
    for fused in (scalar, vector):
        assert torch.equal(fused(state, index)["a"], gather_and_scale(state, index)["a"])
        assert config.cpp.simdlen == default_simdlen  # restored after the compile
    # One lane: the kernel is scalar C++; by default inductor writes SIMD vector code.
    assert "at::vec" not in scalar._compiled.source_code
    assert "at::vec" in vector._compiled.source_code
