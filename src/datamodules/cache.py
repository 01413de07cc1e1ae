"""On-disk cache of feature frames, keyed by a hash of everything that shaped them.

A file is trusted only if its sidecar names the same key and the bytes hash to the recorded
digest; anything else (stale, truncated, edited) is rebuilt. Writes are atomic.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import polars as pl

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when feature code changes what a given config produces


def cache_key(payload: dict) -> str:
    """Stable hash of a JSON-able description of the data config and its input files."""
    text = json.dumps({"v": CACHE_VERSION, **payload}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def file_fingerprint(path: str) -> dict:
    """Size and modification time of an input file, so an edited file changes the key."""
    stat = Path(path).stat()
    return {"path": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def cached_frame(
    directory: str | None, key: str, build: Callable[[], pl.DataFrame]
) -> pl.DataFrame:
    """Load the frame for ``key`` from ``directory`` if it is intact, else build and store it."""
    if not directory:
        return build()
    folder = Path(directory)
    data_path = folder / f"{key}.parquet"
    meta_path = folder / f"{key}.json"
    if data_path.exists() and meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
            digest = hashlib.sha256(data_path.read_bytes()).hexdigest()
            if meta.get("key") == key and meta.get("sha256") == digest:
                return pl.read_parquet(data_path)
            log.warning("feature cache %s does not match its record; rebuilding it", data_path)
        except (OSError, ValueError, pl.exceptions.PolarsError) as err:
            log.warning("feature cache %s is unreadable (%s); rebuilding it", data_path, err)
    frame = build()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _atomic_write(data_path, lambda p: frame.write_parquet(p))
        digest = hashlib.sha256(data_path.read_bytes()).hexdigest()
        _atomic_write(
            meta_path, lambda p: Path(p).write_text(json.dumps({"key": key, "sha256": digest}))
        )
    except OSError as err:
        log.warning("could not write the feature cache in %s (%s); continuing without", folder, err)
    return frame


def _atomic_write(path: Path, write: Callable[[str], object]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
