"""Write a family's inference wrapper (:class:`modules.signature.Inference`) as TorchScript, a
``torch.export`` program and ONNX, and run each written file back (for verification).

Every format has a dynamic batch dimension; the other dims are fixed by the model.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import torch
from torch import nn

from datamodules.errors import ConfigError
from modules.signature import Signature

log = logging.getLogger(__name__)

FORMATS = {"torchscript": "model.ts", "torch_export": "model.pt2", "onnx": "model.onnx"}
ONNX_EXPORTERS = ("dynamo", "torchscript")
Runner = Callable[[tuple[np.ndarray, ...]], tuple[np.ndarray, ...]]


def _batch_dims(sig: Signature) -> tuple[dict[int, torch.export.Dim], ...]:
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    return tuple({0: batch} for _ in sig.inputs)


def write_torchscript(wrapper: nn.Module, sig: Signature, path: Path) -> None:
    """Trace ``wrapper`` (with a batch of 2) and save it; verification checks other batch sizes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(wrapper, sig.example(2), check_trace=False)
    traced.save(str(path))


def write_torch_export(wrapper: nn.Module, sig: Signature, path: Path) -> None:
    """``torch.export.export`` with a dynamic batch dim, then ``torch.export.save``."""
    program = torch.export.export(wrapper, sig.example(2), dynamic_shapes=_batch_dims(sig))
    torch.export.save(program, str(path))


def write_onnx(wrapper: nn.Module, sig: Signature, path: Path, exporter: str, opset: int) -> None:
    """``torch.onnx.export`` with the ``dynamo`` (torch.export-based) or the legacy
    ``torchscript`` exporter, named inputs/outputs and a dynamic batch dim."""
    if exporter not in ONNX_EXPORTERS:
        raise ConfigError(
            f"export.onnx_exporter is '{exporter}'; choose one of {', '.join(ONNX_EXPORTERS)}."
        )
    names = dict(input_names=list(sig.inputs), output_names=list(sig.outputs))
    if exporter == "dynamo":
        kwargs = dict(
            dynamo=True, dynamic_shapes=_batch_dims(sig), verbose=False, external_data=False
        )
    else:
        axes = {n: {0: "batch"} for n in [*sig.inputs, *sig.outputs]}
        kwargs = dict(dynamo=False, dynamic_axes=axes)
    # The exporter logs that torchvision's ops are skipped (we use none of them).
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper, sig.example(2), str(path), opset_version=int(opset), **names, **kwargs
        )
    registration.setLevel(level)


def write_all(
    wrapper: nn.Module, sig: Signature, folder: Path, exporter: str, opset: int
) -> dict[str, Path]:
    """Write every format into ``folder``; return format -> path."""
    wrapper = wrapper.cpu().eval()
    paths = {fmt: folder / name for fmt, name in FORMATS.items()}
    write_torchscript(wrapper, sig, paths["torchscript"])
    write_torch_export(wrapper, sig, paths["torch_export"])
    write_onnx(wrapper, sig, paths["onnx"], exporter, opset)
    return paths


def _torch_runner(module: Callable) -> Runner:
    def run(inputs: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        with torch.no_grad():
            out = module(*(torch.from_numpy(np.ascontiguousarray(a)) for a in inputs))
        out = out if isinstance(out, tuple) else (out,)
        return tuple(o.numpy() for o in out)

    return run


def eager_runner(wrapper: nn.Module) -> Runner:
    """The wrapper itself, under ``torch.no_grad``."""
    return _torch_runner(wrapper.cpu().eval())


def load_runner(fmt: str, path: Path) -> Runner:
    """Load a written format back with its own safe loader and return a numpy runner."""
    if fmt == "torchscript":
        with warnings.catch_warnings():  # torch 2.14 deprecates TorchScript; it still loads
            warnings.simplefilter("ignore", FutureWarning)
            return _torch_runner(torch.jit.load(str(path), map_location="cpu"))
    if fmt == "torch_export":
        return _torch_runner(torch.export.load(str(path)).module())
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]

        def run(inputs: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
            return tuple(session.run(None, dict(zip(names, inputs, strict=True))))

        return run
    raise ValueError(f"unknown export format {fmt!r}")
