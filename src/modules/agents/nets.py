"""Networks of the RL agents: an encoder MLP, an optional recurrent core, and a head.

Every network here maps an observation (float32, the env's ``observation``) to action logits,
a state value, or per-action Q-values. Actor and critic each own a whole trunk (encoder and
core), so their separate optimizers never share a parameter.

Recurrent trunks (``kind: gru`` or ``lstm``) keep a state tensor of shape
``(..., layers * k, hidden)`` (k = 1 for GRU, 2 for LSTM: h and c) and restart it at zeros
wherever ``is_init`` is true. They take one step (inputs ``(B, D)``) while collecting, or whole
sequences (``(B, T, D)``, starting from the state stored at the first step) while learning, so
gradients flow through time.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.autograd.graph import increment_version

from datamodules.errors import ConfigError
from envs.fused import tracing
from modules.agents.config import NetworkConfig


class InplaceTanh(nn.Tanh):
    """``nn.Tanh`` computed in place, on the output of the layer before it; on a CPU by
    NumPy's vectorised tanh.

    In the encoder that output is a Linear's or a LayerNorm's, which nothing else reads: their
    backward passes need their inputs, not their outputs. So overwriting it changes no other
    number, and it saves one activation-sized buffer per layer. At PPO's 16,384-row
    minibatches each buffer is 4 MB, more than a core's L2 cache. Autograd's version check
    raises, rather than computing wrong gradients, if the input were saved for a backward
    pass after all.

    On a CPU (float32 or float64, outside tracing, compiling and export) the values come from
    NumPy's ``tanh`` instead of torch's: torch's CPU tanh goes through MKL's vector math
    library, which on this project's AMD machines runs at 2.3 ns an element, against 0.2 ns
    for NumPy's (``bench/train_throughput.py``'s networks spend up to a fifth of a step
    there). Both are within 1.5 ulp of the exact tanh (tested); the gradient is torch's own
    ``tanh_backward`` of the output. Traced, compiled or exported, it is ``torch.tanh``, so
    every export format holds the standard op; traced into an ``envs.fused.FusedFunction``
    (DQN's ``model.optim.compile``) it is the out-of-place :func:`numpy_tanh` op on a CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tracing():  # a fused graph: out of place, so inductor plans the buffer
            if x.is_cpu and x.dtype in (torch.float32, torch.float64):
                return numpy_tanh(x)
            return torch.tanh(x)
        if not _numpy_tanh_applies(x):
            return x.tanh_()
        if torch.is_grad_enabled() and x.requires_grad:
            return _NumpyTanh.apply(x)
        array = x.detach().numpy()
        np.tanh(array, out=array)
        increment_version(x)  # as torch's in-place ops do, so autograd sees the write
        return x


def _numpy_tanh_applies(x: torch.Tensor) -> bool:
    """Whether :class:`InplaceTanh` computes ``x``'s tanh with NumPy: a plain CPU float
    tensor, outside TorchScript tracing and ``torch.compile``/``torch.export`` (the two ways
    an ONNX export traces a model), and not wrapped by ``torch.func``."""
    return (
        x.is_cpu
        and type(x) is torch.Tensor
        and x.dtype in (torch.float32, torch.float64)
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
        and not torch._C._functorch.is_functorch_wrapped_tensor(x)
    )


class _NumpyTanh(torch.autograd.Function):
    """tanh in place by NumPy, with torch's ``tanh_backward`` of the output as the gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().numpy()
        np.tanh(array, out=array)
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (out,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, out)


@torch.library.custom_op("trading_experiments::numpy_tanh", mutates_args=())
def numpy_tanh(x: torch.Tensor) -> torch.Tensor:
    """NumPy's tanh of a CPU float tensor, out of place, as one op a traced graph calls (an
    ``envs.fused.FusedFunction``: inductor's own vectorised tanh takes 40 us for a (512, 64)
    activation here, NumPy's 6 us); its gradient is torch's ``tanh_backward`` of the output."""
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    np.tanh(x.contiguous().numpy(), out=out.numpy())
    return out


@numpy_tanh.register_fake
def _numpy_tanh_fake(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _numpy_tanh_context(ctx, inputs: tuple, output: torch.Tensor) -> None:
    ctx.save_for_backward(output)


def _numpy_tanh_backward(ctx, grad: torch.Tensor) -> torch.Tensor:
    (out,) = ctx.saved_tensors
    return torch.ops.aten.tanh_backward(grad, out)


numpy_tanh.register_autograd(_numpy_tanh_backward, setup_context=_numpy_tanh_context)


# Tanh and ReLU in place: their backward passes read the output, so the numbers are torch's
# own. ELU's in-place backward computes its gradient from the output, which rounds differently
# (tested); it and GELU (no in-place form) stay out of place.
ACTIVATIONS = {
    "tanh": InplaceTanh,
    "relu": lambda: nn.ReLU(inplace=True),
    "elu": nn.ELU,
    "gelu": nn.GELU,
}


def encoder(in_dim: int, cfg: NetworkConfig) -> nn.Sequential:
    """Linear -> (LayerNorm) -> activation -> (Dropout), once per ``hidden_sizes`` entry."""
    layers: list[nn.Module] = []
    width = in_dim
    for size in cfg.hidden_sizes:
        layers.append(nn.Linear(width, int(size)))
        if cfg.layer_norm:
            layers.append(nn.LayerNorm(int(size)))
        layers.append(ACTIVATIONS[cfg.activation]())
        if cfg.dropout > 0:
            layers.append(nn.Dropout(float(cfg.dropout)))
        width = int(size)
    return nn.Sequential(*layers)


class RecurrentCore(nn.Module):
    """A stack of GRU or LSTM cells stepped explicitly, so a state can restart mid-sequence."""

    def __init__(self, in_dim: int, cfg: NetworkConfig) -> None:
        super().__init__()
        self.lstm = cfg.kind == "lstm"
        size = int(cfg.recurrent_size)
        cell = nn.LSTMCell if self.lstm else nn.GRUCell
        self.cells = nn.ModuleList(
            cell(in_dim if i == 0 else size, size) for i in range(int(cfg.recurrent_layers))
        )
        self.out_dim = size

    def step(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: ``x`` (B, D), ``state`` (B, S, H) -> (output (B, H), new state (B, S, H))."""
        new = []
        for i, cell in enumerate(self.cells):
            if self.lstm:
                h, c = cell(x, (state[:, 2 * i], state[:, 2 * i + 1]))
                new += [h, c]
            else:
                h = cell(x, state[:, i])
                new.append(h)
            x = h
        return x, torch.stack(new, dim=1)

    def forward(
        self, x: torch.Tensor, state: torch.Tensor, is_init: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sequences: ``x`` (B, T, D), ``state`` (B, S, H) at the first step, ``is_init`` (B, T)
        -> (outputs (B, T, H), the state after each step (B, T, S, H))."""
        outs, states = [], []
        for t in range(x.shape[1]):
            keep = (~is_init[:, t]).to(state.dtype).view(-1, 1, 1)
            out, state = self.step(x[:, t], state * keep)
            outs.append(out)
            states.append(state)
        return torch.stack(outs, dim=1), torch.stack(states, dim=1)


class Trunk(nn.Module):
    """Encoder MLP, then (for recurrent kinds) the recurrent core; ``out_dim`` features."""

    def __init__(self, obs_dim: int, cfg: NetworkConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder(obs_dim, cfg)
        width = int(cfg.hidden_sizes[-1])
        self.core = RecurrentCore(width, cfg) if cfg.recurrent else None
        self.out_dim = self.core.out_dim if self.core is not None else width

    def forward(
        self,
        obs: torch.Tensor,
        is_init: torch.Tensor | None = None,
        state: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(features, state after each step or None). Recurrent: a 2-D ``obs`` is one step, a
        3-D one a batch of sequences whose state is ``state[:, 0]``."""
        z = self.encoder(obs)
        if self.core is None:
            return z, None
        if state is None or is_init is None:
            raise ValueError("a recurrent trunk needs is_init and its state")
        init = is_init.reshape(obs.shape[:-1])
        if obs.dim() == 2:
            keep = (~init).to(state.dtype).view(-1, 1, 1)
            out, new = self.core.step(z, state * keep)
            return out, new
        return self.core(z, state[:, 0], init)


class PolicyNet(nn.Module):
    """Trunk -> linear head of action logits (the head starts small, so the first policy is
    near uniform)."""

    def __init__(self, obs_dim: int, num_actions: int, cfg: NetworkConfig) -> None:
        super().__init__()
        self.trunk = Trunk(obs_dim, cfg)
        self.head = nn.Linear(self.trunk.out_dim, num_actions)
        nn.init.orthogonal_(self.head.weight, gain=0.01)
        nn.init.zeros_(self.head.bias)

    def forward(self, obs, is_init=None, state=None):
        z, new = self.trunk(obs, is_init, state)
        logits = self.head(z)
        return logits if new is None else (logits, new)


class ValueNet(nn.Module):
    """Trunk -> linear head of the state value (reward units, discounted)."""

    def __init__(self, obs_dim: int, cfg: NetworkConfig) -> None:
        super().__init__()
        self.trunk = Trunk(obs_dim, cfg)
        self.head = nn.Linear(self.trunk.out_dim, 1)
        nn.init.orthogonal_(self.head.weight, gain=1.0)
        nn.init.zeros_(self.head.bias)

    def forward(self, obs, is_init=None, state=None):
        z, new = self.trunk(obs, is_init, state)
        value = self.head(z)
        return value if new is None else (value, new)

    def value_of_next(self, next_obs: torch.Tensor, state_after: torch.Tensor) -> torch.Tensor:
        """Recurrent only: the value of each step's next observation, continuing from the state
        after that step (``next_obs`` (..., D), ``state_after`` (..., S, H))."""
        flat_obs = next_obs.reshape(-1, next_obs.shape[-1])
        flat_state = state_after.reshape(-1, *state_after.shape[-2:])
        z = self.trunk.encoder(flat_obs)
        out, _ = self.trunk.core.step(z, flat_state)
        return self.head(out).reshape(*next_obs.shape[:-1], 1)


class QNet(nn.Module):
    """Trunk (MLP) -> per-action Q-values; ``dueling``: V(s) + A(s, a) - mean_a A(s, a)."""

    def __init__(self, obs_dim: int, num_actions: int, cfg: NetworkConfig) -> None:
        super().__init__()
        if cfg.recurrent:
            raise ConfigError(
                f"model.network.kind is '{cfg.kind}', but DQN here uses an MLP Q-network: its "
                "replay buffer stores single transitions, not sequences. Use model/network=mlp "
                "with +model=dqn, or a recurrent policy with +model=ppo."
            )
        self.trunk = Trunk(obs_dim, cfg)
        self.dueling = bool(cfg.dueling)
        self.advantage = nn.Linear(self.trunk.out_dim, num_actions)
        self.value = nn.Linear(self.trunk.out_dim, 1) if self.dueling else None

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        z, _ = self.trunk(obs)
        adv = self.advantage(z)
        if self.value is None:
            return adv
        return self.value(z) + adv - adv.mean(dim=-1, keepdim=True)
