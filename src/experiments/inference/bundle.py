"""An export bundle on disk: ``metadata.json`` and the files it lists, each checked against the
sha256 recorded at export. The one definition of the bundle format version."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from datamodules.errors import UserInputError

FORMAT_VERSION = 1


class BundleError(UserInputError):
    """An export folder that is missing, incomplete, changed after export, or of another kind."""


class InputShapeError(UserInputError):
    """Input whose shape, dtype or feature names do not match the bundle's metadata."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes (recorded per file in metadata.json at export)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_bundle(folder: str | Path, kind: str) -> tuple[Path, dict]:
    """``metadata.json`` of an export folder of ``kind`` (forecaster | agent), after checking
    each file listed there against its recorded sha256."""
    folder = Path(folder)
    meta_path = folder / "metadata.json"
    if not meta_path.is_file():
        raise BundleError(
            f"{folder} is not an export bundle: it has no metadata.json. Give the export/ folder "
            "of a run (python -m experiments.export RUN_DIR writes one)."
        )
    meta = json.loads(meta_path.read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{meta_path} has format_version {meta.get('format_version')}; this code reads "
            f"{FORMAT_VERSION}. Re-export the run with this version of the project."
        )
    if meta.get("kind") != kind:
        other = "Forecaster" if meta.get("kind") == "forecaster" else "Policy"
        raise BundleError(
            f"{folder} holds a {meta.get('kind')} ({meta.get('model')}), not a {kind}; load it "
            f"with {other}.load."
        )
    for name, digest in (meta.get("files") or {}).items():
        path = folder / name
        if not path.is_file():
            raise BundleError(
                f"{folder} is incomplete: {name} (listed in metadata.json) is missing. Copy the "
                "whole export folder, or re-export the run."
            )
        if sha256_file(path) != digest:
            raise BundleError(
                f"{path} does not match the sha256 recorded in metadata.json at export: the "
                "bundle was changed after export. Re-export the run (python -m "
                "experiments.export RUN_DIR) rather than editing its files."
            )
    return folder, meta
