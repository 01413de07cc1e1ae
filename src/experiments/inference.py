"""Pure inference from an ``export/`` bundle: numpy (or raw bars) in, action or class
probabilities out.

    policy = Policy.load("outputs/runs/<date>/<time>_ppo/export")
    action, logits = policy(observation)          # (obs_dim,) float32 -> int, (num_actions,)

    forecaster = Forecaster.load(".../<time>_lstm/export")
    probs = forecaster(window)                      # (L, F_in) normalised -> (A, C)
    probs = forecaster.predict_bars(bars)           # raw OHLCV bars -> (A, C)

Runtime: ONNX Runtime when importable (one intra-op thread, sequential execution, all graph
optimisations), else the TorchScript file. Loading checks every file against the sha256
recorded in ``metadata.json`` (a changed bundle is refused) and never unpickles arbitrary
objects (``onnxruntime`` / ``torch.jit.load``). Imports stay light: numpy and json at import
time; onnxruntime, torch and polars only when needed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.errors import UserInputError

FORMAT_VERSION = 1


class BundleError(UserInputError):
    """An export folder that is missing, incomplete, changed after export, or of another kind."""


class InputShapeError(UserInputError):
    """Input whose shape, dtype or feature names do not match the bundle's metadata."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes (recorded per file in metadata.json at export)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_bundle(folder: str | Path, kind: str) -> tuple[Path, dict]:
    """``metadata.json`` of an export folder of ``kind`` (forecaster | agent), after checking
    each file listed there against its recorded sha256."""
    folder = Path(folder)
    meta_path = folder / "metadata.json"
    if not meta_path.is_file():
        raise BundleError(
            f"{folder} is not an export bundle: it has no metadata.json. Give the export/ folder "
            "of a run (python -m experiments.export RUN_DIR writes one)."
        )
    meta = json.loads(meta_path.read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{meta_path} has format_version {meta.get('format_version')}; this code reads "
            f"{FORMAT_VERSION}. Re-export the run with this version of the project."
        )
    if meta.get("kind") != kind:
        other = "Forecaster" if meta.get("kind") == "forecaster" else "Policy"
        raise BundleError(
            f"{folder} holds a {meta.get('kind')} ({meta.get('model')}), not a {kind}; load it "
            f"with {other}.load."
        )
    for name, digest in (meta.get("files") or {}).items():
        path = folder / name
        if not path.is_file():
            raise BundleError(
                f"{folder} is incomplete: {name} (listed in metadata.json) is missing. Copy the "
                "whole export folder, or re-export the run."
            )
        if sha256_file(path) != digest:
            raise BundleError(
                f"{path} does not match the sha256 recorded in metadata.json at export: the "
                "bundle was changed after export. Re-export the run (python -m "
                "experiments.export RUN_DIR) rather than editing its files."
            )
    return folder, meta


class _Runtime:
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


def _as_batch(x: Any, shape: tuple[int, ...], what: str, folder: Path) -> tuple[np.ndarray, bool]:
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


class _Features:
    """What a bundle knows of the market's features: tickers, feature names, and the
    normalisation fitted on the training split (``metadata.json``)."""

    def _read_features(self, meta: dict) -> None:
        self.tickers: list[str] = list(meta["tickers"])
        self.feature_names: list[str] = list(meta["feature_names"])
        norm = meta["normalisation"]
        # (A, F) arrays, as the pipeline fitted them (float64).
        self.mean = np.array([norm[f]["mean"] for f in self.feature_names], np.float64).T
        self.std = np.array([norm[f]["std"] for f in self.feature_names], np.float64).T

    def normalize(self, raw_features: Any) -> np.ndarray:
        """Raw per-ticker features ``(..., A, F)`` (ticker and feature order of the metadata)
        -> normalised ``(..., A * F)`` float32, exactly as the pipeline normalised training
        data. Calendar features (not normalised) go after these columns."""
        raw = np.asarray(raw_features, dtype=np.float32)
        want = (len(self.tickers), len(self.feature_names))
        if raw.shape[-2:] != want:
            raise InputShapeError(
                f"Raw features have shape {raw.shape}; the model in {self.folder} expects "
                f"(..., {want[0]} tickers {self.tickers}, {want[1]} features "
                f"{self.feature_names})."
            )
        out = ((raw - self.mean) / self.std).astype(np.float32)
        return out.reshape(*raw.shape[:-2], want[0] * want[1])


