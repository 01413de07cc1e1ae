"""The LightningDataModule that serves sliding feature windows and next-bar labels.

A sample is decided at the close of bar t: its window holds bars t-L+1..t and its label is
the class of the return a trade could earn, ``log(close[t+1] / open[t+1])`` (filled at the
next open, marked at the next close), per asset.
"""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.errors import ConfigError
from datamodules.market import Market
from datamodules.pipeline import MarketData

BPS = 1e-4


def next_bar_returns(market: Market) -> np.ndarray:
    """(T, A): log open-to-close return of bar t+1, the label of a decision at t (nan at the end)."""
    out = np.full(market.close.shape, np.nan)
    out[:-1] = np.log(market.close[1:] / market.open[1:])
    return out


def direction_labels(
    returns: np.ndarray, num_classes: int, flat_threshold_bps: float
) -> np.ndarray:
    """Classes of returns: 2 -> down(0)/up(1); 3 -> down(0)/flat(1)/up(2) with a flat band."""
    if num_classes == 2:
        return (returns > 0).astype(np.int64)
    if num_classes == 3:
        band = flat_threshold_bps * BPS
        return np.where(returns > band, 2, np.where(returns < -band, 0, 1)).astype(np.int64)
    raise ConfigError(
        f"model.task.num_classes is {num_classes}; use 2 (down/up) or 3 (down/flat/up)."
    )


class WindowDataset(Dataset):
    """Windows of one split: items are dicts with ``x`` (L, F_in), ``age`` (L,), ``y`` (A,), ``t``."""

    def __init__(
        self,
        inputs: torch.Tensor,
        age_minutes: torch.Tensor,
        labels: torch.Tensor,
        decisions: np.ndarray,
        window: int,
    ):
        self.inputs = inputs
        self.age_minutes = age_minutes
        self.labels = labels
        self.decisions = decisions
        self.window = window

    def __len__(self) -> int:
        return len(self.decisions)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        t = int(self.decisions[i])
        rows = slice(t - self.window + 1, t + 1)
        stamps = self.age_minutes[rows]
        return {
            "x": self.inputs[rows],
            "age": stamps[-1] - stamps,
            "y": self.labels[t],
            "t": torch.tensor(t),
        }


class WindowDataModule(pl.LightningDataModule):
    """Serves windows of a :class:`MarketData` for each split; shuffles only training batches.

    Inputs per bar are the normalised per-ticker features (asset-major) then the calendar
    features: ``F_in = A * F + G``.
    """

    def __init__(self, data: MarketData, num_classes: int = 2, flat_threshold_bps: float = 0.0):
        super().__init__()
        self.data = data
        self.market = data.market
        self.split = data.split
        self.window = data.window
        self.num_classes = num_classes
        m = self.market
        feats = m.features.reshape(m.num_bars, -1)
        self.inputs = torch.from_numpy(
            np.concatenate([feats, m.time_features], axis=1).astype(np.float32)
        )
        minutes = (m.timestamps - m.timestamps[0]) / np.timedelta64(1, "m")
        self.minutes = torch.from_numpy(minutes.astype(np.float32))
        self.labels = torch.from_numpy(
            direction_labels(next_bar_returns(m), num_classes, flat_threshold_bps)
        )

    @property
    def input_size(self) -> int:
        return int(self.inputs.shape[1])

    @property
    def num_assets(self) -> int:
        return self.market.num_assets

    def decisions(self, part: str) -> np.ndarray:
        """Decision bars of a split: the window fits in the data and the fill bar is in the
        split (in each of its spans, when it has several)."""
        return np.concatenate([self.span_decisions(span) for span in self.split.spans(part)])

    def span_decisions(self, span: tuple[int, int]) -> np.ndarray:
        """Decision bars of one contiguous span ``[start, stop)``."""
        start, stop = span
        return np.arange(max(start, self.window - 1), stop - 1)

    def dataset(self, part: str) -> WindowDataset:
        return WindowDataset(
            self.inputs, self.minutes, self.labels, self.decisions(part), self.window
        )

    def _loader(self, part: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.dataset(part),
            batch_size=self.data.batch_size,
            shuffle=shuffle,
            num_workers=self.data.num_workers,
            persistent_workers=self.data.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
