"""What an agent run shows while it learns, and what it keeps of its learning curves.

:class:`AgentProgressBar` replaces Lightning's epoch bar for agents (one Lightning epoch is one
iteration, so an epoch bar says nothing): one line with the frames done of the frames planned
(or the completed episodes of those planned, when ``model.collector.episodes`` sets the length),
the rate in frames per second over the last iterations, the time left at that rate, the mean
return of the episodes that ended last (in the latest iteration where some did) and the last
validation score and Sharpe ratio. On a terminal it redraws in place (on stderr); into a file
or a pipe it prints its final state once, as one line on stderr. Validation and test passes
show nothing of their own (each is one deterministic pass).

:class:`LearningCurves` writes ``learning_curves.csv`` into the run folder: one row per
iteration with the numbers the agent logged for it (``train/*``), and ``val/*`` on the
iterations a validation pass ended. The run's report draws it; it is kept whatever the logger
(also with ``logger=none``), rewritten after every validation pass and at the end of training,
and a resumed run keeps the rows up to the iteration it resumed from.
"""

from __future__ import annotations

import csv
import math
import os
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks.progress import ProgressBar

CURVES_FILE = "learning_curves.csv"
RATE_WINDOW = 5  # iterations the frames/s shown is measured over


def plan_of(module: Any) -> tuple[str, int | None, int]:
    """``(unit, planned, done)`` of an agent run: frames when the length is in frames or
    iterations (both fix the frames), else completed episodes."""
    iterations = getattr(module, "max_iterations", None)
    if iterations is not None:
        per_iteration = int(module.frames_per_batch) * int(getattr(module, "world_size", 1))
        return "frames", int(iterations) * per_iteration, int(module.frames)
    planned = getattr(module.collector_cfg, "episodes", None)
    return "episodes", (int(planned) if planned else None), int(module.episodes)


def _count(n: float) -> str:
    return f"{n:,.0f}"


def _rate(n: float) -> str:
    if n >= 1e6:
        return f"{n / 1e6:.2f}M"
    if n >= 1e4:
        return f"{n / 1e3:.1f}k"
    return f"{n:,.0f}"


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "-:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _metric(metrics: dict, *keys: str) -> float | None:
    for key in keys:
        value = metrics.get(key)
        if value is not None:
            value = float(value)
            if math.isfinite(value):
                return value
    return None


