"""A pure tensor function compiled once by inductor and called without torch.compile's per-call work.

``torch.compile`` re-enters dynamo on every call: its frame hook, its guards, the bytecode that
flattens the inputs and rebuilds the outputs, and AOT autograd's runtime wrappers. For the
trading env's compiled step that is about 40 us a call, a sixth of the whole step at 4,096 envs
on a CPU (bench/env_throughput.py). :class:`FusedFunction` traces its function once, at its first
call, with ``make_fx`` over fake tensors, compiles that graph with inductor's ``compile_fx_inner``
(the same lowering, kernels and numbers as ``torch.compile``) and from then on each call is a list
of tensors in and out.

What dynamo's guards would check is the caller's to keep fixed after the first call: the dict's
keys, every input's shape, strides, dtype and device (inductor's wrapper asserts the shapes and
strides), and the Python values the function reads (settings, data tables): the trading env drops
its fused functions when one of those attributes is set again. A function the trace cannot take
(a Python branch on tensor data, which over fake tensors raises instead of being baked in) is
compiled by ``torch.compile`` instead, which splits the graph there; the log says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.utils._pytree as pytree

__all__ = ["FusedFunction", "anchored", "tracing"]

log = logging.getLogger(__name__)

_tracing = False


def tracing() -> bool:
    """Whether a :class:`FusedFunction` is tracing now: the fused counterpart of
    ``torch.compiler.is_compiling()``, for code that picks the formulation inductor compiles
    better."""
    return _tracing


def anchored(flag: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``flag`` (bool), tied inside a fused graph to ``index`` (an integer tensor it broadcasts
    with, such as the env's bar index): ``flag & (index == index)``, which is ``flag`` exactly;
    outside one, ``flag`` itself.

    Inductor fuses two computations into one loop only when they read a common buffer. A flag
    computed from the action alone (through constant tables) reads none that the rest of the
    step reads, so it gets a loop of its own, which gathers the action's targets again and
    stores the flag into the trigger matrix lane by lane: a sixth of the dual-ticker step at
    65,536 envs. Reading the bar index moves it into the step's main loop, where the step
    takes about 10% less time (measured against bench/env_throughput.py's configs)."""
    if not _tracing:
        return flag
    return flag & (index == index)


class FusedFunction:
    """``fn(mapping, *tensors)`` (a dict of tensors first, then tensors; it returns any pytree of
    tensors), compiled for the inputs of its first call; ``what`` names it in the log.

    :attr:`path` says how it was compiled once it has been: ``"fused"`` (traced and compiled by
    inductor) or ``"torch.compile"`` (the trace failed; ``reason`` says why).

    ``options``: inductor config values to compile under, by dotted name (for example
    ``{"cpp.simdlen": 1}``: scalar C++ code, no SIMD vectors), as ``torch.compile``'s
    ``options`` takes them; None = inductor's defaults.
    """

    def __init__(
        self, fn: Callable[..., Any], what: str, options: dict[str, Any] | None = None
    ) -> None:
        self.fn = fn
        self.what = what
        self.options = dict(options or {})
        self.path: str | None = None
        self.reason: str | None = None
        self._keys: tuple[str, ...] = ()
        self._spec: pytree.TreeSpec | None = None
        self._compiled: Callable[[list[torch.Tensor]], list[torch.Tensor]] | None = None
        self._rebuild: Callable[[Iterator[torch.Tensor]], Any] = next
        self._dynamo: Callable[..., Any] | None = None

    def __call__(self, mapping: dict[str, torch.Tensor], *args: torch.Tensor) -> Any:
        if self._compiled is not None:
            inputs = [mapping[k] for k in self._keys]
            inputs.extend(args)
            return self._rebuild(iter(self._compiled(inputs)))
        if self._dynamo is not None:
            return self._dynamo(mapping, *args)
        return self._build(mapping, args)

    def _build(self, mapping: dict[str, torch.Tensor], args: tuple[torch.Tensor, ...]) -> Any:
        """The first call: trace, compile, run (or hand over to torch.compile), under
        :attr:`options`."""
        from torch._inductor import config

        with config.patch(self.options):
            return self._trace_and_compile(mapping, args)

    def _trace_and_compile(
        self, mapping: dict[str, torch.Tensor], args: tuple[torch.Tensor, ...]
    ) -> Any:
        from torch._inductor.compile_fx import compile_fx_inner
        from torch._inductor.decomposition import select_decomp_table
        from torch.fx.experimental.proxy_tensor import make_fx

        keys = tuple(mapping)
        specs: list[pytree.TreeSpec] = []

        def flat(*tensors: torch.Tensor) -> list[torch.Tensor]:
            out = self.fn(dict(zip(keys, tensors[: len(keys)], strict=True)), *tensors[len(keys) :])
            leaves, spec = pytree.tree_flatten(out)
            specs.append(spec)
            return leaves

        inputs = [mapping[k] for k in keys] + list(args)
        # One tensor passed twice would be one input to the trace (its fake tensor is looked
        # up by identity), so the graph would read the second input from the first; the trace
        # gets a copy for each repeat, and later calls may pass the same or other tensors.
        seen: set[int] = set()
        traced = []
        for x in inputs:
            traced.append(x.clone() if id(x) in seen else x)
            seen.add(id(x))
        global _tracing
        _tracing = True
        try:
            graph = make_fx(
                flat,
                decomposition_table=select_decomp_table(),
                tracing_mode="fake",
                _allow_non_fake_inputs=True,  # the function's own tables are real constants
            )(*traced)
        except Exception as err:  # a data-dependent branch, an op make_fx lacks
            self.path = "torch.compile"
            self.reason = f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"
            log.info(
                "%s: not one traceable graph (%s); compiling with torch.compile",
                self.what,
                self.reason,
            )
            self._dynamo = torch.compile(self.fn, dynamic=None, options=self.options or None)
            return self._dynamo(mapping, *args)
        finally:
            _tracing = False
        compiled = compile_fx_inner(graph, inputs)
        self._keys, self._spec, self._compiled = keys, specs[-1], compiled
        self._rebuild = _builder(self._spec)
        self.path = "fused"
        return self._rebuild(iter(compiled(list(inputs))))


def _builder(spec: pytree.TreeSpec) -> Callable[[Iterator[torch.Tensor]], Any]:
    """A function that rebuilds the outputs of ``spec`` from an iterator over its leaves: what
    ``pytree.tree_unflatten`` returns, in a quarter of its time for dicts, tuples and lists
    (about 2 us for the env step's outputs instead of 9); other containers go through it."""
    if spec.is_leaf():
        return next
    kids = [_builder(child) for child in spec.children()]
    if spec.type is dict:
        keys = list(spec.context)
        return lambda leaves: {key: kid(leaves) for key, kid in zip(keys, kids, strict=True)}
    if spec.type in (tuple, list):
        kind = spec.type
        return lambda leaves: kind([kid(leaves) for kid in kids])
    count = spec.num_leaves
    return lambda leaves: pytree.tree_unflatten([next(leaves) for _ in range(count)], spec)
