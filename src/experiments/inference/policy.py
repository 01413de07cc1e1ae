"""An exported agent as a :class:`Policy`: an observation (or raw bars and the weights held)
in, the action and its logits or Q-values out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from datamodules.errors import UserInputError
from experiments.inference.bundle import InputShapeError, read_bundle
from experiments.inference.features import BundleFeatures
from experiments.inference.runtime import Runtime, as_batch


class Policy(BundleFeatures):
    """An exported agent: observation ``(obs_dim,)`` or ``(B, obs_dim)`` float32 -> action
    (``int``, or int64 ``(B,)``) and its logits or Q-values.

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
        self._rt = Runtime(folder, meta, runtime, threads)
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
        """Load ``export_dir`` (checks its files' sha256): an export folder, the folder a model
        artifact was downloaded to, or ``wandb-artifact://ENTITY/PROJECT/NAME:ALIAS`` (online,
        downloaded through W&B's API); ``runtime``: None (ONNX Runtime if
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
        batch, single = as_batch(observation, self._shape, "The observation", self.folder)
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
        from experiments.inference.bars import observation_from_bars

        return observation_from_bars(self, bars, held)

    def step(
        self, observation: Any, state: np.ndarray | None
    ) -> tuple[int | np.ndarray, np.ndarray, np.ndarray]:
        """Recurrent policies, state passed explicitly: (action, logits, new state); a
        ``None`` state starts an episode (zeros)."""
        if not self.recurrent:
            raise UserInputError(f"The policy in {self.folder} is not recurrent; call it directly.")
        batch, single = as_batch(observation, self._shape, "The observation", self.folder)
        if state is None:
            state = np.zeros((len(batch), *self.state_shape), np.float32)
        state, _ = as_batch(state, self.state_shape, "The state", self.folder)
        if single and len(state) != 1 or not single and len(state) != len(batch):
            raise InputShapeError(
                f"The state has batch {len(state)} but the observation {len(batch)}; give one "
                f"state {self.state_shape} per observation."
            )
        action, logits, new = self._rt.run(batch, state)
        return (int(action[0]), logits[0], new[0]) if single else (action, logits, new)
