"""Export a run's model: ``export/`` with the checkpoint, TorchScript, ``torch.export`` (.pt2)
and ONNX files of its inference path, each verified against the eager model on the test
split, and ``metadata.json``.

    python -m experiments.export RUN_DIR      # a run folder holding resolved_config.yaml

The end of every run calls :func:`export_trained` (``export.enabled``). The family says what
its inference path is (:meth:`modules.family.ModelFamily.inference`) and which test inputs
verify it; this module writes, verifies and describes it the same way for every family. An
existing ``export/`` is never overwritten: the next free ``export-1/``, ``export-2/``, ... is
written. Checkpoints load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from datamodules.database.uri import mask_credentials
from datamodules.errors import UserInputError
from datamodules.pipeline import MarketData
from experiments.config.schema import ExportSettings, SLASettings
from experiments.export import formats, metadata, sla, verify
from experiments.inference.bundle import FORMAT_VERSION, sha256_file
from experiments.runtime.disk import disk_full, is_disk_full
from experiments.runtime.noise import quiet_library_noise
from experiments.runtime.paths import next_free
from modules.family import ModelFamily

log = logging.getLogger(__name__)
BEST_PREFIXES = ("best-", "epoch")  # best-*.ckpt; epochNNN.ckpt from runs before best-epochNNN


class ExportError(UserInputError):
    """A run folder that cannot be exported as given."""


def export_settings(cfg: DictConfig) -> ExportSettings:
    """``cfg.export`` over the defaults (a run from before export existed has none)."""
    given = OmegaConf.to_container(cfg.export, resolve=True) if cfg.get("export") else {}
    known = {f.name for f in dataclasses.fields(ExportSettings)}
    settings = {k: v for k, v in given.items() if k in known}
    if isinstance(settings.get("sla"), dict):  # a run from before the gate existed has none
        names = {f.name for f in dataclasses.fields(SLASettings)}
        settings["sla"] = SLASettings(**{k: v for k, v in settings["sla"].items() if k in names})
    return ExportSettings(**settings)


def best_checkpoint(run_dir: Path) -> Path:
    """The run's best checkpoint (``best-*.ckpt`` by the family's monitor; the newest if
    several), else ``last.ckpt``."""
    folder = run_dir / "checkpoints"
    best = [p for p in folder.glob("*.ckpt") if p.name.startswith(BEST_PREFIXES)]
    if best:
        return max(best, key=lambda p: p.stat().st_mtime)
    if (folder / "last.ckpt").exists():
        return folder / "last.ckpt"
    raise ExportError(
        f"No checkpoint to export in {folder}: expected best-*.ckpt or last.ckpt. Export a run "
        "folder that finished training (it holds checkpoints/)."
    )


def refuse_damaged(ckpt: Path) -> None:
    """One paragraph (:class:`ExportError`) if the checkpoint at ``ckpt`` does not open or is
    not a training checkpoint; the file is left where it is."""
    from experiments.runtime.checkpoints import checkpoint_problem

    problem = checkpoint_problem(ckpt, needs=("state_dict",))
    if problem is not None:
        raise ExportError(
            f"Checkpoint {ckpt} cannot be used: {problem}. Nothing was exported or changed. If the "
            f"run did not finish, continue it with resume={ckpt.parent.parent} (a damaged "
            "checkpoint is set aside and the newest intact one used); else restore the file "
            "from a copy, or export from another checkpoint by moving this one out of "
            "checkpoints/."
        )


def load_weights(module: torch.nn.Module, ckpt: Path) -> torch.nn.Module:
    """Load a Lightning checkpoint's ``state_dict`` into ``module`` (``weights_only=True``:
    plain tensors and containers only); refuse a checkpoint of another model."""
    refuse_damaged(ckpt)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise ExportError(
            f"Checkpoint {ckpt} does not hold this run's model ({first}). Export the run "
            "folder it came from."
        ) from None
    return module


def export_model(
    cfg: DictConfig,
    module: ModelFamily,
    data: MarketData,
    run_dir: Path,
    config_yaml: str | None = None,
) -> Path:
    """Export ``module`` (built from ``cfg``) with the weights of the run's best checkpoint into
    a new export folder of ``run_dir``; return the folder.

    Raises :class:`~experiments.export.verify.ExportMismatchError` if a format does not
    reproduce the eager model on the test split."""
    started = time.perf_counter()
    settings = export_settings(cfg)
    run_dir = Path(run_dir)
    ckpt = best_checkpoint(run_dir)
    load_weights(module, ckpt)
    inference = module.inference()
    wrapper, sig = inference.wrapper.cpu().eval(), inference.signature
    inputs = module.verification_inputs(inference, settings.max_verify_samples)
    staging = run_dir / f".export-staging-{time.time_ns()}"
    staging.mkdir(parents=True)
    try:
        paths = formats.write_all(
            wrapper, sig, staging, settings.onnx_exporter, settings.onnx_opset
        )
        runners = {fmt: formats.load_runner(fmt, p) for fmt, p in paths.items()}
        diffs = verify.verify(
            runners, formats.eager_runner(wrapper), sig, inputs, settings.tolerance
        )
        shutil.copy2(ckpt, staging / ckpt.name)
        if config_yaml is None:
            config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
        config_yaml = mask_credentials(config_yaml)  # never a password in metadata.json
        family = type(module)
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": inference.bundle,
            "model": str(module.name),
            "family": f"{family.__module__}.{family.__qualname__}",
            **metadata.market_metadata(
                data,
                str(cfg.data.bar_size),
                OmegaConf.to_container(cfg.data.get("features") or {}, resolve=True),
            ),
            **inference.metadata,
            "checkpoint": ckpt.name,
            "formats": {fmt: {"file": p.name, **sig.describe()} for fmt, p in paths.items()},
            "onnx": {"opset": settings.onnx_opset, "exporter": settings.onnx_exporter},
            "verification": {
                "split": "test",
                "samples": int(len(inputs[0])),
                "tolerance": float(settings.tolerance),
                "max_abs_diff_scaled": diffs,
                "actions_identical": True,
            },
            "versions": metadata.package_versions(),
            "metrics": metadata.test_metrics(run_dir),
            **metadata.config_metadata(config_yaml),
            "files": {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.is_file()},
        }
        (staging / "metadata.json").write_text(json.dumps(meta, indent=2))
        gated = None
        if settings.sla.measure:  # the deployment gate, on the bundle as it will be loaded
            gated = sla.gate(staging, run_dir, inference.bundle, settings.sla)
            meta["sla"] = gated
            (staging / "metadata.json").write_text(json.dumps(meta, indent=2))
            if settings.sla.enforce and not gated["passed"]:
                kept = next_free(run_dir / "export-failed-sla")
                staging.rename(kept)
                refresh_report(run_dir)  # the report shows the failed gate
                raise ExportError(sla.refusal(gated, kept))
        folder = next_free(run_dir / "export")
        staging.rename(folder)
    except Exception as err:  # a full disk: the partial export goes, earlier files stay
        if is_disk_full(err):
            raise disk_full(err, f"the export in {staging}") from err
        raise
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    log.info(
        "exported %s to %s in %.1f s (max diff %s)%s",
        module.name,
        folder,
        time.perf_counter() - started,
        ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()),
        sla.summary(gated),
    )
    refresh_report(run_dir)
    return folder


def refresh_report(run_dir: Path) -> None:
    """Rewrite the run's report.html so that it shows the deployment gate just measured."""
    if not (Path(run_dir) / "metrics.json").is_file():
        return
    from experiments.reports.run_page import write_run_report

    try:
        write_run_report(run_dir)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:  # export stands
        log.warning("report.html was not refreshed after the export: %s", err)


