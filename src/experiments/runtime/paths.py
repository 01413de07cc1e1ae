"""The one "next free name" rule: nothing a user produced is ever overwritten."""

from __future__ import annotations

from pathlib import Path


def next_free(path: str | Path, *, keep_suffix: bool = False) -> Path:
    """``path`` if nothing is there, else the first of ``path-1``, ``path-2``, ... that is free.

    ``keep_suffix``: number before the file's suffix (``interrupted-1.ckpt``) instead of after
    the whole name (run folders such as ``10-15-30_lstm,model.optimizer.lr=0.001`` contain
    dots that are not suffixes)."""
    path = Path(path)
    candidate, n = path, 1
    while candidate.exists():
        if keep_suffix:
            candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        else:
            candidate = path.with_name(f"{path.name}-{n}")
        n += 1
    return candidate
