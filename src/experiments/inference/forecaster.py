"""An exported forecaster as a :class:`Forecaster`: a window of normalised features (or raw
OHLCV bars) in, class probabilities out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from experiments.inference.bundle import InputShapeError, read_bundle
from experiments.inference.features import BundleFeatures
from experiments.inference.runtime import Runtime, as_batch


class Forecaster(BundleFeatures):
    """An exported forecaster: a window of normalised features ``(L, F_in)`` or ``(B, L,
    F_in)`` (columns: metadata ``input_feature_names``) -> class probabilities ``(A, C)`` or
    ``(B, A, C)`` (classes down, (flat,) up). A net that uses ages also takes ``age`` ``(L,)`` /
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
        self._rt = Runtime(folder, meta, runtime, threads)
        self.runtime = self._rt.name
        self._shape = (self.window, len(self.input_feature_names))

    @classmethod
    def load(
        cls, export_dir: str | Path, runtime: str | None = None, threads: int = 1
    ) -> Forecaster:
        """Load ``export_dir`` (checks its files' sha256): an export folder, a downloaded model
        artifact or a ``wandb-artifact://`` path; see :meth:`Policy.load`."""
        folder, meta = read_bundle(export_dir, "forecaster")
        return cls(folder, meta, runtime, threads)

    def __call__(self, window: Any, age: Any = None) -> np.ndarray:
        """Class probabilities of the next bar per asset."""
        batch, single = as_batch(window, self._shape, "The window", self.folder)
        inputs = [batch]
        if self.uses_age:
            if age is None:
                raise InputShapeError(
                    f"The forecaster in {self.folder} ({self.metadata.get('network')}) needs "
                    "age: minutes between each window row and the last (last 0). "
                    "window_from_bars returns it."
                )
            ages, _ = as_batch(age, (self.window,), "The age", self.folder)
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
        from experiments.inference.bars import window_from_bars

        return window_from_bars(self, bars)

    def predict_bars(self, bars: Any) -> np.ndarray:
        """Class probabilities ``(A, C)`` for the bar after the last one in ``bars``."""
        window, age = self.window_from_bars(bars)
        return self(window, age)
