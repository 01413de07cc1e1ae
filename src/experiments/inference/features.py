"""What a bundle knows of the market's features: tickers, feature names, and the normalisation
fitted on the training split."""

from __future__ import annotations

from typing import Any

import numpy as np

from experiments.inference.bundle import InputShapeError


class BundleFeatures:
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
