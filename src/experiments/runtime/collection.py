"""Python's cyclic garbage collector during a command's start-up.

Importing torch, Lightning, TorchRL, W&B, pandera and scipy creates over half a million
objects the collector tracks, and it traverses all of them again at each of its full passes,
eight of them during those imports: on 2 cores the imports of a run take 6.1 s with
the collector as Python sets it and 3.9 s without those passes (``bench/startup.py``). The
objects live as long as the process does, so the passes find almost nothing to free.

A command's ``__main__`` calls :func:`pause` first, and :func:`resume` once its heavy imports
are done: the objects that exist then are moved to the collector's permanent generation
(``gc.freeze``), which its later passes skip, and collection is on again for everything
created afterwards (training, evaluation, reporting). Only commands do this: importing the
library (``import envs``, ``import experiments``) leaves the collector as it is.

Light: imports only the standard library.
"""

from __future__ import annotations

import gc

_paused = False


def pause() -> None:
    """Stop cyclic collection until :func:`resume` (a command's first call)."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """Freeze what exists now into the permanent generation and collect again, if
    :func:`pause` stopped collection; otherwise nothing (a second call, or a collector that
    was off before the command started, stays as it is)."""
    global _paused
    if _paused:
        gc.freeze()
        gc.enable()
        _paused = False
