"""Verification at export: every written format must compute what the eager model computes on
the test split's inputs.

Forecasters: up to ``max_samples`` test windows, evenly spaced. Agents: the observations (and,
for recurrent policies, the states) met by a deterministic greedy rollout of the eager policy
over the test split (the first ``max_samples`` steps).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from datamodules.errors import UserInputError
from datamodules.pipeline import MarketData
from datamodules.windows import WindowDataModule
from experiments.export_formats import Runner
from experiments.export_wrappers import Signature


class ExportMismatchError(UserInputError):
    """An exported format does not reproduce the eager model."""


def forecaster_inputs(
    dm: WindowDataModule, sig: Signature, max_samples: int
) -> tuple[np.ndarray, ...]:
    """Test windows ``(N, L, F_in)`` (and ages ``(N, L)`` if the signature takes them)."""
    dataset = dm.dataset("test")
    n = len(dataset)
    picks = np.unique(np.linspace(0, n - 1, min(n, max_samples)).round().astype(int))
    items = [dataset[int(i)] for i in picks]
    window = torch.stack([it["x"] for it in items]).numpy().astype(np.float32)
    if "age" not in sig.inputs:
        return (window,)
    return window, torch.stack([it["age"] for it in items]).numpy().astype(np.float32)


def agent_inputs(
    wrapper: nn.Module,
    sig: Signature,
    data: MarketData,
    env: Mapping,
    max_samples: int,
) -> tuple[np.ndarray, ...]:
    """Observations ``(N, D)`` (and states ``(N, S, H)`` before each step, for recurrent
    policies) of a greedy rollout of ``wrapper`` over the test split."""
    from envs.evaluation import evaluate_policy

    recurrent = "state" in sig.inputs
    seen_obs: list[torch.Tensor] = []
    seen_state: list[torch.Tensor] = []
    memory: dict[str, torch.Tensor] = {}

    def act(obs: torch.Tensor) -> torch.Tensor:
        obs = obs.float()
        if len(seen_obs) < max_samples:
            seen_obs.append(obs.clone())
        if not recurrent:
            return wrapper(obs)[0]
        state = memory.get("state")
        if state is None:
            state = torch.zeros(obs.shape[0], *sig.inputs["state"])
        if len(seen_state) < max_samples:
            seen_state.append(state.clone())
        action, _, memory["state"] = wrapper(obs, state)
        return action

    with torch.no_grad():
        evaluate_policy(act, data.market, data.split.test, env)
    obs = torch.cat(seen_obs).numpy().astype(np.float32)
    if not recurrent:
        return (obs,)
    return obs, torch.cat(seen_state).numpy().astype(np.float32)


def compare(
    fmt: str,
    sig: Signature,
    eager: tuple[np.ndarray, ...],
    got: tuple[np.ndarray, ...],
    tolerance: float,
) -> float:
    """Largest ``|got - eager| / max(1, |eager|)`` over the float outputs; raise
    :class:`ExportMismatchError` naming ``fmt`` if it exceeds ``tolerance`` or an integer
    output (the action) differs anywhere."""
    worst = 0.0
    for name, ref, out in zip(sig.outputs, eager, got, strict=True):
        out = np.asarray(out)
        if out.shape != ref.shape:
            raise ExportMismatchError(
                f"Export check failed: the {fmt} model's output '{name}' has shape {out.shape}, "
                f"the eager model's {ref.shape}. The export is not usable; report it with the "
                "run folder."
            )
        if sig.output_dtypes[name] == "int64":
            bad = int((out != ref).sum())
            if bad:
                raise ExportMismatchError(
                    f"Export check failed: the {fmt} model chose a different action than the "
                    f"eager model on {bad} of {len(ref)} test-split inputs (output '{name}'). "
                    "The export is not usable; report it with the run folder."
                )
            continue
        diff = float(np.max(np.abs(out - ref) / np.maximum(1.0, np.abs(ref)), initial=0.0))
        worst = max(worst, diff)
        if not diff <= tolerance:
            raise ExportMismatchError(
                f"Export check failed: the {fmt} model's output '{name}' differs from the eager "
                f"model by up to {diff:.3g} on the test split (allowed {tolerance:g}, "
                "export.tolerance). The export is not usable; report it with the run folder."
            )
    return worst


def verify(
    runners: dict[str, Runner],
    eager: Runner,
    sig: Signature,
    inputs: tuple[np.ndarray, ...],
    tolerance: float,
    chunk: int = 512,
) -> dict[str, float]:
    """Run eager and each format on ``inputs`` in chunks (and on one sample alone, to check
    the dynamic batch dim); return format -> largest scaled difference."""
    n = len(inputs[0])
    parts = [slice(i, min(n, i + chunk)) for i in range(0, n, chunk)] + [slice(0, 1)]
    worst = dict.fromkeys(runners, 0.0)
    for part in parts:
        batch = tuple(a[part] for a in inputs)
        ref = eager(batch)
        for fmt, run in runners.items():
            worst[fmt] = max(worst[fmt], compare(fmt, sig, ref, run(batch), tolerance))
    return worst
