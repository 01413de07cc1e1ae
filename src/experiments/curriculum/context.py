"""One curriculum phase as seen by the training code: where it writes, what it starts from.

:func:`experiments.curriculum.runner.run_curriculum` builds a :class:`PhaseContext` per phase and hands
it to ``train(cfg, phase=...)``. The trainers then

- write into the phase's own folder (``phases/NN_name/``), log to the phase's own W&B run with
  the global step continuing from the previous phase (``step_offset``);
- start the module from the previous phase's final weights (:meth:`PhaseContext.carry_in`, see
  :mod:`modules.carry` for what happens when the env's shapes changed), and its optimizer from
  the previous optimizer state unless the phase says ``reset_optimizer`` or a shape changed
  (:class:`CarryOptimizerState`);
- save the phase's final weights and optimizer state in ``phase_end.pt``
  (:meth:`PhaseContext.save_end`) before evaluating the best checkpoint, so the next phase
  continues from where this one stopped training, and a resumed curriculum can too.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pytorch_lightning as pl
import torch

from modules.carry import CarryReport, Layout, carry_weights

log = logging.getLogger(__name__)
PHASE_END = "phase_end.pt"


@dataclass
class PhaseContext:
    """Phase ``index`` (0-based) named ``name`` of the curriculum run in ``root``.

    ``overrides``: the Hydra overrides that compose this phase's config (the job's, then the
    phase's). ``step_offset``: the global step the previous phases ended at. ``carried``: the
    previous phase's ``phase_end.pt`` contents, or None (first phase, or resuming this phase
    from its own checkpoint).
    """

    index: int
    name: str
    out: Path
    root: Path
    overrides: list[str]
    step_offset: int = 0
    carried: dict | None = None
    reset_optimizer: bool = False
    report: CarryReport | None = field(default=None, init=False)

    def carry_in(self, module: pl.LightningModule) -> None:
        """Load the previous phase's final weights into ``module`` (a no-op without them)."""
        if self.carried is None:
            return
        old = Layout.from_dict(self.carried.get("layout"))
        new = layout_of(module)
        self.report = carry_weights(module, self.carried["state_dict"], old, new)
        log.info("phase %s starts from the previous phase: %s", self.name, self.report.summary())
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "carry.json").write_text(json.dumps(self.report.to_dict(), indent=2))

    def callbacks(self) -> list[pl.Callback]:
        """Callbacks the phase's Trainer needs (the optimizer state carry)."""
        return [CarryOptimizerState(self)]

    def save_end(self, module: pl.LightningModule, trainer: pl.Trainer) -> Path:
        """Write the trained weights, optimizer states and layout to ``phase_end.pt``."""
        path = self.out / PHASE_END
        tmp = path.with_suffix(".tmp")
        torch.save(
            {
                "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
                "optimizers": [opt.state_dict() for opt in trainer.optimizers],
                "layout": layout_of(module).to_dict(),
                "global_step": int(self.step_offset + logged_steps(trainer)),
            },
            tmp,
        )
        tmp.replace(path)
        return path


def logged_steps(trainer: pl.Trainer) -> int:
    """The step Lightning's loggers are at: batches that stepped (for agents, iterations), which
    is what the W&B x-axis ``trainer/global_step`` shows."""
    loop = getattr(trainer.fit_loop, "epoch_loop", None)
    return int(getattr(loop, "_batches_that_stepped", trainer.global_step))


def layout_of(module: pl.LightningModule) -> Layout:
    """The module's input/output layout (:meth:`modules.family.ModelFamily.layout`)."""
    return module.layout()


def load_phase_end(folder: Path) -> dict:
    """A finished phase's ``phase_end.pt`` (plain tensors and containers: weights_only)."""
    return torch.load(Path(folder) / PHASE_END, map_location="cpu", weights_only=True)


class CarryOptimizerState(pl.Callback):
    """At the start of training, load the previous phase's optimizer moments into this phase's
    optimizers, keeping this phase's hyperparameters (learning rates, betas, weight decay).
    Skipped when the phase resets its optimizer, when a tensor's shape changed, when the
    optimizers differ in number or layout, or when resuming the phase from its own checkpoint."""

    def __init__(self, phase: PhaseContext) -> None:
        self.phase = phase

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        phase = self.phase
        if phase.carried is None or phase.reset_optimizer:
            return
        if phase.report is not None and phase.report.shapes_changed:
            log.info("phase %s: shapes changed, so its optimizer starts fresh", phase.name)
            return
        saved = phase.carried.get("optimizers") or []
        if len(saved) != len(trainer.optimizers):
            log.info("phase %s: another number of optimizers; they start fresh", phase.name)
            return
        merged = []
        for opt, old in zip(trainer.optimizers, saved, strict=True):
            new = opt.state_dict()
            groups = new["param_groups"]
            if [len(g["params"]) for g in groups] != [
                len(g["params"]) for g in old["param_groups"]
            ]:
                log.info("phase %s: optimizer layout changed; it starts fresh", phase.name)
                return
            merged.append((opt, {"state": old["state"], "param_groups": groups}))
        for opt, state in merged:
            opt.load_state_dict(state)
        log.info("phase %s continues the previous phase's optimizer state", phase.name)
