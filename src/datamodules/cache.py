"""On-disk cache of feature frames, keyed by a hash of everything that shaped them.

A file is trusted only if its sidecar names the same key and the bytes hash to the recorded
digest; anything else (stale, truncated, edited) is rebuilt. Writes are atomic (a private
temporary file, then a rename), so jobs sharing a cold cache may each build a file but never
read a half-written one; a frame is parsed from the very bytes that were hashed. The sidecar
also keeps a JSON-able record made with the frame (the data-quality numbers of the raw bars),
so a cache hit needs no raw bars.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import polars as pl

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # bump when feature code changes what a given config produces


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
    frame, _ = cached_build(directory, key, lambda: (build(), {}))
    return frame


def cached_build(
    directory: str | None, key: str, build: Callable[[], tuple[pl.DataFrame, dict]]
) -> tuple[pl.DataFrame, dict]:
    """The frame and the record for ``key``: from ``directory`` if intact, else ``build()``
    (a frame and a JSON-able dict) and stored. ``hit`` in the record says which it was."""
    if not directory:
        frame, record = build()
        return frame, {**record, "hit": False}
    folder = Path(directory)
    data_path = folder / f"{key}.parquet"
    meta_path = folder / f"{key}.json"
    if data_path.exists() and meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
            raw = data_path.read_bytes()  # parsed from these bytes: the ones that were hashed
            digest = hashlib.sha256(raw).hexdigest()
            if meta.get("key") == key and meta.get("sha256") == digest:
                return pl.read_parquet(io.BytesIO(raw)), {**meta.get("record", {}), "hit": True}
            log.warning("feature cache %s does not match its record; rebuilding it", data_path)
        except (OSError, ValueError, pl.exceptions.PolarsError) as err:
            log.warning("feature cache %s is unreadable (%s); rebuilding it", data_path, err)
    frame, record = build()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _atomic_write(data_path, lambda p: frame.write_parquet(p))
        digest = hashlib.sha256(data_path.read_bytes()).hexdigest()
        meta = {"key": key, "sha256": digest, "record": record}
        _atomic_write(meta_path, lambda p: Path(p).write_text(json.dumps(meta, default=str)))
    # A full disk included (polars reports it as a ComputeError): the cache is optional.
    except (OSError, pl.exceptions.PolarsError) as err:
        free = shutil.disk_usage(folder).free / 2**20 if folder.is_dir() else float("nan")
        log.warning(
            "could not write the feature cache %s (%s; %.1f MB free there); continuing without",
            data_path,
            err,
            free,
        )
    return frame, {**record, "hit": False}


def _atomic_write(path: Path, write: Callable[[str], object]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
