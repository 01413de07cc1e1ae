"""What a run keeps as logger artifacts, so that lineage data -> run -> model shows in W&B.

- The market data as a ``dataset`` artifact named ``market-<feature-cache key>`` (the key
  identifies the raw bars and the features by content, so two runs on the same data use the
  same artifact): ``dataset.json`` (fingerprint, tickers, bar size, bars, first and last bar,
  split spans, feature names), the run's ``data_quality.json`` and, when small or asked for
  (``logger.dataset_bars``), the raw OHLCV bars as ``bars.parquet``. The run *uses* it.
- The verified export bundle as a ``model`` artifact named after the run (its name as the
  logger shows it, with characters W&B refuses replaced by ``-``), aliases ``latest`` and
  ``best``, metadata = ``metadata.json``. The run *logs* it. A curriculum phase logs its own
  and uses the previous phase's (the same files under the same name, which W&B resolves to
  the version that phase logged).

Offline, both are queued in the run's files and go up with ``wandb sync``. A logger without
the artifact methods of :class:`experiments.run.tracking.RunLogger` logs none; ``logger=none``
keeps only the files in the run folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

from datamodules.pipeline import MarketData

log = logging.getLogger(__name__)

DATASET_FOLDER = "dataset"  # in the run folder: what the dataset artifact holds beside quality
MODEL_RECORD = "model_artifact.json"  # in the run folder: the model artifact the run logged
MAX_NAME = 128  # W&B's limit on artifact names
BARS_AUTO_ROWS = 500_000  # dataset_bars=auto: attach the bars up to this many bar x ticker rows


def artifact_name(text: str) -> str:
    """``text`` with every run of characters W&B artifact names refuse replaced by ``-``; a
    name longer than W&B's 128 characters keeps its first 110 and a hash of the whole."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).strip("-.") or "run"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    return f"{name[:110].rstrip('-.')}-{digest}"


def dataset_artifact(
    data: MarketData, out: Path, bars: bool | str = "auto"
) -> tuple[str, dict[str, Path], dict]:
    """``(name, files, metadata)`` of the run's dataset artifact, writing ``dataset/`` in the
    run folder ``out``. ``bars``: True, False or ``auto`` (attach up to
    :data:`BARS_AUTO_ROWS` rows)."""
    import numpy as np

    market = data.market
    key = data.cache_key or "unkeyed"
    rows = market.num_bars * market.num_assets
    attach = bool(bars) if bars != "auto" else rows <= BARS_AUTO_ROWS
    times = np.asarray(market.timestamps)
    meta = {
        "fingerprint": key,
        "tickers": list(market.tickers),
        "source": market.source,
        "synthetic": bool(market.synthetic),
        "bar_minutes": float(market.bar_minutes),
        "bars": int(market.num_bars),
        "first_bar": str(times[0]) if len(times) else None,
        "last_bar": str(times[-1]) if len(times) else None,
        "split": {part: list(getattr(data.split, part)) for part in ("train", "val", "test")},
        "features": list(market.feature_names),
        "quality": (data.quality or {}).get("status"),
        "bars_included": attach,
    }
    folder = Path(out) / DATASET_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset.json").write_text(json.dumps(meta, indent=2))
    files = {"dataset.json": folder / "dataset.json"}
    if (Path(out) / "data_quality.json").is_file():
        files["data_quality.json"] = Path(out) / "data_quality.json"
    if attach:
        files["bars.parquet"] = write_bars(data, folder / "bars.parquet")
    return f"market-{key}", files, meta


def write_bars(data: MarketData, path: Path) -> Path:
    """The raw OHLCV bars of the market as a long parquet frame (ticker, timestamp, ...)."""
    import numpy as np
    import polars as pl

    m = data.market
    parts = [
        pl.DataFrame(
            {
                "ticker": [t] * m.num_bars,
                "timestamp": np.asarray(m.timestamps),
                **{c: getattr(m, c)[:, j] for c in ("open", "high", "low", "close", "volume")},
            }
        )
        for j, t in enumerate(m.tickers)
    ]
    pl.concat(parts).write_parquet(path)
    return path


def model_metadata(export: Path) -> dict:
    return json.loads((Path(export) / "metadata.json").read_text())


def track_inputs(
    logger, data: MarketData, out: Path, phase=None, bars: bool | str = "auto"
) -> None:
    """Mark the run's inputs: the dataset artifact and, in a curriculum phase after the first,
    the previous phase's model artifact."""
    if logger is None or not callable(getattr(logger, "use_dataset_artifact", None)):
        return
    name, files, meta = dataset_artifact(data, out, getattr(logger, "dataset_bars", bars))
    logger.use_dataset_artifact(name, files, meta)
    previous = previous_model(phase)
    if previous is not None and callable(getattr(logger, "use_model_artifact", None)):
        logger.use_model_artifact(previous["name"], Path(previous["export"]))


def track_model(logger, export: Path, out: Path, name: str) -> None:
    """Log the verified bundle in ``export`` as the run's model artifact (aliases latest and
    best), record it in ``out/model_artifact.json`` for the next curriculum phase, and log
    ``report.html`` again now that it shows the export's deployment gate."""
    if logger is None:
        return
    if (Path(out) / "report.html").is_file():
        from experiments.run.tracking import log_html

        log_html(logger, "report", Path(out) / "report.html")
    if not callable(getattr(logger, "log_model_artifact", None)):
        return
    name = artifact_name(name)
    logger.log_model_artifact(name, Path(export), model_metadata(export), ["latest", "best"])
    record = {"name": name, "export": str(Path(export).resolve())}
    (Path(out) / MODEL_RECORD).write_text(json.dumps(record, indent=2))


def previous_model(phase) -> dict | None:
    """The model artifact the previous curriculum phase logged (its ``model_artifact.json``),
    or None (no phase, the first phase, or the previous one logged none)."""
    if phase is None or int(getattr(phase, "index", 0)) == 0:
        return None
    state_file = Path(phase.root) / "curriculum.json"
    try:
        state = json.loads(state_file.read_text())
        folder = Path(phase.root) / state["phases"][phase.index - 1]["folder"]
        record = json.loads((folder / MODEL_RECORD).read_text())
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None
    return record if Path(record.get("export", "")).is_dir() else None
