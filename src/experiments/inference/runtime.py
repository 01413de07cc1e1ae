"""One loaded model file with numpy in and out: ONNX Runtime (one intra-op thread, sequential
execution, all graph optimisations) when importable, else the TorchScript file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from datamodules.errors import UserInputError
from experiments.inference.bundle import InputShapeError


class Runtime:
    """One loaded model file with numpy in and out: ONNX Runtime or TorchScript."""

    def __init__(self, folder: Path, meta: dict, runtime: str | None, threads: int) -> None:
        self.input_names = [i["name"] for i in meta["formats"]["onnx"]["inputs"]]
        self.output_names = [o["name"] for o in meta["formats"]["onnx"]["outputs"]]
        if runtime is None:
            try:
                import onnxruntime  # noqa: F401

                runtime = "onnxruntime"
            except ImportError:
                runtime = "torchscript"
        self.name = runtime
        if runtime == "onnxruntime":
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.log_severity_level = 3
            self.session = ort.InferenceSession(
                str(folder / meta["formats"]["onnx"]["file"]),
                sess_options=opts,
                providers=["CPUExecutionProvider"],
            )
            self.run = self._run_onnx
        elif runtime == "torchscript":
            import torch

            self.torch = torch
            self.module = torch.jit.load(
                str(folder / meta["formats"]["torchscript"]["file"]), map_location="cpu"
            )
            self.run = self._run_torch
        else:
            raise UserInputError(
                f"runtime is '{runtime}'; choose onnxruntime, torchscript or None (the fastest "
                "available)."
            )

    def _run_onnx(self, *inputs: np.ndarray) -> list[np.ndarray]:
        return self.session.run(
            self.output_names, dict(zip(self.input_names, inputs, strict=False))
        )

    def _run_torch(self, *inputs: np.ndarray) -> list[np.ndarray]:
        with self.torch.inference_mode():
            out = self.module(*(self.torch.from_numpy(a) for a in inputs))
        out = out if isinstance(out, tuple) else (out,)
        return [o.numpy() for o in out]


def as_batch(x: Any, shape: tuple[int, ...], what: str, folder: Path) -> tuple[np.ndarray, bool]:
    """``x`` as a contiguous float32 batch of ``shape`` samples, and whether it was one sample."""
    arr = np.asarray(x, dtype=np.float32)
    if arr.shape == shape:
        return np.ascontiguousarray(arr[None]), True
    if arr.ndim == len(shape) + 1 and arr.shape[1:] == shape and arr.shape[0] >= 1:
        return np.ascontiguousarray(arr), False
    raise InputShapeError(
        f"{what} has shape {arr.shape}; the model in {folder} takes {shape} (one sample) or "
        f"(batch, {', '.join(map(str, shape))}). See metadata.json for the names of the columns."
    )