class Policy(_Features):
    """An exported agent: observation ``(obs_dim,)`` or ``(B, obs_dim)`` float32 -> action
    (``int``, or int64 ``(B,)``) and logits (PPO) or Q-values (DQN).

    Recurrent policies keep their state ``(B, S, H)`` inside (zeros after :meth:`reset` and at
    load) or take it explicitly with :meth:`step`."""

    def __init__(self, folder: Path, meta: dict, runtime: str | None, threads: int) -> None:
        self.folder = folder
        self.metadata = meta
        self.obs_dim = int(meta["obs_dim"])
        self.observation_names: list[str] = list(meta["observation_names"])
        self._read_features(meta)
        self.action_map: dict[str, Any] = meta["action_map"]
        self.recurrent = bool(meta.get("recurrent"))
        self.state_shape = tuple(meta["state_shape"]) if self.recurrent else None
        self._rt = _Runtime(folder, meta, runtime, threads)
        self.runtime = self._rt.name
        self._shape = (self.obs_dim,)
        self._state: np.ndarray | None = None
        self._fast = None
        if not self.recurrent and self._rt.name == "onnxruntime":
            self._fast = self._bind_one_observation()

    def _bind_one_observation(self):
        """The hot path for one observation: ONNX Runtime reads and writes preallocated
        buffers bound once (no per-call feed dict, output allocation or name lookups). This
        halves the latency of a small policy; it makes a Policy unsafe to call from several
        threads at once (load one per thread)."""
        import onnxruntime as ort

        session = self._rt.session
        values_shape = session.get_outputs()[1].shape
        width = values_shape[-1] if isinstance(values_shape[-1], int) else None
        if width is None:
            return None
        obs = np.zeros((1, self.obs_dim), np.float32)
        action = np.zeros((1,), np.int64)
        values = np.zeros((1, width), np.float32)
        binding = session.io_binding()
        binding.bind_ortvalue_input(self._rt.input_names[0], ort.OrtValue.ortvalue_from_numpy(obs))
        for name, buffer in zip(self._rt.output_names, (action, values), strict=True):
            binding.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_numpy(buffer))
        run = session.run_with_iobinding

        def one(x: np.ndarray) -> tuple[int, np.ndarray]:
            obs[0] = x
            run(binding)
            return int(action[0]), values[0].copy()

        return one

    @classmethod
    def load(cls, export_dir: str | Path, runtime: str | None = None, threads: int = 1) -> Policy:
        """Load ``export_dir`` (checks its files' sha256); ``runtime``: None (ONNX Runtime if
        installed, else TorchScript) | ``onnxruntime`` | ``torchscript``; ``threads``: intra-op
        threads."""
        folder, meta = read_bundle(export_dir, "agent")
        return cls(folder, meta, runtime, threads)

    def reset(self) -> None:
        """Start a new episode: the recurrent state goes back to zeros."""
        self._state = None

    def check_names(self, names: list[str]) -> None:
        """Refuse observation column ``names`` that differ from the bundle's, naming the first
        difference."""
        if list(names) != self.observation_names:
            diff = next(
                (
                    i
                    for i, (a, b) in enumerate(zip(names, self.observation_names, strict=False))
                    if a != b
                ),
                min(len(names), len(self.observation_names)),
            )
            got = names[diff] if diff < len(names) else "(nothing)"
            want = self.observation_names[diff] if diff < self.obs_dim else "(nothing)"
            raise InputShapeError(
                f"Observation column {diff} is '{got}'; the policy in {self.folder} expects "
                f"'{want}' ({self.obs_dim} columns in the order of metadata.json "
                "observation_names)."
            )

    def __call__(self, observation: Any) -> tuple[int | np.ndarray, np.ndarray]:
        """(action, logits or Q-values) for one observation or a batch."""
        if self._fast is not None:
            x = observation
            if (
                type(x) is np.ndarray
                and x.dtype == np.float32
                and x.shape == self._shape
                and x.flags.c_contiguous
            ):
                return self._fast(x)
        batch, single = _as_batch(observation, self._shape, "The observation", self.folder)
        if not self.recurrent:
            action, values = self._rt.run(batch)
        else:
            if self._state is None or self._state.shape[0] != len(batch):
                self._state = np.zeros((len(batch), *self.state_shape), np.float32)
            action, values, self._state = self._rt.run(batch, self._state)
        return (int(action[0]), values[0]) if single else (action, values)

    def observation_from_bars(self, bars: Any, held: Any = None) -> np.ndarray:
        """The observation at the last bar of raw OHLCV ``bars`` (as for
        :meth:`Forecaster.window_from_bars`), with ``held`` the weights held per ticker
        (signed fractions of equity; default flat)."""
        from experiments.inference_bars import observation_from_bars

        return observation_from_bars(self, bars, held)

    def step(
        self, observation: Any, state: np.ndarray | None
    ) -> tuple[int | np.ndarray, np.ndarray, np.ndarray]:
        """Recurrent policies, state passed explicitly: (action, logits, new state); a
        ``None`` state starts an episode (zeros)."""
        if not self.recurrent:
            raise UserInputError(f"The policy in {self.folder} is not recurrent; call it directly.")
        batch, single = _as_batch(observation, self._shape, "The observation", self.folder)
        if state is None:
            state = np.zeros((len(batch), *self.state_shape), np.float32)
        state, _ = _as_batch(state, self.state_shape, "The state", self.folder)
        if single and len(state) != 1 or not single and len(state) != len(batch):
            raise InputShapeError(
                f"The state has batch {len(state)} but the observation {len(batch)}; give one "
                f"state {self.state_shape} per observation."
            )
        action, logits, new = self._rt.run(batch, state)
        return (int(action[0]), logits[0], new[0]) if single else (action, logits, new)


