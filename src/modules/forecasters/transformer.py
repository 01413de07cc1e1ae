"""The Transformer forecaster: a pre-LN encoder over the window with a time-aware positional
encoding (see :mod:`modules.forecasters.nets` for the input contract every forecaster net
shares)."""

from __future__ import annotations

import math
from typing import Annotated

import torch
from torch import Tensor, nn

from datamodules.errors import ConfigError
from modules.forecasters.nets import ForecasterNet


class TimeEncoding(nn.Module):
    """Sinusoidal encoding of real elapsed time, ``age (B, L)`` minutes -> ``(B, L, d_model)``.

    Unlike the usual row-index encoding, an overnight or weekend gap (a jump in ``age``)
    encodes differently from an ordinary one-bar step. Angular frequencies
    ``omega_k = 2 pi / P_k`` use periods ``P_k`` geometrically spaced from
    ``min_period_minutes`` (about one bar) up to ``max_period_minutes`` (a few times the
    forecaster's ``time_scale_minutes``). Feature ``2k`` is ``sin(omega_k * age)``, feature
    ``2k + 1`` is ``cos(omega_k * age)``; with an odd ``d_model`` the last feature is zero.
    """

    def __init__(self, d_model: int, min_period_minutes: float, max_period_minutes: float) -> None:
        super().__init__()
        if not 0.0 < min_period_minutes < max_period_minutes:
            raise ConfigError(
                "time encoding needs 0 < min_period_minutes < max_period_minutes, got "
                f"{min_period_minutes} and {max_period_minutes}"
            )
        self.d_model = int(d_model)
        n_freq = self.d_model // 2
        periods = torch.logspace(
            math.log10(min_period_minutes),
            math.log10(max_period_minutes),
            steps=max(n_freq, 1),
            dtype=torch.float64,
        )[:n_freq]
        # Derived from the constructor arguments, so kept out of the state_dict.
        self.register_buffer("omega", (2.0 * math.pi / periods).float(), persistent=False)

    def forward(self, age: Tensor) -> Tensor:
        """Encoding ``(B, L, d_model)`` of ``age (B, L)`` in minutes."""
        angles = age.unsqueeze(-1).to(self.omega.dtype) * self.omega  # (B, L, d_model // 2)
        enc = torch.stack((torch.sin(angles), torch.cos(angles)), dim=-1).flatten(-2)
        pad = self.d_model - enc.shape[-1]  # 0 or 1, fixed at construction
        return nn.functional.pad(enc, (0, pad))


class _PreNormEncoderLayer(nn.Module):
    """Pre-LayerNorm Transformer encoder layer that can return its head-averaged attention."""

    def __init__(self, d_model: int, num_heads: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        self.drop1 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, dim_feedforward),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(dim_feedforward, d_model),
        )
        self.drop2 = nn.Dropout(dropout)

    def forward(self, h: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """``h (B, L, d_model)`` -> ``(h', attn)``; ``attn`` is ``(B, L, L)`` or ``None``."""
        q = self.norm1(h)
        a, w = self.attn(q, q, q, need_weights=need_weights, average_attn_weights=True)
        h = h + self.drop1(a)
        h = h + self.drop2(self.ff(self.norm2(h)))
        return h, w


class TransformerForecaster(ForecasterNet):
    """Pre-LN Transformer encoder over the window with a time-aware positional encoding.

    Shapes: ``x`` ``(B, L, input_size)``, ``age`` ``(B, L)`` minutes before the decision bar
    -> logits ``(B, num_assets, num_classes)``; with ``return_attention=True`` also the
    attention maps ``(B, num_layers, L, L)`` (averaged over heads; row ``i`` is how query
    position ``i`` distributes its attention over key positions, and sums to 1).

    Pipeline: ``Linear(input_size, d_model)`` + :class:`TimeEncoding` of ``age`` (periods
    from ``min_period_minutes`` to ``4 * time_scale_minutes``) -> ``num_layers`` pre-LN
    encoder layers (multi-head self-attention, GELU feed-forward, dropout, residuals) ->
    final ``LayerNorm`` -> read-out of the last position (the decision bar) ->
    ``Linear(d_model, A * C)``. No causal mask: the whole window is already the past.

    If ``age`` is ``None`` the encoding falls back to the row index times one minute
    (``age = L - 1 - row``), i.e. evenly spaced one-minute bars with no session gaps.

    ``min_period_minutes``: the shortest period of the encoding; None (the default) takes
    ``bar_minutes``, the market's bar length the module passes (1 minute without one).
    """

    uses_age = True
    has_attention = True

    def __init__(
        self,
        input_size: int,
        num_assets: int,
        num_classes: int,
        d_model: Annotated[int, ">= 1"] = 64,
        num_heads: Annotated[int, ">= 1"] = 4,
        num_layers: Annotated[int, ">= 1"] = 2,
        dim_feedforward: Annotated[int, ">= 1"] = 128,
        dropout: Annotated[float, ">= 0", "< 1"] = 0.1,
        time_scale_minutes: Annotated[float, "> 0"] = 1440.0,
        min_period_minutes: Annotated[float, "> 0"] | None = None,
        bar_minutes: float | None = None,
    ) -> None:
        super().__init__(input_size, num_assets, num_classes)
        if min_period_minutes is None:
            min_period_minutes = bar_minutes if bar_minutes is not None else 1.0
        if d_model % num_heads != 0:
            raise ConfigError(
                f"model.network.d_model ({d_model}) must be divisible by "
                f"model.network.num_heads ({num_heads})"
            )
        self.d_model = int(d_model)
        self.num_layers = int(num_layers)
        self.time_scale_minutes = float(time_scale_minutes)
        self.input_proj = nn.Linear(self.input_size, self.d_model)
        self.time_encoding = TimeEncoding(
            self.d_model,
            min_period_minutes=float(min_period_minutes),
            max_period_minutes=4.0 * self.time_scale_minutes,
        )
        self.input_dropout = nn.Dropout(float(dropout))
        self.layers = nn.ModuleList(
            [
                _PreNormEncoderLayer(self.d_model, int(num_heads), int(dim_feedforward), dropout)
                for _ in range(self.num_layers)
            ]
        )
        self.final_norm = nn.LayerNorm(self.d_model)
        self.head = nn.Linear(self.d_model, self.num_assets * self.num_classes)

    @staticmethod
    def default_age(x: Tensor) -> Tensor:
        """Fallback ``age (B, L)``: row index times one minute, last row 0."""
        length = x.shape[1]
        age = torch.arange(length - 1, -1, -1, device=x.device, dtype=x.dtype)
        return age.unsqueeze(0).expand(x.shape[0], length)

    def forward(
        self, x: Tensor, age: Tensor | None = None, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Logits ``(B, A, C)``, or ``(logits, attn (B, num_layers, L, L))`` if requested."""
        if age is None:
            age = self.default_age(x)
        h = self.input_proj(x) + self.time_encoding(age).to(x.dtype)
        h = self.input_dropout(h)
        maps: list[Tensor] = []
        for layer in self.layers:
            h, w = layer(h, need_weights=return_attention)
            if w is not None:
                maps.append(w)
        z = self.final_norm(h[:, -1])  # decision bar
        logits = self.head(z).reshape(x.shape[0], self.num_assets, self.num_classes)
        if return_attention:
            return logits, torch.stack(maps, dim=1)
        return logits

    def attention(self, x: Tensor, age: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(logits, attention maps ``(B, num_layers, L, L)``, averaged over heads)."""
        return self.forward(x, age, return_attention=True)
