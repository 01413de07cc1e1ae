"""Behaviour of the forecaster networks: shapes, attention maps, time encoding, learning."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from modules.forecasters.lstm import LSTMForecaster
from modules.forecasters.transformer import TransformerForecaster

B, L, F, G = 4, 12, 3, 2
BAR_MINUTES = 5.0


def make_inputs(num_assets: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A window ``x (B, L, A*F+G)`` and its ``age (B, L)`` for evenly spaced 5-minute bars."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, L, num_assets * F + G, generator=gen)
    age = (torch.arange(L - 1, -1, -1, dtype=torch.float32) * BAR_MINUTES).expand(B, L).clone()
    return x, age


def with_overnight_gap(age: Tensor, row: int, gap_minutes: float = 17.5 * 60) -> Tensor:
    """The same window with an overnight gap between ``row - 1`` and ``row``."""
    out = age.clone()
    out[:, :row] += gap_minutes
    return out


def build(kind: str, input_size: int, num_assets: int, num_classes: int) -> nn.Module:
    if kind == "lstm":
        return LSTMForecaster(input_size, num_assets, num_classes, hidden_size=16)
    if kind == "lstm_attn":
        return LSTMForecaster(
            input_size, num_assets, num_classes, hidden_size=16, attention_pooling=True
        )
    if kind == "transformer":
        return TransformerForecaster(
            input_size, num_assets, num_classes, d_model=16, num_heads=4, dim_feedforward=32
        )
    raise ValueError(kind)


KINDS = ["lstm", "lstm_attn", "transformer"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num_assets", [1, 2])
@pytest.mark.parametrize("num_classes", [2, 3])
def test_output_shape_is_batch_assets_classes(kind: str, num_assets: int, num_classes: int):
    torch.manual_seed(0)
    x, age = make_inputs(num_assets)
    net = build(kind, x.shape[-1], num_assets, num_classes)
    assert net(x, age).shape == (B, num_assets, num_classes)
    assert net(x).shape == (B, num_assets, num_classes)  # age is optional


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_gives_identical_networks_and_outputs(kind: str):
    x, age = make_inputs(2)
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        net = build(kind, x.shape[-1], 2, 3)
        torch.manual_seed(7)  # dropout stream
        outs.append(net.train()(x, age))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


@pytest.mark.parametrize("num_layers", [1, 3])
def test_transformer_attention_maps_are_batch_layers_L_L_with_rows_summing_to_one(
    num_layers: int,
):
    torch.manual_seed(0)
    x, age = make_inputs(2)
    net = TransformerForecaster(x.shape[-1], 2, 3, d_model=16, num_heads=4, num_layers=num_layers)
    net.eval()
    logits, attn = net(x, age, return_attention=True)
    assert logits.shape == (B, 2, 3)
    assert attn.shape == (B, num_layers, L, L)
    assert bool((attn >= 0).all())
    torch.testing.assert_close(attn.sum(-1), torch.ones(B, num_layers, L))
    # Asking for the maps does not change the logits.
    torch.testing.assert_close(net(x, age), logits)


def test_lstm_attention_pooling_weights_are_a_distribution_over_time():
    torch.manual_seed(0)
    x, _ = make_inputs(1)
    net = LSTMForecaster(x.shape[-1], 1, 2, hidden_size=16, attention_pooling=True)
    h, _ = net.lstm(x)
    w = net.pooling_weights(h)
    assert w.shape == (B, L)
    torch.testing.assert_close(w.sum(-1), torch.ones(B))


def test_overnight_gap_in_age_changes_transformer_output():
    torch.manual_seed(0)
    x, age = make_inputs(2)
    net = build("transformer", x.shape[-1], 2, 3).eval()
    gapped = with_overnight_gap(age, row=L // 2)
    assert not torch.allclose(net(x, age), net(x, gapped), atol=1e-5)


@pytest.mark.parametrize("kind", ["lstm", "lstm_attn"])
def test_age_is_ignored_by_lstm(kind: str):
    torch.manual_seed(0)
    x, age = make_inputs(2)
    net = build(kind, x.shape[-1], 2, 3).eval()
    gapped = with_overnight_gap(age, row=L // 2)
    torch.testing.assert_close(net(x, age), net(x, gapped), rtol=0, atol=0)
    torch.testing.assert_close(net(x, age), net(x), rtol=0, atol=0)


def test_transformer_without_age_uses_row_index_times_one_minute():
    torch.manual_seed(0)
    x, _ = make_inputs(2)
    net = build("transformer", x.shape[-1], 2, 3).eval()
    one_minute_rows = torch.arange(L - 1, -1, -1, dtype=torch.float32).expand(B, L)
    torch.testing.assert_close(net(x), net(x, one_minute_rows))


@pytest.mark.parametrize("kind", KINDS)
def test_changing_oldest_row_changes_output(kind: str):
    torch.manual_seed(0)
    x, age = make_inputs(2)
    net = build(kind, x.shape[-1], 2, 3).eval()
    x2 = x.clone()
    x2[:, 0] += 1.0
    assert not torch.allclose(net(x, age), net(x2, age), atol=1e-6)


def test_d_model_not_divisible_by_num_heads_names_the_config_keys():
    with pytest.raises(ValueError, match=r"model\.network\.d_model.*model\.network\.num_heads"):
        TransformerForecaster(5, 1, 2, d_model=10, num_heads=4)


def _fit_toy_task(net: nn.Module, steps: int, lr: float) -> float:
    """Train on 'class of asset a = sign of the window mean of its first feature'.

    Returns the train accuracy in eval mode. The label is a deterministic function of the
    whole window, so a net that reads the window and routes each asset's features to its
    own logits can fit it.
    """
    num_assets, n, length = 2, 256, 16
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, length, num_assets * F + G, generator=gen)
    age = (torch.arange(length - 1, -1, -1, dtype=torch.float32) * BAR_MINUTES).expand(n, length)
    signal = x[:, :, 0 : num_assets * F : F].mean(dim=1)  # (n, A)
    y = (signal > 0).long()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x, age).reshape(-1, 2), y.reshape(-1))
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        pred = net(x, age).argmax(-1)
    return float((pred == y).float().mean())


@pytest.mark.parametrize(
    "kind,steps,lr",
    [("lstm", 200, 2e-2), ("lstm_attn", 200, 2e-2), ("transformer", 150, 5e-3)],
)
def test_fits_toy_sign_of_window_mean_task(kind: str, steps: int, lr: float):
    # Small nets, full-batch Adam: about 1-3 s each on 2 CPU cores (100% accuracy by ~80 steps).
    torch.manual_seed(0)
    input_size = 2 * F + G
    if kind == "transformer":
        net: nn.Module = TransformerForecaster(
            input_size, 2, 2, d_model=16, num_heads=4, dim_feedforward=32, dropout=0.0
        )
    else:
        net = LSTMForecaster(
            input_size, 2, 2, hidden_size=16, dropout=0.0, attention_pooling=kind == "lstm_attn"
        )
    acc = _fit_toy_task(net, steps=steps, lr=lr)
    assert acc > 0.9, f"{kind}: train accuracy {acc:.3f}"


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("kind", KINDS)
def test_networks_script_and_export_to_the_same_outputs(kind: str):
    torch.manual_seed(0)
    x, age = make_inputs(2)
    net = build(kind, x.shape[-1], 2, 3).eval()
    expected = net(x, age)
    torch.testing.assert_close(torch.jit.script(net)(x, age), expected)
    exported = torch.export.export(net, (x, age)).module()
    torch.testing.assert_close(exported(x, age), expected)