class Forecaster(_Features):
    """An exported forecaster: a window of normalised features ``(L, F_in)`` or ``(B, L,
    F_in)`` (columns: metadata ``input_feature_names``) -> class probabilities ``(A, C)`` or
    ``(B, A, C)`` (classes down, (flat,) up). The Transformer also takes ``age`` ``(L,)`` /
    ``(B, L)``: minutes between each window row and the last one.

    :meth:`normalize` applies the training split's normalisation to raw features;
    :meth:`window_from_bars` runs the whole feature pipeline on raw OHLCV bars."""

    def __init__(self, folder: Path, meta: dict, runtime: str | None, threads: int) -> None:
        self.folder = folder
        self.metadata = meta
        self.window = int(meta["window"])
        self._read_features(meta)
        self.input_feature_names: list[str] = list(meta["input_feature_names"])
        self.uses_age = bool(meta.get("uses_age"))
        self._rt = _Runtime(folder, meta, runtime, threads)
        self.runtime = self._rt.name
        self._shape = (self.window, len(self.input_feature_names))

    @classmethod
    def load(
        cls, export_dir: str | Path, runtime: str | None = None, threads: int = 1
    ) -> Forecaster:
        """Load ``export_dir`` (checks its files' sha256); see :meth:`Policy.load`."""
        folder, meta = read_bundle(export_dir, "forecaster")
        return cls(folder, meta, runtime, threads)

    def __call__(self, window: Any, age: Any = None) -> np.ndarray:
        """Class probabilities of the next bar per asset."""
        batch, single = _as_batch(window, self._shape, "The window", self.folder)
        inputs = [batch]
        if self.uses_age:
            if age is None:
                raise InputShapeError(
                    f"The forecaster in {self.folder} ({self.metadata.get('network')}) needs "
                    "age: minutes between each window row and the last (last 0). "
                    "window_from_bars returns it."
                )
            ages, _ = _as_batch(age, (self.window,), "The age", self.folder)
            if len(ages) != len(batch):
                raise InputShapeError(f"age has batch {len(ages)}, the window {len(batch)}.")
            inputs.append(ages)
        (probs,) = self._rt.run(*inputs)
        return probs[0] if single else probs

    def window_from_bars(self, bars: Any) -> tuple[np.ndarray, np.ndarray]:
        """The latest window ``(L, F_in)`` and its ages ``(L,)`` from raw bars: a polars or
        pandas frame with columns ticker, timestamp, open, high, low, close, volume (already
        at the bar size), or a dict ticker -> frame / dict of those arrays. Features are
        computed by the training pipeline's code; recursive ones (EMA, RSI) depend on where
        the history starts, so give as much history as training had for identical values."""
        from experiments.inference_bars import window_from_bars

        return window_from_bars(self, bars)

    def predict_bars(self, bars: Any) -> np.ndarray:
        """Class probabilities ``(A, C)`` for the bar after the last one in ``bars``."""
        window, age = self.window_from_bars(bars)
        return self(window, age)