def export_trained(cfg: DictConfig, module: ModelFamily, data: MarketData, run_dir: Path) -> Path:
    """End-of-run export of the module just trained (rank zero, after the report)."""
    keep = Path(run_dir) / "resolved_config.yaml"
    yaml = keep.read_text() if keep.exists() else None
    return export_model(cfg, module, data, run_dir, yaml)


def rebuild(cfg: DictConfig, run_dir: Path = Path(".")) -> tuple[ModelFamily, MarketData]:
    """The run's untrained module (on the CPU) and its market, rebuilt from its resolved
    config through the same plug-ins the run used."""
    from experiments.run.build import build_module
    from experiments.runtime.hardware import resolve_hardware

    cpu = resolve_hardware({"accelerator": "cpu", "devices": 1, "num_nodes": 1})
    return build_module(cfg, cpu, Path(run_dir))


def export_run(run_dir: str | Path) -> Path:
    """Export a finished run folder (``resolved_config.yaml`` + ``checkpoints/``) into a new
    export folder; return it."""
    run_dir = Path(run_dir)
    config = run_dir / "resolved_config.yaml"
    if not run_dir.is_dir() or not config.is_file():
        raise ExportError(
            f"{run_dir} is not a run folder: it has no resolved_config.yaml. Give the folder a "
            "run wrote, e.g. outputs/runs/<date>/<time>_<model>."
        )
    cfg = OmegaConf.load(config)
    if cfg.get("model") is None or "_target_" not in cfg.model:
        older = (
            " (it was trained by an earlier version of the project, which named families by a key)"
        )
        raise ExportError(
            f"{config} has no model._target_{older if 'kind' in (cfg.get('model') or {}) else ''}; "
            "it is not the config of a training run this version can rebuild. Export it with "
            "the version that trained it."
        )
    refuse_damaged(best_checkpoint(run_dir))  # refuse early, before building the market
    module, data = rebuild(cfg, run_dir)
    return export_model(cfg, module, data, run_dir, config.read_text())


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m experiments.export RUN_DIR``; exit 2 with one paragraph on bad input."""
    parser = argparse.ArgumentParser(
        prog="python -m experiments.export",
        description="Write a verified export/ (TorchScript, torch.export, ONNX, metadata.json) "
        "for a finished run folder. An existing export/ is kept; export-1/, ... is written.",
    )
    parser.add_argument("run_dir", type=Path, help="a run folder holding resolved_config.yaml")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_library_noise()
    try:
        folder = export_run(args.run_dir)
    except UserInputError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 2
    print(folder)
    return 0
