"""``checkpoints/last.ckpt`` every N iterations and after the last one, written atomically (a crash or a kill while
saving leaves the previous one intact)."""

from __future__ import annotations

import os
from pathlib import Path

import pytorch_lightning as pl


class PeriodicCheckpoint(pl.Callback):
    """Saves the whole training state to ``dirpath/last.ckpt`` every ``every_n_epochs`` epochs
    (one agent iteration is one epoch). Saved at an epoch's end, so a resumed fit starts at
    the next epoch exactly."""

    def __init__(self, dirpath: Path, every_n_epochs: int) -> None:
        self.dirpath = Path(dirpath)
        self.every = int(every_n_epochs)

    def save(self, trainer: pl.Trainer) -> Path:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        final = self.dirpath / "last.ckpt"
        partial = self.dirpath / ".last.ckpt.partial"
        trainer.save_checkpoint(partial)  # every process (rank 0 writes), then a barrier
        if trainer.is_global_zero:
            os.replace(partial, final)
        return final

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Also after the last iteration, so a finished run always leaves its final state (the
        # export bundles it when no validation picked a best checkpoint).
        last = (
            trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs > 0
        )
        if (trainer.current_epoch + 1) % self.every == 0 or last or trainer.should_stop:
            self.save(trainer)
