"""The model-family protocol: what the run needs from a forecaster or an RL agent.

A model family is a ``LightningModule`` class named by ``_target_`` in ``conf/model/NAME.yaml``
with ``_partial_: true``: Hydra builds a ``functools.partial`` of the class holding the config's
values, and the run calls the class's :meth:`ModelFamily.build` with that partial and the
run's :class:`RunInputs` (market data, env factory, frictions, hardware, seed, folder). From
then on the run only uses the members below, so a new family (an A2C agent, a TCN
forecaster) is one module implementing them and one config file; nothing in
``experiments/`` names a family.

:class:`modules.forecasters.module.ForecastModule` and :class:`modules.agents.base.AgentModule`
implement it; agents such as PPO and DQN inherit the agent half and add their networks and
loss.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from datamodules.errors import UserInputError

if TYPE_CHECKING:
    import functools

    import numpy as np
    import pytorch_lightning as pl

    from datamodules.pipeline import MarketData
    from envs.backtest import BacktestResult
    from envs.factory import EnvFactory
    from envs.frictions import Frictions
    from modules.carry import Layout
    from modules.hardware import Hardware
    from modules.signature import Inference


class TrainingDiverged(UserInputError):
    """A loss or a parameter became NaN or infinite; the run stops before saving it."""


@dataclass(frozen=True)
class RunInputs:
    """What the run hands a family to build its module.

    ``data``: the market and its split; ``env``: builds the configured env over a span of
    that market (agents train and are evaluated on it); ``frictions`` and ``capital``
    (currency) price every backtest, as the env's ``costs`` and ``capital`` do; ``hardware``:
    resolved once; ``seed``: the run's seed; ``out``: the run folder (plots go under it)."""

    data: MarketData
    env: EnvFactory
    frictions: Frictions
    capital: float
    hardware: Hardware
    seed: int
    out: Path


@dataclass(frozen=True)
class Checkpointing:
    """How a family's checkpoints are kept. ``monitor`` (a logged metric) and ``mode`` (min |
    max) pick ``best-<name>.ckpt`` (``filename`` is Lightning's pattern, e.g.
    ``best-iter{epoch:04d}``), checked every ``every_n_epochs`` epochs; ``last_every``: write
    ``last.ckpt`` (the resume point, atomically) every that many epochs and after the last."""

    monitor: str
    mode: str
    filename: str
    every_n_epochs: int = 1
    last_every: int = 1

    def __post_init__(self) -> None:
        if self.mode not in ("min", "max"):
            raise ValueError(f"Checkpointing.mode is {self.mode!r}; use min or max.")
        if not self.filename.startswith("best-"):
            raise ValueError("best checkpoints are named best-*.ckpt (the export looks for them)")


@dataclass(frozen=True)
class StrategyPlan:
    """The Trainer's ``strategy``, ``devices`` and ``num_nodes`` for a family on a hardware."""

    strategy: Any
    devices: Any
    num_nodes: int = 1


