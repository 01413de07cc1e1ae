"""Ctrl+C and SIGTERM stop a training run cleanly at the end of the current iteration.

The first SIGINT or SIGTERM lets the iteration finish, saves ``checkpoints/interrupted.ckpt``
(``interrupted-1.ckpt``... if one exists, so no checkpoint is ever overwritten), stops the
Trainer and lets the run exit 0 after printing how to resume. A second SIGINT exits at once
(status 130) without saving. In a DDP run the processes agree at each iteration's end: if any
of them was signalled, all save one checkpoint together (rank 0 writes it) and stop.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytorch_lightning as pl

from experiments.runtime.checkpoints import save_beside
from experiments.runtime.paths import next_free


class GracefulInterrupt(pl.Callback):
    """Installs the signal handlers while the Trainer fits; saves and stops when signalled."""

    def __init__(self, checkpoint_dir: Path) -> None:
        self.checkpoint_dir = Path(checkpoint_dir)
        self.requested: str | None = None
        self.saved: Path | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.requested is not None and signum == signal.SIGINT:
            print("\nSecond Ctrl+C: exiting now, without saving.", file=sys.stderr, flush=True)
            os._exit(130)
        if self.requested is None:
            self.requested = name
            print(
                f"\n{name} received: finishing this iteration, then saving a checkpoint "
                "(Ctrl+C again to exit at once).",
                file=sys.stderr,
                flush=True,
            )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Installed after Lightning's own handlers, which would otherwise end the run mid-step.
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.saved is not None:
            return
        # In a DDP run the signal may reach one process only: all stop if any was signalled
        # (one collective per iteration; the plain value in one process), and save together.
        if not trainer.strategy.reduce_boolean_decision(self.requested is not None, all=False):
            return
        path = None
        if trainer.is_global_zero:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            path = next_free(self.checkpoint_dir / "interrupted.ckpt", keep_suffix=True)
        self.saved = Path(trainer.strategy.broadcast(path, src=0))
        # Written beside, then renamed: a kill or a full disk mid-save leaves no partial file.
        save_beside(trainer, self.saved.with_name(f".{self.saved.name}.partial"), self.saved)
        trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.restore()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.restore()

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
