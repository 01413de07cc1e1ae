"""Verification at export: every written format must compute what the eager model computes on
the test split's inputs (the family chooses them: :meth:`modules.family.ModelFamily.verification_inputs`;
forecasters take evenly spaced test windows, agents the observations of a greedy rollout).
"""

from __future__ import annotations

import numpy as np

from datamodules.errors import UserInputError
from experiments.export.formats import Runner
from modules.signature import Signature


class ExportMismatchError(UserInputError):
    """An exported format does not reproduce the eager model."""


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