@runtime_checkable
class ModelFamily(Protocol):
    """The members of a family's LightningModule (class and instance) that the run uses."""

    # ----------------------------------------------------------------- class level
    #: Training continues exactly from the module's own checkpoints (``resume=``); families
    #: without it are refused ``resume=`` (a curriculum restarts their phase instead).
    resumable: ClassVar[bool]
    #: Curriculum phase length units -> the ``model.`` key each sets (e.g. ``frames`` ->
    #: ``collector.total_frames``); a phase names exactly one unit.
    lengths: ClassVar[Mapping[str, str]]

    @classmethod
    def length_overrides(cls, unit: str, length: int) -> list[str]:
        """Hydra overrides (``model.`` keys) that make a run last ``length`` ``unit``."""
        ...

    @classmethod
    def check(cls, factory: functools.partial, hardware: Hardware, env: functools.partial) -> None:
        """Refuse a hardware or env setting this family cannot train with, before any data is
        built (one paragraph naming the keys). ``env`` is the env plug-in's partial."""
        ...

    @classmethod
    def build(cls, factory: functools.partial, run: RunInputs) -> ModelFamily:
        """The untrained module: ``factory`` (the config's partial) called with what it needs
        from ``run`` (an env over the training split, a data module, ...)."""
        ...

    # ----------------------------------------------------------------- training
    name: str  # the config's ``model.name``: run folders, W&B names and tags

    def datamodule(self) -> pl.LightningDataModule | None:
        """The data module ``Trainer.fit`` takes, or None (the module serves its own data)."""
        ...

    def checkpointing(self) -> Checkpointing: ...

    def trainer_settings(self) -> dict[str, Any]:
        """Trainer arguments of this family (epochs, validation interval, clipping, ...)."""
        ...

    def callbacks(self) -> list[pl.Callback]:
        """The family's own callbacks (early stopping, ...); the run adds checkpointing, the
        progress bar, the interrupt handler and the configured ``callbacks`` group."""
        ...

    def progress_bar(self) -> pl.Callback:
        """The progress bar shown unless ``quiet=true``."""
        ...

    def strategy(self, hardware: Hardware) -> StrategyPlan: ...

    def describe(self) -> str:
        """One log line saying what is about to train."""
        ...

    def progress(self) -> str:
        """Where training stands, for the interrupt message (``iteration 3 (1,536 frames)``)."""
        ...

    # ----------------------------------------------------------------- results
    #: After ``Trainer.test``: split -> {"strategy": result, baseline name: result, ...}, every
    #: result priced by the shared simulator (:mod:`envs.backtest`).
    reports: dict[str, dict[str, BacktestResult]]
    #: Risk-rule triggers over the test split (rule name -> count); empty if none apply.
    risk_totals: dict[str, int]

    def layout(self) -> Layout:
        """Names of the network's inputs and meanings of its outputs (curriculum carry)."""
        ...

    # ----------------------------------------------------------------- export
    def inference(self) -> Inference:
        """The trained inference path (a CPU copy) with its signature and metadata."""
        ...

    def verification_inputs(self, inference: Inference, max_samples: int) -> tuple[np.ndarray, ...]:
        """Test-split inputs on which every exported format must match the eager wrapper."""
        ...


#: The checkpoint key where resumable families record how many processes trained them.
WORLD_SIZE_KEY = "agent_world_size"


def saved_world_size(checkpoint: Mapping) -> int:
    """How many processes trained the module that saved ``checkpoint`` (1 if unrecorded)."""
    if WORLD_SIZE_KEY in checkpoint:
        return int(checkpoint[WORLD_SIZE_KEY])
    state = checkpoint.get("agent_state")
    return len(state) if isinstance(state, list) else 1


def world_size_mismatch(saved: int, now: int) -> str:
    """The one-paragraph refusal to resume a checkpoint of ``saved`` processes with ``now``."""
    return (
        f"This checkpoint was saved by a run trained by {saved} process(es) and this run "
        f"would train it with {now}. The checkpoint holds each process's own training state "
        "(an agent's envs, collector, RNG states and replay buffer), so it resumes only with "
        "the same number of processes: resume with the hardware it was saved with "
        f"(hardware.devices x hardware.num_nodes = {saved}: hardware=cpu or gpu for 1, "
        "hardware=ddp_cpu for 2), or start a new run without resume=."
    )


def family_of(factory: Any) -> type:
    """The family class behind a built model config (the partial's class), checked against
    :class:`ModelFamily`; a clear error names what is missing."""
    cls = getattr(factory, "func", factory)
    if not isinstance(cls, type):
        raise UserInputError(
            f"model._target_ builds {cls!r}, not a class: name a LightningModule class that "
            "implements modules.family.ModelFamily, with _partial_: true."
        )
    missing = [name for name in _REQUIRED if not hasattr(cls, name)]
    if missing:
        raise UserInputError(
            f"model._target_ {cls.__module__}.{cls.__qualname__} is not a model family: it "
            f"lacks {', '.join(missing)} (see modules/family.py::ModelFamily; subclass "
            "modules.agents.base.AgentModule or modules.forecasters.module.ForecastModule to "
            "inherit them)."
        )
    return cls


_REQUIRED = (
    "resumable",
    "lengths",
    "length_overrides",
    "check",
    "build",
    "datamodule",
    "checkpointing",
    "trainer_settings",
    "callbacks",
    "progress_bar",
    "strategy",
    "describe",
    "progress",
    "layout",
    "inference",
    "verification_inputs",
)
