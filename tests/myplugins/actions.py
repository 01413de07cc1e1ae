"""An action scheme of a user's own: one exposure dial for the whole book.

Action ``k`` of ``steps + 1`` holds ``k / steps`` of equity, split equally over the tickers
(long only): action 0 is all flat, the last fully invested. The same ``steps + 1`` actions for
one ticker or fifty.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from datamodules.errors import ConfigError
from datamodules.market import Market
from envs.actions import ActionScheme


class ExposureActions(ActionScheme):
    """``steps + 1`` actions: exposure 0, 1/steps, ..., 1 of equity, equal weights."""

    def __init__(self, market: Market, steps: int = 4) -> None:
        if steps < 1:
            raise ConfigError(f"env.actions.steps is {steps}; use >= 1 exposure steps.")
        levels = torch.arange(steps + 1, dtype=torch.float64) / steps
        self._weights = levels.unsqueeze(-1).expand(-1, market.num_assets) / market.num_assets
        self._weights = self._weights.contiguous()
        self.num_actions = steps + 1
        self.names = [f"exposure {v:.0%}" for v in levels.tolist()]
        self._levels = levels.tolist()

    def targets(self, action: torch.Tensor, current: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self._weights[action]

    def table(self) -> dict[int, list[float] | str]:
        return {i: row.tolist() for i, row in enumerate(self._weights)}

    def keys(self, tickers: Sequence[str]) -> list[str]:
        return [f"exposure={v:g}" for v in self._levels]

    @property
    def neutral(self) -> int | None:
        return 0  # all flat
