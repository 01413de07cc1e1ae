"""Library log lines that say nothing to the person running a job, kept off the console.

Lightning logs ``weights_only was not set`` each time it reads a checkpoint, names the checkpoint
it restores and loads (twice per run: validating and testing the best), advertises a cloud
logger, reports that no TPU (or HPU) exists and that ``max_epochs`` was reached; the ONNX
exporter's optimiser logs each graph pass at INFO. None of these is a warning: the filters drop those exact INFO lines and
nothing else, so every warning a library raises still reaches the console. Installed once per
process (idempotent) by :func:`quiet_library_noise`.
"""

from __future__ import annotations

import logging

# logger name -> the starts of INFO messages dropped from it (records are filtered where
# they are created, so each entry names the module's own logger).
DROPPED: dict[str, tuple[str, ...]] = {
    "pytorch_lightning.trainer.connectors.checkpoint_connector": (
        "`weights_only` was not set",
        "Restoring states from the checkpoint path",
    ),
    "pytorch_lightning.utilities.rank_zero": (
        "💡 Tip:",
        "TPU available:",
        "HPU available:",
        "GPU available: False, used: False",
        "Restoring states from the checkpoint path",
        "Loaded model weights from the checkpoint",
        "`Trainer.fit` stopped: `max_epochs=",
    ),
}
# Loggers whose INFO lines are progress chatter of the ONNX exporter's optimiser passes.
QUIETED = ("onnx_ir", "onnxscript")


class DropLines(logging.Filter):
    """Drops INFO (and lower) records whose message starts with one of ``starts``."""

    def __init__(self, starts: tuple[str, ...]) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        return not str(record.getMessage()).startswith(self.starts)


def quiet_library_noise() -> None:
    """Install the filters of :data:`DROPPED` and raise :data:`QUIETED` loggers to WARNING."""
    for name, starts in DROPPED.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropLines) for f in logger.filters):
            logger.addFilter(DropLines(starts))
    for name in QUIETED:
        logger = logging.getLogger(name)
        if logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)
