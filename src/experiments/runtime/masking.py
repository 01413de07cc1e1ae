"""A log filter that masks passwords: Hydra's own console lines carry the command line.

A multirun's launcher logs each job's overrides as typed (``#0 : data.uri=postgresql://bars:
PASSWORD@host/db ...``) before any job runs, through Hydra's logging config, not ours.
``conf/hydra/default.yaml`` puts :class:`MaskCredentials` on that console handler, so the
line shows ``bars:***@``, as every file of the run does (:func:`datamodules.database.uri.
mask_credentials`: URI passwords and ``password=...`` values).
"""

from __future__ import annotations

import logging

from datamodules.database.uri import mask_credentials


class MaskCredentials(logging.Filter):
    """Rewrites each record's message with its passwords replaced by ``***``."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_credentials(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True
