"""An export bundle on disk: ``metadata.json`` and the files it lists, each checked against the
sha256 recorded at export. The one definition of the bundle format version."""

from __future__ import annotations

import hashlib
import json
import re
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


ARTIFACT_SCHEME = "wandb-artifact://"
ARTIFACT_REF = re.compile(r"^wandb-artifact:/+(?P<ref>[^/:]+/[^/:]+/[^/:]+:[^/:]+)$")
API_TIMEOUT_S = 30  # seconds W&B's API may take per request when downloading an artifact


def resolve_bundle(path: str | Path) -> Path:
    """The local folder of a bundle: ``path`` itself (an export folder, or the folder a model
    artifact was downloaded to), or for ``wandb-artifact://ENTITY/PROJECT/NAME:ALIAS`` the
    model artifact downloaded through W&B's API (online; where W&B puts downloads,
    ``./artifacts/NAME:VERSION`` unless ``WANDB_ARTIFACT_DIR`` says otherwise)."""
    text = str(path)
    if not text.startswith("wandb-artifact:"):
        return Path(path)
    match = ARTIFACT_REF.match(text)
    if match is None:
        raise BundleError(
            f"{text} is not a model artifact path: write wandb-artifact://ENTITY/PROJECT/"
            "NAME:ALIAS (e.g. wandb-artifact://my-team/trading-experiments/my-model:best), or give "
            "the folder the artifact was downloaded to."
        )
    ref = match["ref"]
    try:
        import wandb

        artifact = wandb.Api(timeout=API_TIMEOUT_S).artifact(ref, type="model")
        return Path(artifact.download())
    except Exception as err:  # W&B raises many kinds: no key, no network, no such artifact
        why = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BundleError(
            f"Could not download the model artifact {ref} from W&B ({type(err).__name__}: "
            f"{why}). Check the name and alias, that you are logged in (wandb login) and "
            "online, or download it yourself (wandb artifact get ENTITY/PROJECT/NAME:ALIAS) "
            "and give the folder it was downloaded to."
        ) from None


def read_bundle(folder: str | Path, kind: str) -> tuple[Path, dict]:
    """``metadata.json`` of an export folder of ``kind`` (forecaster | agent), after checking
    each file listed there against its recorded sha256. ``folder`` may also be a downloaded
    model artifact or a ``wandb-artifact://`` path (:func:`resolve_bundle`)."""
    folder = resolve_bundle(folder)
    meta_path = folder / "metadata.json"
    if not meta_path.is_file():
        raise BundleError(
            f"{folder} is not an export bundle: it has no metadata.json. Give the export/ folder "
            "of a run (python -m experiments.export RUN_DIR writes one)."
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise BundleError(
            f"{meta_path} is damaged ({type(err).__name__}: {err}): it is not the JSON the "
            "export wrote. Copy the whole export folder again, or re-export the run (python -m "
            "experiments.export RUN_DIR)."
        ) from None
    if not isinstance(meta, dict):
        raise BundleError(
            f"{meta_path} is damaged: it holds no metadata object. Re-export the run."
        )
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
