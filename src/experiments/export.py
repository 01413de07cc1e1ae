"""Export a run's model: ``export/`` with the checkpoint, TorchScript, ``torch.export`` (.pt2)
and ONNX files of its inference path, each verified against the eager model on the test
split, and ``metadata.json``.

    python -m experiments.export RUN_DIR      # a run folder holding resolved_config.yaml

The end of every run calls :func:`export_trained` (``export.enabled``). An existing
``export/`` is never overwritten: the next free ``export-1/``, ``export-2/``, ... is written.
Checkpoints load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from datamodules.errors import ConfigError, UserInputError
from datamodules.pipeline import MarketData
from experiments import export_formats, export_metadata, export_verify
from experiments.export_wrappers import Signature, agent_wrapper, forecaster_wrapper
from experiments.inference import sha256_file

log = logging.getLogger(__name__)

DEFAULTS = {
    "onnx_exporter": "dynamo",
    "onnx_opset": 18,
    "max_verify_samples": 2000,
    "tolerance": 1e-5,
}
PREFIX = {"forecaster": "net.", "ppo": "policy_net.", "dqn": "qnet."}


class ExportError(UserInputError):
    """A run folder that cannot be exported as given."""


def export_settings(cfg: DictConfig) -> dict:
    """``cfg.export`` over :data:`DEFAULTS` (a run from before export existed has none)."""
    given = OmegaConf.to_container(cfg.export, resolve=True) if cfg.get("export") else {}
    return {**DEFAULTS, **{k: v for k, v in given.items() if k in DEFAULTS}}


def best_checkpoint(run_dir: Path) -> Path:
    """The run's best checkpoint (forecasters ``epochNNN.ckpt`` by val/loss, agents
    ``best-iterNNNN.ckpt`` by val/score; the newest if several), else ``last.ckpt``."""
    folder = run_dir / "checkpoints"
    best = [p for p in folder.glob("*.ckpt") if p.name.startswith(("epoch", "best-iter"))]
    if best:
        return max(best, key=lambda p: p.stat().st_mtime)
    if (folder / "last.ckpt").exists():
        return folder / "last.ckpt"
    raise ExportError(
        f"No checkpoint to export in {folder}: expected best-iterNNNN.ckpt / epochNNN.ckpt or "
        "last.ckpt. Export a run folder that finished training (it holds checkpoints/)."
    )


def free_folder(run_dir: Path) -> Path:
    """``run_dir/export``, or the first of ``export-1``, ``export-2``, ... that does not exist."""
    folder = run_dir / "export"
    k = 0
    while folder.exists():
        k += 1
        folder = run_dir / f"export-{k}"
    return folder


def load_weights(net: nn.Module, ckpt: Path, prefix: str) -> nn.Module:
    """Load the ``prefix``-ed entries of a Lightning checkpoint's state_dict into ``net``
    (``weights_only=True``: plain tensors and containers only)."""
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not own:
        raise ExportError(
            f"Checkpoint {ckpt} has no '{prefix}*' weights; it is not a checkpoint of this "
            "run's model. Export the run folder it came from."
        )
    net.load_state_dict(own)
    return net.cpu().eval()


def _wrap(cfg: DictConfig, module, data: MarketData) -> tuple[nn.Module, Signature, dict, str]:
    """Copy the module's network, build its inference wrapper, signature, the family-specific
    metadata and the checkpoint prefix of its weights."""
    import copy

    if str(cfg.model.kind) == "forecaster":
        net = copy.deepcopy(module.net).cpu()
        wrapper, sig = forecaster_wrapper(
            net, data.window, net.input_size, net.num_assets, net.num_classes
        )
        extra = {
            "window": data.window,
            "network": type(net).__name__,
            "uses_age": "age" in sig.inputs,
        }
        return wrapper, sig, extra, PREFIX["forecaster"]
    algorithm = str(cfg.model.algorithm)
    env = module.env
    state_shape = module.net_cfg.state_shape if getattr(module, "recurrent", False) else None
    net = copy.deepcopy(module.qnet if algorithm == "dqn" else module.policy_net).cpu()
    num_actions = int(env.actions.num_actions)
    wrapper, sig = agent_wrapper(net, int(env.obs_dim), num_actions, algorithm, state_shape)
    extra = {
        "algorithm": algorithm,
        "window": int(env.episode.window),
        "obs_dim": int(env.obs_dim),
        "observation_names": env.observation_names(),
        "num_actions": num_actions,
        "action_map": {str(k): v for k, v in env.actions.table().items()},
        "action_meanings": env.action_meanings(),
        "recurrent": state_shape is not None,
        "state_shape": list(state_shape) if state_shape is not None else None,
    }
    return wrapper, sig, extra, PREFIX[algorithm]


def export_model(
    cfg: DictConfig, module, data: MarketData, run_dir: Path, config_yaml: str | None = None
) -> Path:
    """Export ``module`` (a ForecastModule or an agent built from ``cfg``) with the weights of
    the run's best checkpoint into a new export folder of ``run_dir``; return the folder.

    Raises :class:`~experiments.export_verify.ExportMismatchError` if a format does not
    reproduce the eager model on the test split."""
    started = time.perf_counter()
    settings = export_settings(cfg)
    run_dir = Path(run_dir)
    ckpt = best_checkpoint(run_dir)
    kind = str(cfg.model.kind)
    wrapper, sig, extra, prefix = _wrap(cfg, module, data)
    load_weights(wrapper.net, ckpt, prefix)
    wrapper.eval()
    if kind == "forecaster":
        from datamodules.windows import WindowDataModule

        task = cfg.model.task
        dm = WindowDataModule(
            data, int(task.num_classes), float(task.get("flat_threshold_bps", 0.0))
        )
        inputs = export_verify.forecaster_inputs(dm, sig, int(settings["max_verify_samples"]))
    else:
        env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
        inputs = export_verify.agent_inputs(
            wrapper, sig, data, env_cfg, int(settings["max_verify_samples"])
        )
    staging = run_dir / f".export-staging-{time.time_ns()}"
    staging.mkdir(parents=True)
    try:
        paths = export_formats.write_all(
            wrapper, sig, staging, str(settings["onnx_exporter"]), int(settings["onnx_opset"])
        )
        runners = {fmt: export_formats.load_runner(fmt, p) for fmt, p in paths.items()}
        diffs = export_verify.verify(
            runners,
            export_formats.eager_runner(wrapper),
            sig,
            inputs,
            float(settings["tolerance"]),
        )
        shutil.copy2(ckpt, staging / ckpt.name)
        if config_yaml is None:
            config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
        meta = {
            "format_version": export_metadata.FORMAT_VERSION,
            "kind": kind,
            "model": str(cfg.model.name),
            **export_metadata.market_metadata(
                data,
                str(cfg.data.bar_size),
                OmegaConf.to_container(cfg.data.get("features") or {}, resolve=True),
            ),
            **extra,
            "checkpoint": ckpt.name,
            "formats": {fmt: {"file": p.name, **sig.describe()} for fmt, p in paths.items()},
            "onnx": {
                "opset": int(settings["onnx_opset"]),
                "exporter": str(settings["onnx_exporter"]),
            },
            "verification": {
                "split": "test",
                "samples": int(len(inputs[0])),
                "tolerance": float(settings["tolerance"]),
                "max_abs_diff_scaled": diffs,
                "actions_identical": True,
            },
            "versions": export_metadata.package_versions(),
            "metrics": export_metadata.test_metrics(run_dir),
            **export_metadata.config_metadata(config_yaml),
            "files": {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.is_file()},
        }
        (staging / "metadata.json").write_text(json.dumps(meta, indent=2))
        folder = free_folder(run_dir)
        staging.rename(folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    log.info(
        "exported %s to %s in %.1f s (max diff %s)",
        cfg.model.name,
        folder,
        time.perf_counter() - started,
        ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()),
    )
    return folder


def export_trained(cfg: DictConfig, module, data: MarketData, run_dir: Path) -> Path:
    """End-of-run export of the module just trained (rank zero, after the report)."""
    keep = Path(run_dir) / "resolved_config.yaml"
    yaml = keep.read_text() if keep.exists() else None
    return export_model(cfg, module, data, run_dir, yaml)


def rebuild(cfg: DictConfig) -> tuple[object, MarketData]:
    """The run's untrained module and its market, re-composed from its resolved config."""
    from experiments.train import build_forecaster, expand_network, instantiate

    expand_network(cfg)
    data: MarketData = instantiate(cfg.data)
    if str(cfg.model.get("kind")) == "forecaster":
        module, _ = build_forecaster(cfg, data, Path("."))
        return module, data
    from experiments.agents import build_agent

    return build_agent(cfg, data, torch.device("cpu")), data


def export_run(run_dir: str | Path) -> Path:
    """Export a finished run folder (``resolved_config.yaml`` + ``checkpoints/``) into a new
    export folder; return it."""
    run_dir = Path(run_dir)
    config = run_dir / "resolved_config.yaml"
    if not run_dir.is_dir() or not config.is_file():
        raise ExportError(
            f"{run_dir} is not a run folder: it has no resolved_config.yaml. Give the folder a "
            "run wrote, e.g. outputs/runs/<date>/<time>_ppo."
        )
    cfg = OmegaConf.load(config)
    if cfg.get("model") is None or cfg.model.get("kind") not in ("forecaster", "agent"):
        raise ConfigError(
            f"{config} has no model.kind forecaster|agent; it is not a training run's config."
        )
    best_checkpoint(run_dir)  # refuse early, before building the market
    module, data = rebuild(cfg)
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
    try:
        folder = export_run(args.run_dir)
    except UserInputError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 2
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
