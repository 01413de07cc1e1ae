"""Tests of modules.policies: the config of the agents' networks, MLP/GRU/LSTM trunks (one step
and whole sequences, state restarts), and the policy, value and Q heads."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

from datamodules.errors import ConfigError
from modules.agents.config import NetworkConfig
from modules.agents.nets import InplaceTanh, PolicyNet, QNet, Trunk, ValueNet, encoder

OBS, B, T = 5, 4, 6
RECURRENT = [
    pytest.param("gru", 1, id="gru"),
    pytest.param("gru", 2, id="gru-2layers"),
    pytest.param("lstm", 1, id="lstm"),
    pytest.param("lstm", 2, id="lstm-2layers"),
]


def config(kind: str = "mlp", layers: int = 1, **extra) -> NetworkConfig:
    return NetworkConfig(
        kind=kind, hidden_sizes=(16, 8), recurrent_size=12, recurrent_layers=layers, **extra
    )


def zero_flags(*shape: int) -> torch.Tensor:
    return torch.zeros(*shape, dtype=torch.bool)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ------------------------------------------------------------------ NetworkConfig
@pytest.mark.parametrize(
    "values, key",
    [
        ({"kind": "transformer"}, "model.network.kind"),
        ({"activation": "swish"}, "model.network.activation"),
        ({"hidden_sizes": ()}, "model.network.hidden_sizes"),
        ({"hidden_sizes": (64, 0)}, "model.network.hidden_sizes"),
        ({"dropout": 1.0}, "model.network.dropout"),
        ({"dropout": -0.1}, "model.network.dropout"),
        ({"kind": "gru", "recurrent_size": 0}, "model.network.recurrent_size"),
        ({"kind": "lstm", "recurrent_layers": 0}, "recurrent_layers"),
    ],
)
def test_network_config_errors_name_the_key(values, key) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        NetworkConfig(**values)


def test_recurrent_settings_are_ignored_for_an_mlp() -> None:
    cfg = NetworkConfig(kind="mlp", recurrent_size=0, recurrent_layers=0)
    assert not cfg.recurrent


@pytest.mark.parametrize(
    "kind, layers, shape", [("gru", 1, (1, 12)), ("gru", 3, (3, 12)), ("lstm", 2, (4, 12))]
)
def test_state_shape_is_layers_times_h_and_c(kind, layers, shape) -> None:
    cfg = config(kind, layers)
    assert cfg.recurrent and cfg.state_shape == shape


def test_encoder_adds_layer_norm_and_dropout_when_asked() -> None:
    trunk = Trunk(OBS, config(layer_norm=True, dropout=0.5, activation="relu"))
    kinds = [type(m).__name__ for m in trunk.encoder]
    assert kinds == ["Linear", "LayerNorm", "ReLU", "Dropout"] * 2


# ------------------------------------------------------------------ trunks
# torch's own activations, out of place: what the encoder's in-place ones must equal (ELU's
# in-place form does not: its gradient is computed from the output). Tanh on a CPU is NumPy's
# (tested below); traced, as every export traces it, it is torch's in place.
OUT_OF_PLACE = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "elu": torch.nn.ELU}


@pytest.mark.parametrize("layer_norm", [False, True], ids=["plain", "layer_norm"])
@pytest.mark.parametrize("activation", sorted(OUT_OF_PLACE))
def test_activations_in_place_give_torchs_numbers_bit_for_bit(activation, layer_norm) -> None:
    ours = encoder(OBS, config(activation=activation, layer_norm=layer_norm))
    kind = OUT_OF_PLACE[activation]
    reference = copy.deepcopy(ours)  # the same weights, each activation torch's out of place
    for i, layer in enumerate(reference):
        if isinstance(layer, kind):
            reference[i] = kind()
    assert sum(isinstance(layer, kind) for layer in reference) == 2
    x = torch.randn(257, OBS)
    results = []
    for net in (ours, reference):
        out = _traced(net, x)(x) if activation == "tanh" else net(x)
        (out.square().sum() + out.sum()).backward()
        results.append((out.detach(), [p.grad for p in net.parameters()]))
    (a, grads_a), (b, grads_b) = results
    assert torch.equal(a, b)
    assert all(torch.equal(g, h) for g, h in zip(grads_a, grads_b, strict=True))


def _traced(net: torch.nn.Module, x: torch.Tensor) -> torch.jit.ScriptModule:
    """``net`` traced by TorchScript, as the TorchScript export traces it (the same
    parameters)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace's deprecation notice
        return torch.jit.trace(net, x.clone())


def _ulps(got: torch.Tensor, exact: np.ndarray) -> float:
    """The largest error of float32 ``got`` against ``exact`` (float64), in float32 ulps."""
    ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    return float((np.abs(got.double().numpy() - exact) / ulp).max())


