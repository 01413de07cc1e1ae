"""The run's logger: a plug-in (``conf/logger/``), built once per job, phase or sweep job.

``conf/logger/NAME.yaml`` names a Lightning logger class by ``_target_`` with ``_partial_:
true``; :func:`make_logger` calls it with what the run knows (see :class:`RunLogger`): the
run's name (from its overrides), folder, tags, resolved config plus overrides, the W&B-style
``group`` that ties a sweep's jobs or a curriculum's phases, the run id to continue when
resuming, and the step offset of a curriculum phase. The default, :class:`WandbRunLogger`,
writes an offline W&B run inside the run's folder (``wandb sync`` uploads it later).
``logger=none`` logs nowhere but the console and the run folder.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import WandbLogger

from datamodules.database.uri import mask_credentials, mask_secrets
from experiments.config.job import job_overrides

log = logging.getLogger(__name__)


# Overrides that change where or how loudly a run goes, not what it computes: left out of names.
UNNAMED = ("paths.", "print_config=", "quiet=", "logger.", "hydra.", "tags=", "hparams_search=")


def run_name(cfg: DictConfig, phase: str | None = None) -> str:
    """The model's name for a plain run; then the overrides that shape the result, in command order.
    A curriculum phase's run adds ``/`` and the phase's name."""
    parts = [mask_credentials(o.lstrip("+~")) for o in job_overrides()]
    parts = [o for o in parts if not o.startswith(("model=", *UNNAMED))]
    base = str(cfg.model.get("name", "run"))
    name = ",".join([base, *parts]) if parts else base
    return f"{name}/{phase}" if phase else name


def run_group(cfg: DictConfig) -> str | None:
    """The configured group, else the sweep folder for multirun jobs (shared by its jobs),
    named after the Optuna study when it has a name: ``<study_name>-<date>-<time>``."""
    if (cfg.get("logger") or {}).get("group"):
        return str(cfg.logger.group)
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        sweep = Path(HydraConfig.get().sweep.dir)
        study = HydraConfig.get().sweeper.get("study_name")
        return f"{study or 'sweep'}-{sweep.parent.name}-{sweep.name}"
    return None


def run_config(cfg: DictConfig, overrides: list[str] | None = None) -> dict:
    """The resolved config as plain containers, plus the override list; passwords in URIs
    masked (``***``)."""
    plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    plain["overrides"] = job_overrides() if overrides is None else list(overrides)
    return mask_secrets(plain)


@runtime_checkable
class RunLogger(Protocol):
    """What the run needs from its logger, beside being a Lightning ``Logger``.

    It is constructed with the keywords ``name``, ``save_dir``, ``tags``, ``config``,
    ``group``, ``step_offset`` and, when a run is resumed, ``id`` (the ``run_id`` it gave
    the first time)."""

    @property
    def run_id(self) -> str | None:
        """An id to continue this run under when resuming (None: the logger cannot)."""
        ...

    def log_summary(self, values: dict[str, float | None]) -> None:
        """Final numbers of the run (test metrics of the model and its baselines)."""
        ...

    def log_image(self, key: str, images: list, **kwargs) -> None: ...

    def log_table(self, key: str, columns: list[str], data: list[list]) -> None:
        """A table of rows (per-bar returns, the trade journal), kept with the run so it can
        be re-analysed without re-running it."""
        ...

    def finish(self) -> None:
        """Close the run so the next job (multirun, curriculum phase) starts a fresh one."""
        ...

    def log_html(self, key: str, path: Path) -> None:
        """A self-contained HTML page (``report.html``) kept with the run, viewable in the
        logger's UI. Optional: a logger without it keeps the page in the run folder only."""
        ...

    # Artifacts (optional: a logger without them logs none; see experiments.run.artifacts).
    def use_dataset_artifact(self, name: str, files: dict[str, Path], metadata: dict) -> None:
        """Mark the data ``files`` (archive name -> local path) as an input of the run."""
        ...

    def log_model_artifact(
        self, name: str, folder: Path, metadata: dict, aliases: list[str]
    ) -> None:
        """Keep the export bundle in ``folder`` as an output of the run."""
        ...

    def use_model_artifact(self, name: str, folder: Path) -> None:
        """Mark the bundle another run logged as ``name`` (its files in ``folder``) as an
        input of this one (a curriculum phase uses the previous phase's model)."""
        ...


