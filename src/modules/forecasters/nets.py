"""What every forecaster network is: a window of features in, per-asset class logits out.

Input contract (shared with the forecasting DataModule and the export):

- ``x``: float tensor ``(B, L, F_in)``. ``L`` bars of the window, oldest first; the last row is
  the decision bar ``t``. ``F_in = A * F + G``: per-asset features, asset-major (asset 0's ``F``
  features, then asset 1's, ...), followed by ``G`` market-wide calendar features. The networks
  only rely on ``F_in``.
- ``age``: float tensor ``(B, L)``, minutes between each window row and the decision bar (last
  row 0, increasing into the past; overnight and weekend gaps show as jumps). Read by nets that
  declare ``uses_age`` (the Transformer's time-aware positional encoding); others ignore it.
- Output: logits ``(B, A, C)`` for the class (down/up or down/flat/up) of bar ``t+1``'s return.

A forecaster network is named by ``_target_`` in ``model.network`` with ``_partial_: true``;
the module builds it with ``input_size``, ``num_assets``, ``num_classes`` and ``bar_minutes``
(the market's bar length) plus the config's own knobs.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn


class ForecasterNet(nn.Module):
    """Base of forecaster networks: the members the module and the export rely on.

    ``uses_age``: ``forward`` reads ``age`` (the export then takes it as an input).
    ``has_attention``: :meth:`attention` returns the attention maps the module plots.
    """

    uses_age: ClassVar[bool] = False
    has_attention: ClassVar[bool] = False

    def __init__(self, input_size: int, num_assets: int, num_classes: int) -> None:
        super().__init__()
        self.input_size = int(input_size)
        self.num_assets = int(num_assets)
        self.num_classes = int(num_classes)

    def forward(self, x: Tensor, age: Tensor | None = None) -> Tensor:
        """Logits ``(B, A, C)`` from features ``x (B, L, F_in)`` (and ``age (B, L)``)."""
        raise NotImplementedError

    def attention(self, x: Tensor, age: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(logits, attention maps ``(B, layers, L, L)``), for nets with ``has_attention``."""
        raise NotImplementedError(f"{type(self).__name__} has no attention maps")
