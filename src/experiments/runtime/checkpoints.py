"""``checkpoints/last.ckpt`` every N iterations and after the last one, written atomically (a
crash or a kill while saving leaves the previous one intact); and the check, at resume, that a
checkpoint opens and holds what a resume needs (a damaged one is set aside, never deleted, and
the newest intact one used instead)."""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

from datamodules.errors import UserInputError
from experiments.runtime.disk import disk_full, is_disk_full
from experiments.runtime.paths import next_free


def save_beside(trainer: pl.Trainer, partial: Path, final: Path) -> None:
    """``trainer.save_checkpoint`` to ``partial`` (every process; rank 0 writes, then a
    barrier), renamed to ``final`` by rank 0: a kill or a full disk mid-save leaves ``final``
    as it was. A write that fails for lack of space removes the partial file and raises
    :class:`~experiments.runtime.disk.DiskFull` naming ``final``."""
    try:
        trainer.save_checkpoint(partial)
    except Exception as err:
        if not is_disk_full(err):
            raise
        if trainer.is_global_zero:
            partial.unlink(missing_ok=True)
        raise disk_full(err, final) from err
    if trainer.is_global_zero:
        os.replace(partial, final)


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
        save_beside(trainer, partial, final)
        return final

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Also after the last iteration, so a finished run always leaves its final state (the
        # export bundles it when no validation picked a best checkpoint).
        last = (
            trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs > 0
        )
        if (trainer.current_epoch + 1) % self.every == 0 or last or trainer.should_stop:
            self.save(trainer)


# What Lightning needs to continue a fit from a checkpoint (a family's own state, such as an
# agent's, is checked by the family when it loads).
RESUME_KEYS = ("state_dict", "loops", "optimizer_states", "epoch", "global_step")
DAMAGED_SUFFIX = ".damaged"  # a damaged checkpoint is renamed NAME.ckpt.damaged, never deleted


class DamagedCheckpoints(UserInputError):
    """Every checkpoint a resume could continue from is damaged."""


def checkpoint_problem(path: Path, needs: tuple[str, ...] = RESUME_KEYS) -> str | None:
    """Why the checkpoint at ``path`` cannot be used (it does not open, or lacks one of
    ``needs``: by default what a resume needs), or None if it can. Loads it on the CPU with
    ``weights_only=True``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        return (
            "it holds Python objects beyond tensors and containers, which loading with "
            "weights_only=True refuses (a file of another program, or one tampered with)"
        )
    except Exception as err:  # noqa: BLE001 - any failure to open is the damage to report
        first = (str(err).strip().splitlines() or [""])[0].split(". ")[0].rstrip(".")
        return f"it does not open ({type(err).__name__}: {first})"
    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not a training checkpoint"
    missing = [k for k in needs if k not in state]
    if missing:
        return f"it lacks {', '.join(missing)}"
    if "state_dict" in needs and not state["state_dict"]:
        return "its state_dict is empty"
    return None


def set_aside(path: Path) -> Path:
    """Rename a damaged checkpoint to ``NAME.ckpt.damaged`` (``.damaged-1``... if taken) so no
    resume picks it again; the bytes stay for a post-mortem. Returns the new path."""
    target = next_free(path.with_name(path.name + DAMAGED_SUFFIX))
    os.replace(path, target)
    return target


# Within one save the app writes the best checkpoint (at validation's end), then last.ckpt (at
# the epoch's end), then interrupted*.ckpt (on a signal): the order that breaks a tie of times,
# which the file system's clock tick (a few ms) makes common for small files.
_WRITTEN_LATER = {"last": 1, "interrupted": 2}


def _recency(path: Path) -> tuple[int, int, str]:
    written_later = _WRITTEN_LATER.get(path.stem.split("-")[0], 0)
    return path.stat().st_mtime_ns, written_later, path.name


def _newest_first(run_dir: Path) -> list[Path]:
    """The folder's ``*.ckpt`` files, newest first: by modification time, ties broken by the
    order the app writes them in, then by name (``best-iter0010`` before ``best-iter0003``)."""
    found = (Path(run_dir) / "checkpoints").glob("*.ckpt")
    return sorted(found, key=_recency, reverse=True)


def intact_checkpoint(run_dir: Path, setting: str, rank: int = 0) -> Path | None:
    """The newest checkpoint of ``run_dir/checkpoints`` that a resume can use, or None if the
    folder holds none. Each damaged one newer than it is set aside (:func:`set_aside`) with a
    one-paragraph notice on stderr naming it and the checkpoint used instead; with every one
    damaged, :class:`DamagedCheckpoints` (one paragraph: what was found, how to start fresh).
    ``setting`` is what the user typed (``resume=PATH``), for the messages. Only ``rank`` 0
    renames and prints: the other processes of a multi-process run check the same bytes and
    skip the same files (one renamed under them reads as damaged too), so all agree."""
    found = _newest_first(run_dir)
    if not found:
        return None
    damaged: list[tuple[Path, str, Path]] = []
    for path in found:
        problem = checkpoint_problem(path)
        if problem is None:
            break
        damaged.append((path, problem, set_aside(path) if rank == 0 else path))
    else:
        path = None
    if damaged:
        listed = "; ".join(f"{p.name}: {why}, set aside as {new.name}" for p, why, new in damaged)
        if path is None:
            raise DamagedCheckpoints(
                f"{setting}: every checkpoint in {Path(run_dir) / 'checkpoints'} is damaged "
                f"({listed}); nothing was deleted. Start a fresh run by dropping {setting} (it "
                "gets a new folder), or put an intact checkpoint back in that folder and resume "
                "again."
            )
        if rank != 0:
            return path
        print(
            f"{setting}: {len(damaged)} damaged checkpoint(s) in {path.parent} ({listed}); "
            f"resuming from {path.name}, the newest intact one, instead.",
            file=sys.stderr,
            flush=True,
        )
    return path
