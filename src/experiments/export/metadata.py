"""What ``export/metadata.json`` records about a model beside its family's own entries: its
market, features and normalisation, training range, config, package versions and test metrics.
The bundle format version is :data:`experiments.inference.bundle.FORMAT_VERSION`."""

from __future__ import annotations

import hashlib
import json
from importlib import metadata as pkg_metadata
from pathlib import Path

import numpy as np

from datamodules.pipeline import MarketData


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages an export depends on (None if absent)."""
    out: dict[str, str | None] = {}
    for name in ("torch", "onnx", "onnxruntime", "onnxscript", "numpy", "trading-experiments"):
        try:
            out[name] = pkg_metadata.version(name)
        except pkg_metadata.PackageNotFoundError:
            out[name] = None
    return out


def _stamp(value: np.datetime64) -> str:
    return str(np.datetime64(value, "us"))


def market_metadata(data: MarketData, bar_size: str, features_cfg: dict) -> dict:
    """Tickers, bar size, feature names in order (per ticker and as the network's input
    columns), the normalisation fitted on the training split, and the training data: its
    envelope (``train_range``) and each span it holds (``train_spans``: one for a time split,
    CPCV's purged training groups for a CPCV fold, whose envelope spans its test groups too)."""
    m = data.market
    split = data.split
    start, stop = split.train
    return {
        "tickers": list(m.tickers),
        "bar_size": bar_size,
        "bar_minutes": m.bar_minutes,
        "feature_names": list(m.feature_names),
        "time_feature_names": list(m.time_feature_names),
        "input_feature_names": [f"{t}.{f}" for t in m.tickers for f in m.feature_names]
        + [f"calendar.{g}" for g in m.time_feature_names],
        "features_config": features_cfg,
        # z = (raw - mean) / std per (feature, ticker); calendar features are not normalised.
        "normalisation": m.normalisation,
        "train_range": {
            "first": _stamp(m.timestamps[start]),
            "last": _stamp(m.timestamps[stop - 1]),
        },
        "train_spans": [
            {"first": _stamp(m.timestamps[a]), "last": _stamp(m.timestamps[b - 1])}
            for a, b in split.spans("train")
        ],
        "split_bars": {"train": list(split.train), "test": list(split.test)},
        # [start, stop) bar indices of every span of each part (the envelopes above are these
        # when a part is one span).
        "split_spans": {
            part: [[int(a), int(b)] for a, b in split.spans(part)]
            for part in ("train", "val", "test")
        },
        "synthetic": m.synthetic,
        "source": m.source,
    }


def config_metadata(config_yaml: str) -> dict:
    """The resolved config (as YAML text) and its sha256."""
    return {
        "config_sha256": hashlib.sha256(config_yaml.encode()).hexdigest(),
        "config_yaml": config_yaml,
    }


def test_metrics(run_dir: Path) -> dict:
    """The run's test metrics (``metrics.json``: per strategy and baseline, and the logged
    scalars), or {} if the run wrote none."""
    path = run_dir / "metrics.json"
    if not path.exists():
        return {}
    saved = json.loads(path.read_text())
    return {"test": saved.get("test", {}), "logged": saved.get("logged", {})}