class WandbRunLogger(WandbLogger):
    """Lightning's WandbLogger as a :class:`RunLogger`: offline by default (``mode``), every
    step shifted by ``step_offset`` (so the phases of a curriculum continue one global step,
    while each phase's Trainer counts from 0), ``group`` and ``job_type`` from the config or
    the run, and a resumed run continued under its ``id``."""

    def __init__(
        self,
        *,
        name: str,
        save_dir: str,
        project: str = "trading-experiments",
        entity: str | None = None,
        mode: Literal["offline", "online", "disabled"] = "offline",
        group: str | None = None,
        job_type: str = "train",
        tags: list[str] | None = None,
        config: dict | None = None,
        id: str | None = None,  # noqa: A002 - wandb.init's name for it
        step_offset: int = 0,
        dataset_bars: Literal["auto", "always", "never"] = "auto",
    ) -> None:
        os.environ.setdefault("WANDB_SILENT", "true")
        resume = {"id": id, "resume": "allow"} if id else {}
        super().__init__(
            name=name,
            save_dir=save_dir,
            project=project,
            entity=entity,
            group=group,
            job_type=job_type,
            tags=tags,
            mode=mode,
            config=config,
            log_model=False,
            **resume,
        )
        # WandbLogger always passes anonymous=None, which wandb 0.31 warns about on every run.
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)
        self.step_offset = int(step_offset)
        self.mode = mode
        # The dataset artifact holds the raw bars when small (auto), always or never.
        self.dataset_bars = {"always": True, "never": False}.get(dataset_bars, "auto")

    @property
    def experiment(self):
        """The W&B run, started with the command line's passwords masked (W&B records
        ``sys.argv`` in the run's metadata); the real ``sys.argv`` is restored at once."""
        if self._experiment is not None:
            return self._experiment
        argv = list(sys.argv)
        sys.argv[:] = [mask_credentials(a) for a in argv]
        try:
            return super().experiment
        finally:
            sys.argv[:] = argv

    def log_metrics(self, metrics, step=None) -> None:
        super().log_metrics(metrics, None if step is None else step + self.step_offset)

    @property
    def run_id(self) -> str | None:
        return self.experiment.id

    def log_summary(self, values: dict[str, float | None]) -> None:
        self.experiment.summary.update(values)

    def log_html(self, key: str, path: Path) -> None:
        import wandb

        self.experiment.log({key: wandb.Html(Path(path).read_text(encoding="utf-8"), inject=False)})

    def use_dataset_artifact(self, name: str, files: dict[str, Path], metadata: dict) -> None:
        import wandb

        artifact = wandb.Artifact(
            name, type="dataset", metadata=metadata, description="the market data of the run"
        )
        for archived, path in files.items():
            artifact.add_file(str(path), name=archived)
        self._use(artifact)

    def log_model_artifact(
        self, name: str, folder: Path, metadata: dict, aliases: list[str]
    ) -> None:
        if self.mode == "disabled":
            return
        import wandb

        artifact = wandb.Artifact(name, type="model", metadata=metadata)
        artifact.add_dir(str(folder))
        self.experiment.log_artifact(artifact, aliases=list(aliases))

    def use_model_artifact(self, name: str, folder: Path) -> None:
        import json

        import wandb

        metadata = json.loads((Path(folder) / "metadata.json").read_text())
        artifact = wandb.Artifact(name, type="model", metadata=metadata)
        artifact.add_dir(str(folder))
        self._use(artifact)

    def _use(self, artifact) -> None:
        """Mark a draft ``artifact`` as an input of the run. Online that is ``use_artifact``;
        offline W&B refuses ``use_artifact``, so the artifact is queued the way
        ``use_artifact`` queues a draft (logged, then used once committed), and ``wandb
        sync`` commits it and records the use. The same files under the same name are the
        same version (W&B deduplicates by content)."""
        if self.mode == "disabled":
            return
        run = self.experiment
        if run.offline:
            run._log_artifact(artifact, is_user_created=True, use_after_commit=True)
        else:
            run.use_artifact(artifact)

    def finish(self) -> None:
        import wandb

        if wandb.run is not None:
            wandb.finish()


def make_logger(
    cfg: DictConfig,
    run_dir: Path,
    tags: list[str],
    run_id: str | None = None,
    phase=None,
) -> RunLogger | None:
    """This job's logger (``cfg.logger``), or None with ``logger=none``. With ``run_id`` (a
    resumed run) it continues that run. In a curriculum ``phase``
    (:class:`experiments.curriculum.context.PhaseContext`) the config holds the phase's
    overrides and the step continues from the previous phase."""
    if cfg.get("logger") is None:
        return None
    from experiments.run.build import instantiate_plugins

    (factory,) = instantiate_plugins(cfg.logger, "logger")
    overrides = phase.overrides if phase is not None else None
    return factory(
        name=run_name(cfg, phase.name if phase is not None else None),
        save_dir=str(run_dir),
        tags=tags,
        config=run_config(cfg, overrides),
        group=run_group(cfg),
        step_offset=phase.step_offset if phase is not None else 0,
        **({"id": run_id} if run_id else {}),
    )


def log_html(logger: RunLogger | None, key: str, path: Path) -> None:
    """Log the HTML page at ``path`` under ``key`` when the logger takes HTML pages."""
    if logger is not None and callable(getattr(logger, "log_html", None)):
        logger.log_html(key, path)


def finish(logger: RunLogger | None) -> None:
    """Close this job's logger run (if any) so the next job starts a fresh one."""
    if logger is not None:
        logger.finish()
