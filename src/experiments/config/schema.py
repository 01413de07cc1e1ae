"""The run's own settings (everything in the config that is not a plug-in) as typed dataclasses.

The config check (:mod:`experiments.config.check`) reads these like any ``_target_``: field
names and annotations from source, then constructs them here (a light module) so their
``__post_init__`` checks run. The plug-in groups (``data``, ``env``, ``model``, ``logger``,
``callbacks``) are checked against their own ``_target_``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from datamodules.errors import ConfigError

PRECISIONS = (
    "64-true",
    "64",
    "32-true",
    "32",
    "16-mixed",
    "16",
    "bf16-mixed",
    "bf16",
    "16-true",
    "bf16-true",
    "transformer-engine",
    "transformer-engine-float16",
)
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "tpu", "auto")


@dataclass(frozen=True)
class ExportSettings:
    """``export.*``: at the end of a run write ``export/`` (``enabled``), ONNX by the
    ``onnx_exporter`` (dynamo | torchscript) at ``onnx_opset``, each format verified on up to
    ``max_verify_samples`` test inputs to within ``tolerance`` (scaled absolute difference)."""

    enabled: bool = True
    onnx_exporter: Literal["dynamo", "torchscript"] = "dynamo"
    onnx_opset: int = 18
    max_verify_samples: int = 2000
    tolerance: float = 1e-5

    def __post_init__(self) -> None:
        if not 7 <= self.onnx_opset <= 30:
            raise ConfigError(f"export.onnx_opset is {self.onnx_opset}; use an opset in 7..30.")
        if self.max_verify_samples < 1:
            raise ConfigError(
                f"export.max_verify_samples is {self.max_verify_samples}; use >= 1 inputs."
            )
        if not self.tolerance > 0:
            raise ConfigError(f"export.tolerance is {self.tolerance}; use a number > 0.")


@dataclass(frozen=True)
class HardwareSettings:
    """``hardware.*``: Lightning's ``accelerator``, ``devices`` (a count, -1 / auto, or GPU
    indices), ``num_nodes`` (machines), ``strategy`` (a name or a ``_target_`` config),
    ``precision`` and ``deterministic``; ``num_threads``: torch intra-op threads (null =
    torch's default)."""

    accelerator: str = "cpu"
    devices: int | str | list[int] = 1
    num_nodes: int = 1
    strategy: str | Mapping = "auto"
    precision: str | int = "32-true"
    deterministic: bool | Literal["warn"] = False
    num_threads: int | None = None

    def __post_init__(self) -> None:
        if self.accelerator not in ACCELERATORS:
            raise ConfigError(
                f"hardware.accelerator is '{self.accelerator}'; choose one of "
                f"{', '.join(ACCELERATORS)}."
            )
        if self.num_nodes < 1:
            raise ConfigError(f"hardware.num_nodes is {self.num_nodes}; use >= 1 machines.")
        if str(self.precision) not in PRECISIONS:
            raise ConfigError(
                f"hardware.precision is '{self.precision}'; choose one of {', '.join(PRECISIONS)}."
            )
        if self.num_threads is not None and self.num_threads < 1:
            raise ConfigError(f"hardware.num_threads is {self.num_threads}; use >= 1 or null.")


@dataclass(frozen=True)
class PathsSettings:
    """``paths.*``: ``output_root`` holds ``runs/`` and ``multirun/``; ``cache_dir`` the
    feature cache (null = off). Relative paths are taken from where the command runs."""

    output_root: str = "outputs"
    cache_dir: str | None = None


@dataclass(frozen=True)
class CurriculumSettings:
    """``curriculum.*``: ``name``, ``scale`` (multiplies every phase length) and ``phases``
    (each a name, one length, Hydra overrides, and optionally ``reset_optimizer``; the
    check parses them with the model family's length units)."""

    name: str = "none"
    scale: float = 1.0
    phases: list[Mapping] = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.scale, bool) or not self.scale > 0:
            raise ConfigError(f"curriculum.scale is {self.scale}; use a number > 0.")


@dataclass(frozen=True)
class RunSettings:
    """The whole config. ``task_name`` names the Hydra job; ``seed`` seeds python, numpy,
    torch and the synthetic market; ``quiet``: warnings only, no progress bars;
    ``print_config``: print the resolved config at start; ``tags``: extra W&B tags;
    ``optimized_metric``: the logged metric returned to sweepers; ``resume``: null | auto |
    the folder of a run to continue. ``data``, ``env``, ``model``, ``logger`` and ``callbacks``
    are plug-ins checked against their ``_target_``."""

    data: Callable
    env: Callable
    model: Callable | None = None
    curriculum: CurriculumSettings = field(default_factory=CurriculumSettings)
    hardware: HardwareSettings = field(default_factory=HardwareSettings)
    logger: Callable | None = None
    callbacks: Mapping[str, Callable | None] | None = None
    paths: PathsSettings = field(default_factory=PathsSettings)
    export: ExportSettings = field(default_factory=ExportSettings)
    task_name: str = "train"
    seed: int = 42
    quiet: bool = False
    print_config: bool = True
    tags: list[str] = field(default_factory=list)
    optimized_metric: str | None = "val/sharpe"
    resume: str | None = None