class AgentProgressBar(ProgressBar):
    """One line per agent run: ``frames done/planned``, frames/s, time left, the last episode
    return and validation score (see the module docstring)."""

    def __init__(self, refresh_per_second: float = 4.0) -> None:
        super().__init__()
        self._enabled = True
        self.refresh_per_second = refresh_per_second
        self._progress = None  # rich Progress on a terminal; False into a file or pipe
        self._task = None
        self._name = "agent"
        self._last = ""
        self._known: dict[str, float] = {}  # the last episode return and validation scores
        self._marks: deque[tuple[float, int, int]] = deque(maxlen=RATE_WINDOW + 1)
        self._started: tuple[float, int, int] | None = None

    # ProgressBar's protocol
    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled and bool(self._progress)

    def print(self, *args: Any, **kwargs: Any) -> None:
        if self._progress:
            self._progress.console.print(*args, **kwargs)
        else:
            print(*args, **kwargs)

    # what the line says
    def status(self, module: Any, metrics: dict) -> tuple[str, float, float | None]:
        """The text after the bar, the units done and the units planned (None: open-ended)."""
        unit, planned, done = plan_of(module)
        now = time.perf_counter()
        frames, episodes = int(module.frames), int(module.episodes)
        self._marks.append((now, frames, episodes))
        if self._started is None:
            self._started = self._marks[0]
        t0, f0, e0 = self._marks[0]
        elapsed = now - t0
        fps = (frames - f0) / elapsed if elapsed > 0 and frames > f0 else None
        parts = [
            f"{_count(done)}/{_count(planned)} {unit}" if planned else f"{_count(done)} {unit}"
        ]
        if unit == "episodes":
            parts.append(f"{_count(frames)} frames")
        parts.append(f"{_rate(fps)} frames/s" if fps else "- frames/s")
        left = 0.0 if planned and done >= planned else None
        if planned and done < planned:
            if unit == "frames" and fps:
                left = (planned - done) / fps
            elif unit == "episodes":
                s0, _, first = self._started
                per_second = (episodes - first) / max(now - s0, 1e-9)
                left = (planned - done) / per_second if per_second > 0 else None
        parts.append(f"{_clock(left) if left is not None else '-:--:--'} left")
        for key in ("train/episode_return", "val/score", "val/sharpe"):  # the last known ones
            value = _metric(metrics, key)
            if value is not None:
                self._known[key] = value
        metrics = self._known
        ret = _metric(metrics, "train/episode_return")
        parts.append(f"episode return {ret:,.1f}" if ret is not None else "episode return -")
        score = _metric(metrics, "val/score")
        sharpe = _metric(metrics, "val/sharpe")
        if score is not None:
            parts.append(f"val score {score:.2f}")
        if sharpe is not None:
            parts.append(f"val Sharpe {sharpe:.2f}")
        if score is None and sharpe is None:
            parts.append("val -")
        return " · ".join(parts), float(done), float(planned) if planned else None

    # Lightning's hooks
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not (self._enabled and trainer.is_global_zero):
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

        self._marks.clear()
        self._known = {}
        self._started = None
        self._name = str(getattr(pl_module, "name", "agent"))
        self._last = self.status(pl_module, {})[0]
        console = Console(stderr=True)
        if not console.is_terminal:  # a file or a pipe: the final state once, at the end
            self._progress = False
            return
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=20),
            TaskProgressColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
            refresh_per_second=self.refresh_per_second,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        text, done, planned = self.status(pl_module, {})
        self._task = self._progress.add_task(self._name, total=planned, completed=done, status=text)
        self._progress.start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._update(trainer, pl_module)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit":
            self._update(trainer, pl_module)

    def _update(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._progress is None:
            return
        metrics = dict(trainer.callback_metrics)
        text, done, planned = self.status(pl_module, metrics)
        self._last = text
        if self._progress:
            self._progress.update(self._task, completed=done, total=planned, status=text)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._stop()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._progress is None:
            return
        if self._progress:
            self._progress.stop()
        else:
            print(f"{self._name}: {self._last}", file=sys.stderr, flush=True)
        self._progress = None


class LearningCurves(pl.Callback):
    """``learning_curves.csv`` in the run folder (``trainer.default_root_dir``): per iteration
    the values in ``module.last_logged`` (what the agent logged for it) and, where a validation
    pass ended, the ``val/*`` metrics (see the module docstring)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def _path(self, trainer: pl.Trainer) -> Path:
        return Path(trainer.default_root_dir) / CURVES_FILE

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.rows = []
        path = self._path(trainer)
        # One Lightning epoch is one iteration; the epoch count is restored before this hook,
        # the agent's own counters only at its first step.
        done = max(int(getattr(pl_module, "iteration", 0)), int(trainer.current_epoch))
        if done > 0 and path.is_file():  # resumed: keep the rows up to where it resumed
            with open(path, newline="") as fh:
                for row in csv.DictReader(fh):
                    values = {k: float(v) for k, v in row.items() if v not in ("", None)}
                    if values.get("iteration", math.inf) <= done:
                        self.rows.append(values)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        logged = getattr(pl_module, "last_logged", None) or {}
        row = {"iteration": float(pl_module.iteration), "frames": float(pl_module.frames)}
        for key, value in logged.items():
            value = float(value)
            if math.isfinite(value):
                row[key] = value
        self.rows.append(row)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn != "fit" or not self.rows:
            return
        for key, value in trainer.callback_metrics.items():
            if key.startswith("val/") and getattr(value, "numel", lambda: 1)() == 1:
                value = float(value)
                if math.isfinite(value):
                    self.rows[-1][key] = value
        self.write(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.write(trainer)

    def write(self, trainer: pl.Trainer) -> Path | None:
        """Rewrite the CSV (rank zero only); return its path."""
        if not trainer.is_global_zero or not self.rows:
            return None
        path = self._path(trainer)
        columns = ["iteration", "frames"]
        for row in self.rows:
            columns += [k for k in row if k not in columns]
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, path)
        return path
