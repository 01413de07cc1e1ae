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
KEEP_FREED_MAX_MIB = 2047  # hardware.keep_freed_mib: glibc takes the threshold in bytes, as a C int


@dataclass(frozen=True)
class SLASettings:
    """``export.sla.*``: the deployment gate, measured at every export (``measure``) and
    written to metadata.json with pass/fail per line; an export that misses a threshold fails
    only with ``enforce``. Each threshold is off when null: ``max_latency_us`` (p99 of one
    input through Policy.load / Forecaster.load, microseconds, over ``latency_calls`` calls),
    ``max_load_s`` (import, load and first call in a fresh process, seconds),
    ``max_memory_mb`` (peak resident memory of that process, MB), ``max_drawdown`` (the test
    split's maximum drawdown, a positive fraction: 0.2 = 20%), ``min_sharpe`` (the test
    Sharpe ratio), ``min_sharpe_low`` (the lower end of its bootstrap interval),
    ``min_steps_per_s`` (env steps per second while collecting, median over iterations;
    agents only)."""

    enforce: bool = False
    measure: bool = True
    max_latency_us: float | None = None
    max_load_s: float | None = None
    max_memory_mb: float | None = None
    max_drawdown: float | None = None
    min_sharpe: float | None = None
    min_sharpe_low: float | None = None
    min_steps_per_s: float | None = None
    latency_calls: int = 2000

    def __post_init__(self) -> None:
        for name in ("max_latency_us", "max_load_s", "max_memory_mb", "min_steps_per_s"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not value > 0):
                raise ConfigError(
                    f"export.sla.{name} is {value}; use a number > 0, or null for no threshold."
                )
        d = self.max_drawdown
        if d is not None and (isinstance(d, bool) or not 0 < d <= 1):
            raise ConfigError(
                f"export.sla.max_drawdown is {d}; use the largest test drawdown allowed as a "
                "positive fraction in (0, 1] (0.2 = 20%), or null for no threshold."
            )
        if isinstance(self.latency_calls, bool) or self.latency_calls < 100:
            raise ConfigError(
                f"export.sla.latency_calls is {self.latency_calls}; use >= 100 calls (a p99 "
                "needs them)."
            )
        if self.enforce and not self.measure:
            raise ConfigError(
                "export.sla.enforce is true but export.sla.measure is false: a gate that is "
                "not measured cannot pass. Set export.sla.measure=true."
            )


@dataclass(frozen=True)
class ExportSettings:
    """``export.*``: at the end of a run write ``export/`` (``enabled``), ONNX by the
    ``onnx_exporter`` (dynamo | torchscript) at ``onnx_opset``, each format verified on up to
    ``max_verify_samples`` test inputs to within ``tolerance`` (scaled absolute difference);
    ``sla``: the deployment gate (:class:`SLASettings`)."""

    enabled: bool = True
    onnx_exporter: Literal["dynamo", "torchscript"] = "dynamo"
    onnx_opset: int = 18
    max_verify_samples: int = 2000
    tolerance: float = 1e-5
    sla: SLASettings = field(default_factory=SLASettings)

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
    torch's default); ``keep_freed_mib``: MiB of freed memory the process keeps for reuse
    (glibc's malloc trim threshold, :mod:`experiments.runtime.allocator`; null = glibc's
    defaults)."""

    accelerator: str = "cpu"
    devices: int | str | list[int] = 1
    num_nodes: int = 1
    strategy: str | Mapping = "auto"
    precision: str | int = "32-true"
    deterministic: bool | Literal["warn"] = False
    num_threads: int | None = None
    keep_freed_mib: int | None = 512

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
        keep = self.keep_freed_mib
        if keep is not None and not 1 <= keep <= KEEP_FREED_MAX_MIB:
            raise ConfigError(
                f"hardware.keep_freed_mib is {keep}; use MiB from 1 to {KEEP_FREED_MAX_MIB} "
                "(glibc takes the threshold as a C int), or null for glibc's defaults."
            )


@dataclass(frozen=True)
class StatisticsSettings:
    """``statistics.*``: how a run's numbers get their uncertainty. ``reps`` stationary-bootstrap
    resamples per split (intervals, the verdict, the paired Sharpe difference); ``level``: the
    confidence of the two-sided intervals and of the one-sided verdict (0.95 = 95 %);
    ``seed``: the resamples' RNG seed (null = the run's ``seed``)."""

    reps: int = 1000
    level: float = 0.95
    seed: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.reps, bool) or self.reps < 100:
            raise ConfigError(
                f"statistics.reps is {self.reps}; use >= 100 resamples (1000 gives intervals "
                "stable to about 0.05 Sharpe)."
            )
        if isinstance(self.level, bool) or not 0.5 <= self.level < 1:
            raise ConfigError(
                f"statistics.level is {self.level}; use a confidence level in [0.5, 1), e.g. 0.95."
            )


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
    the folder of a run to continue; ``statistics``: the bootstrap of the reported numbers.
    ``data``, ``env``, ``model``, ``logger`` and ``callbacks`` are plug-ins checked against
    their ``_target_``."""

    data: Callable
    env: Callable
    model: Callable | None = None
    curriculum: CurriculumSettings = field(default_factory=CurriculumSettings)
    hardware: HardwareSettings = field(default_factory=HardwareSettings)
    logger: Callable | None = None
    callbacks: Mapping[str, Callable | None] | None = None
    paths: PathsSettings = field(default_factory=PathsSettings)
    export: ExportSettings = field(default_factory=ExportSettings)
    statistics: StatisticsSettings = field(default_factory=StatisticsSettings)
    task_name: str = "train"
    seed: int = 42
    quiet: bool = False
    print_config: bool = True
    tags: list[str] = field(default_factory=list)
    optimized_metric: str | None = "val/sharpe"
    resume: str | None = None
