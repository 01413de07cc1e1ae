"""The LSTM forecaster (see :mod:`modules.forecasters.nets` for the input contract)."""

from __future__ import annotations

from typing import Annotated

import torch
from torch import Tensor, nn

from modules.forecasters.nets import ForecasterNet


class LSTMForecaster(ForecasterNet):
    """LSTM over the window, pooled to one vector, read out as per-asset class logits.

    Shapes: ``x`` ``(B, L, input_size)`` -> logits ``(B, num_assets, num_classes)``.

    The LSTM (``batch_first``, ``num_layers`` stacked, inter-layer ``dropout``) produces a
    hidden sequence ``(B, L, hidden_size)``. It is pooled either to the top layer's state at
    the last step (the decision bar), or, with ``attention_pooling``, to a learned attention
    average over time steps: ``w = softmax_L(score(h_l))`` with a linear ``score``, pooled
    ``sum_l w_l h_l``. Then ``LayerNorm -> Dropout -> Linear(hidden_size, A * C)`` and a reshape.

    ``age`` (minutes before the decision bar) and ``bar_minutes`` are accepted as every
    forecaster net takes them, and ignored: the LSTM only sees row order.
    """

    def __init__(
        self,
        input_size: int,
        num_assets: int,
        num_classes: int,
        hidden_size: Annotated[int, ">= 1"] = 64,
        num_layers: Annotated[int, ">= 1"] = 2,
        dropout: Annotated[float, ">= 0", "< 1"] = 0.1,
        attention_pooling: bool = False,
        bar_minutes: float | None = None,
    ) -> None:
        super().__init__(input_size, num_assets, num_classes)
        self.hidden_size = int(hidden_size)
        self.attention_pooling = bool(attention_pooling)
        self.lstm = nn.LSTM(
            input_size=self.input_size,
            hidden_size=self.hidden_size,
            num_layers=int(num_layers),
            batch_first=True,
            dropout=float(dropout) if num_layers > 1 else 0.0,
        )
        # Only present with attention_pooling, so plain checkpoints carry no unused score layer.
        self.attn_score = nn.Linear(self.hidden_size, 1) if self.attention_pooling else None
        self.norm = nn.LayerNorm(self.hidden_size)
        self.dropout = nn.Dropout(float(dropout))
        self.head = nn.Linear(self.hidden_size, self.num_assets * self.num_classes)

    def pooling_weights(self, h: Tensor) -> Tensor:
        """Attention weights ``(B, L)`` over time steps of the hidden sequence ``h (B, L, H)``."""
        if self.attn_score is None:
            raise RuntimeError("pooling_weights needs attention_pooling=True")
        return torch.softmax(self.attn_score(h).squeeze(-1), dim=-1)

    def forward(self, x: Tensor, age: Tensor | None = None) -> Tensor:
        """Logits ``(B, A, C)`` from features ``x (B, L, F_in)``; ``age`` is ignored."""
        h, _ = self.lstm(x)  # (B, L, H)
        if self.attn_score is not None:
            w = self.pooling_weights(h)  # (B, L)
            pooled = torch.bmm(w.unsqueeze(1), h).squeeze(1)  # (B, H)
        else:
            pooled = h[:, -1]  # top layer's state at the decision bar
        z = self.dropout(self.norm(pooled))
        return self.head(z).reshape(x.shape[0], self.num_assets, self.num_classes)
