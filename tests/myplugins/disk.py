"""A full disk on cue, for the fault tests: a Lightning callback that, at the end of a given
training iteration (or at the end of training), lowers this process's file-size limit
(RLIMIT_FSIZE, the kernel's ``ulimit -f``) so every later write past ``limit_bytes`` fails
with EFBIG, as a full disk fails it with ENOSPC."""

from __future__ import annotations

import resource
import signal

import pytorch_lightning as pl


class FillDisk(pl.Callback):
    """``at_epoch``: after that epoch (iteration) ends; None: when training ends."""

    def __init__(self, limit_bytes: int, at_epoch: int | None = None) -> None:
        self.limit = int(limit_bytes)
        self.at_epoch = at_epoch

    def fill(self) -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.limit, hard))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.at_epoch is not None and trainer.current_epoch == self.at_epoch:
            self.fill()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.at_epoch is None:
            self.fill()
