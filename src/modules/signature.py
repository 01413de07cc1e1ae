"""What a model family exports: its inference path as a small ``nn.Module`` with a signature.

Every export format (TorchScript, ``torch.export``, ONNX) holds the family's inference
wrapper; :class:`Signature` names its inputs and outputs with per-sample shapes and dtypes,
so the exporter, the verifier and the light inference API need no knowledge of the family.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

BUNDLE_KINDS = ("forecaster", "agent")  # what the inference API loads: Forecaster / Policy


@dataclass(frozen=True)
class Signature:
    """Names and per-sample shapes (without the batch dim) of a wrapper's inputs and outputs."""

    inputs: dict[str, tuple[int, ...]]
    outputs: dict[str, tuple[int, ...]]
    input_dtypes: dict[str, str]
    output_dtypes: dict[str, str]

    def example(self, batch: int = 2) -> tuple[torch.Tensor, ...]:
        """Example inputs (zeros) with batch size ``batch``, for tracing and export."""
        import torch

        return tuple(torch.zeros(batch, *shape) for shape in self.inputs.values())

    def describe(self) -> dict:
        """JSON-ready: each name with its shape (``"B"`` for the batch dim) and dtype."""
        return {
            "inputs": [
                {"name": k, "shape": ["B", *v], "dtype": self.input_dtypes[k]}
                for k, v in self.inputs.items()
            ],
            "outputs": [
                {"name": k, "shape": ["B", *v], "dtype": self.output_dtypes[k]}
                for k, v in self.outputs.items()
            ],
        }


def float_signature(
    inputs: dict[str, tuple[int, ...]], outputs: dict[str, tuple[int, ...]], ints: tuple = ()
) -> Signature:
    """A signature whose inputs are float32 and whose outputs are float32 but for ``ints``
    (int64, e.g. a chosen action)."""
    return Signature(
        inputs=dict(inputs),
        outputs=dict(outputs),
        input_dtypes=dict.fromkeys(inputs, "float32"),
        output_dtypes={k: "int64" if k in ints else "float32" for k in outputs},
    )


@dataclass
class Inference:
    """A trained module's inference path, ready to export.

    ``wrapper``: a CPU copy of the trained network(s) behind a ``forward`` of the signature's
    inputs and outputs. ``bundle``: the kind of bundle the inference API loads (``forecaster`` ->
    ``Forecaster.load``, ``agent`` -> ``Policy.load``). ``metadata``: the family's own entries
    of ``metadata.json`` (window, observation names, action map, ...), JSON-ready."""

    wrapper: nn.Module
    signature: Signature
    bundle: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.bundle not in BUNDLE_KINDS:
            raise ValueError(f"Inference.bundle is {self.bundle!r}; use one of {BUNDLE_KINDS}.")
