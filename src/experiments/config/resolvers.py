"""OmegaConf resolvers used by ``conf/hydra/default.yaml``: run and sweep folders that are
never reused, and the folder a ``resume=`` continues."""

from __future__ import annotations

from omegaconf import OmegaConf

from experiments.runtime.paths import next_free
from experiments.runtime.resume import hydra_subdir, resume_dir
from experiments.runtime.sweep_resume import sweep_folder

_RUN_DIRS: dict[tuple[str, str], str] = {}


def unique_dir(path: str) -> str:
    """``path``, or ``path-1``, ``path-2``... if it exists, so no run folder is ever reused."""
    return str(next_free(path))


def run_dir(path: str, resume=None, *, _root_) -> str:
    """The run folder: a new ``unique_dir(path)``, or the folder a ``resume=`` continues.
    Memoised per (path, resume): Hydra resolves it again after creating the folder."""
    key = (str(path), str(resume))
    if key not in _RUN_DIRS:
        hydra = _root_.get("hydra")
        overrides = list(hydra.overrides.task) if hydra is not None else []
        new = unique_dir(path)
        _RUN_DIRS[key] = resume_dir(new, resume, str(_root_.paths.output_root), overrides)
    return _RUN_DIRS[key]


def sweep_dir(path: str, resume, output_root: str, overrides) -> str:
    """The sweep folder: a new ``unique_dir(path)``, or the sweep a ``resume=`` continues
    (:func:`experiments.runtime.sweep_resume.sweep_folder`); ``overrides`` are the sweep's
    (``hydra.overrides.task``). Cached by its arguments' text, which every job's config
    shares: all jobs resolve the sweep's one folder."""
    return sweep_folder(str(path), resume, str(output_root), list(overrides or []))


def register_resolvers() -> None:
    """Resolvers used by conf/ (``unique_dir``, ``run_dir``, ``sweep_dir``, ``hydra_subdir``)."""
    if not OmegaConf.has_resolver("unique_dir"):
        OmegaConf.register_new_resolver("unique_dir", unique_dir, use_cache=True)
    if not OmegaConf.has_resolver("run_dir"):
        OmegaConf.register_new_resolver("run_dir", run_dir)
    if not OmegaConf.has_resolver("sweep_dir"):
        OmegaConf.register_new_resolver("sweep_dir", sweep_dir, use_cache=True)
    if not OmegaConf.has_resolver("hydra_subdir"):
        OmegaConf.register_new_resolver("hydra_subdir", hydra_subdir, use_cache=True)