def test_tanh_on_a_cpu_is_numpys_within_one_and_a_half_ulp_of_the_exact_value() -> None:
    x = torch.cat([torch.randn(20_000) * 3, torch.linspace(-12, 12, 4_001), torch.zeros(1)])
    exact = np.tanh(x.double().numpy())
    ours = InplaceTanh()(x.clone())
    assert torch.equal(ours, torch.from_numpy(np.tanh(x.numpy())))
    assert _ulps(ours, exact) <= 1.5
    assert _ulps(torch.tanh(x), exact) <= 1.5  # torch's, for scale


def test_tanh_gradients_are_torchs_tanh_backward_of_the_output() -> None:
    x = torch.randn(64, 7, dtype=torch.float64, requires_grad=True)
    layer = torch.nn.Linear(7, 5).double()
    assert torch.autograd.gradcheck(lambda v: InplaceTanh()(layer(v)), (x,))
    out = InplaceTanh()(layer(x))
    grad = torch.randn_like(out)
    (got,) = torch.autograd.grad(out, layer.weight, grad)
    (through,) = torch.autograd.grad(
        layer(x), layer.weight, torch.ops.aten.tanh_backward(grad, out.detach())
    )
    assert torch.equal(got, through)


def test_tanh_without_gradients_gives_the_same_numbers_in_place() -> None:
    net = encoder(OBS, config())
    x = torch.randn(33, OBS)
    with_grad = net(x)
    with torch.no_grad():
        without = net(x)
    assert torch.equal(with_grad, without) and not without.requires_grad


def test_tanh_without_gradients_still_marks_its_input_as_written() -> None:
    # An input saved for a backward pass and then overwritten must make autograd raise, as
    # torch's in-place tanh_ does.
    x = torch.randn(5, 3, requires_grad=True)
    y = x * 2.0
    z = y * y  # saves y for its backward
    with torch.no_grad():
        InplaceTanh()(y)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        z.sum().backward()


def test_traced_and_exported_tanh_is_torchs_op() -> None:
    net = encoder(OBS, config())
    x = torch.randn(3, OBS)
    traced = _traced(net, x)
    assert "torch.tanh_" in traced.code or any(
        "torch.tanh_" in m.code for m in traced.modules() if hasattr(m, "code")
    )
    exported = torch.export.export(net, (x,))
    targets = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
    assert "aten.tanh_.default" in targets


def test_mlp_trunk_shapes_for_one_step_and_sequences() -> None:
    trunk = Trunk(OBS, config())
    z, state = trunk(torch.randn(B, OBS))
    assert z.shape == (B, 8) and state is None and trunk.out_dim == 8
    z, state = trunk(torch.randn(B, T, OBS))
    assert z.shape == (B, T, 8) and state is None


@pytest.mark.parametrize("kind, layers", RECURRENT)
def test_recurrent_trunk_shapes_for_one_step_and_sequences(kind, layers) -> None:
    cfg = config(kind, layers)
    trunk = Trunk(OBS, cfg)
    assert trunk.out_dim == 12
    out, state = trunk(torch.randn(B, OBS), zero_flags(B, 1), torch.zeros(B, *cfg.state_shape))
    assert out.shape == (B, 12) and state.shape == (B, *cfg.state_shape)
    out, states = trunk(
        torch.randn(B, T, OBS), zero_flags(B, T, 1), torch.zeros(B, T, *cfg.state_shape)
    )
    assert out.shape == (B, T, 12) and states.shape == (B, T, *cfg.state_shape)


def test_recurrent_trunk_needs_its_state_and_flags() -> None:
    trunk = Trunk(OBS, config("gru"))
    with pytest.raises(ValueError, match="is_init"):
        trunk(torch.randn(B, OBS))


@pytest.mark.parametrize("kind, layers", RECURRENT)
def test_sequence_equals_stepping_one_by_one(kind, layers) -> None:
    cfg = config(kind, layers)
    trunk = Trunk(OBS, cfg)
    obs = torch.randn(B, T, OBS)
    is_init = torch.rand(B, T, 1) < 0.3
    state0 = torch.randn(B, *cfg.state_shape)
    start = torch.zeros(B, T, *cfg.state_shape)
    start[:, 0] = state0  # only the state at the first step is read
    seq_out, seq_states = trunk(obs, is_init, start)

    state = state0
    for t in range(T):
        out, state = trunk(obs[:, t], is_init[:, t], state)
        torch.testing.assert_close(seq_out[:, t], out)
        torch.testing.assert_close(seq_states[:, t], state)


@pytest.mark.parametrize("kind, layers", RECURRENT)
def test_state_restarts_at_zeros_where_is_init(kind, layers) -> None:
    cfg = config(kind, layers)
    trunk = Trunk(OBS, cfg)
    obs = torch.randn(B, T, OBS)
    k = 3
    is_init = zero_flags(B, T)
    is_init[:, k] = True
    start = torch.randn(B, T, *cfg.state_shape)  # a carried, non-zero state
    out, states = trunk(obs, is_init, start)

    fresh_out, fresh_states = trunk(
        obs[:, k:], zero_flags(B, T - k), torch.zeros(B, T - k, *cfg.state_shape)
    )
    torch.testing.assert_close(out[:, k:], fresh_out)
    torch.testing.assert_close(states[:, k:], fresh_states)
    # ... while before step k the carried state mattered
    zero_start, _ = trunk(obs, is_init, torch.zeros_like(start))
    assert not torch.allclose(out[:, :k], zero_start[:, :k])


def test_one_step_restarts_only_the_flagged_envs() -> None:
    cfg = config("gru")
    trunk = Trunk(OBS, cfg)
    obs, state = torch.randn(B, OBS), torch.randn(B, *cfg.state_shape)
    flags = torch.tensor([True, False, True, False])
    out, _ = trunk(obs, flags, state)
    zeroed, _ = trunk(obs, zero_flags(B), torch.zeros_like(state))
    carried, _ = trunk(obs, zero_flags(B), state)
    torch.testing.assert_close(out[flags], zeroed[flags])
    torch.testing.assert_close(out[~flags], carried[~flags])


# ------------------------------------------------------------------ heads
@pytest.mark.parametrize("kind", ["mlp", "gru", "lstm"])
def test_first_policy_is_near_uniform(kind) -> None:
    cfg = config(kind)
    net = PolicyNet(OBS, 9, cfg)
    obs = torch.randn(64, OBS) * 3
    if cfg.recurrent:
        logits, _ = net(obs, zero_flags(64), torch.zeros(64, *cfg.state_shape))
    else:
        logits = net(obs)
    probs = logits.softmax(-1)
    assert logits.shape == (64, 9)
    assert (probs - 1 / 9).abs().max() < 0.01
    assert torch.all(net.head.bias == 0)


def test_value_net_outputs_one_value_per_observation() -> None:
    net = ValueNet(OBS, config())
    assert net(torch.randn(B, OBS)).shape == (B, 1)
    assert net(torch.randn(B, T, OBS)).shape == (B, T, 1)


@pytest.mark.parametrize("dueling", [False, True])
def test_qnet_output_is_v_plus_a_minus_mean_a_when_dueling(dueling) -> None:
    net = QNet(OBS, 3, config(dueling=dueling))
    obs = torch.randn(B, OBS)
    q = net(obs)
    z, _ = net.trunk(obs)
    adv = net.advantage(z)
    assert q.shape == (B, 3)
    if not dueling:
        assert net.value is None
        torch.testing.assert_close(q, adv)
        return
    value = net.value(z)
    torch.testing.assert_close(q, value + adv - adv.mean(-1, keepdim=True))
    torch.testing.assert_close(q.mean(-1, keepdim=True), value)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_qnet_refuses_recurrent_kinds(kind) -> None:
    with pytest.raises(ConfigError, match="model/network=mlp") as err:
        QNet(OBS, 3, config(kind))
    assert f"model.network.kind is '{kind}'" in str(err.value)


@pytest.mark.parametrize("kind, layers", RECURRENT)
def test_value_of_next_matches_a_manual_step(kind, layers) -> None:
    cfg = config(kind, layers)
    net = ValueNet(OBS, cfg)
    obs, next_obs = torch.randn(B, T, OBS), torch.randn(B, T, OBS)
    is_init = torch.rand(B, T) < 0.2
    _, after = net(obs, is_init, torch.randn(B, T, *cfg.state_shape))
    got = net.value_of_next(next_obs, after)
    assert got.shape == (B, T, 1)
    for t in range(T):
        # continuing from the state after step t, with no restart
        expected, _ = net(next_obs[:, t], zero_flags(B), after[:, t])
        torch.testing.assert_close(got[:, t], expected)


def test_numpy_tanh_op_is_numpys_tanh_with_torchs_gradient() -> None:
    from modules.agents.nets import numpy_tanh

    x = torch.randn(64, 16, dtype=torch.float64, requires_grad=True)
    assert np.array_equal(numpy_tanh(x).detach().numpy(), np.tanh(x.detach().numpy()))
    assert torch.autograd.gradcheck(numpy_tanh, (x,))


def test_inplace_tanh_in_a_fused_graph_is_the_numpy_op_out_of_place() -> None:
    from torch.fx.experimental.proxy_tensor import make_fx

    import envs.fused as fused

    fused._tracing = True
    try:
        graph = make_fx(InplaceTanh(), tracing_mode="fake")(torch.randn(4, 3))
    finally:
        fused._tracing = False
    targets = {str(n.target) for n in graph.graph.nodes if n.op == "call_function"}
    assert "trading_experiments.numpy_tanh.default" in targets
    assert not any("tanh_" in t for t in targets)
