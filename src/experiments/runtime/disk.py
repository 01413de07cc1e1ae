"""A write that fails for lack of space: one paragraph naming the file and the free space.

A full disk (``ENOSPC``), a quota (``EDQUOT``) or a file-size limit (``EFBIG``, ``ulimit
-f``) fails a write with an ``OSError``; torch's checkpoint writer reports the same as a
``RuntimeError`` ("file write failed"), polars as a ``ComputeError`` ("os error 27").
:func:`is_disk_full` recognises them all (through the exception's causes), :class:`DiskFull` is the paragraph: which file, how much space is free on
its disk, any file-size limit in force, that the files written before are intact, and the
command that continues the run once there is space. The run's checkpoints are written beside
their final name and renamed (a failed one leaves the previous intact); a damaged one left by
a write outside our control is set aside at resume (:mod:`experiments.runtime.checkpoints`).

Light: no torch.
"""

from __future__ import annotations

import errno
import resource
import shutil
from contextlib import contextmanager
from pathlib import Path

from datamodules.errors import UserInputError

NO_SPACE = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
# What libraries that wrap the OS error in their own type say: torch's writer, polars' and
# pyarrow's ("... File too large (os error 27)").
_NO_SPACE_TEXT = (
    "No space left",
    "File too large",
    "Disk quota exceeded",
    *(f"os error {n}" for n in sorted(NO_SPACE)),
)
_TORCH_WRITE = "file write failed"


class DiskFull(UserInputError):
    """A write failed for lack of space; the message is the paragraph (see the module doc)."""


def _chain(err: BaseException):
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def is_disk_full(err: BaseException) -> bool:
    """True if ``err`` (or one of its causes) is a write that failed for lack of space."""
    for e in _chain(err):
        if isinstance(e, DiskFull):
            return True
        if isinstance(e, OSError) and e.errno in NO_SPACE:
            return True
        if isinstance(e, RuntimeError) and _TORCH_WRITE in str(e):
            return True
        if any(s in str(e) for s in _NO_SPACE_TEXT):
            return True
    return False


def human(n: float) -> str:
    """Bytes as ``12.3 MB``."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def free_space(path: str | Path) -> str:
    """``N GB free on the disk of PATH`` (and the file-size limit, if one is in force)."""
    where = Path(path).absolute()
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        text = f"{human(shutil.disk_usage(where).free)} free on the disk holding {where}"
    except OSError:
        text = f"the free space on the disk holding {where} is unknown"
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft != resource.RLIM_INFINITY:
        text += f", and a file-size limit (ulimit -f) of {human(soft)} is in force"
    return text


def failed_file(err: BaseException) -> str | None:
    """The file an ``OSError`` in ``err``'s chain names, if any (of a copy, the target)."""
    for e in _chain(err):
        if isinstance(e, DiskFull):
            return None
        if isinstance(e, OSError) and (e.filename2 or e.filename):
            return str(e.filename2 or e.filename)
    return None


def reason(err: BaseException) -> str:
    for e in _chain(err):
        if isinstance(e, OSError) and e.errno in NO_SPACE:
            return e.strerror or errno.errorcode.get(e.errno, "no space")
    return "the write failed"


def disk_full(err: BaseException, path: str | Path, then: str = "") -> DiskFull:
    """The :class:`DiskFull` paragraph for ``err``, a failed write of ``path`` (or of the file
    the error names); ``then`` says how to continue once there is space."""
    if isinstance(err, DiskFull):
        return err
    file = failed_file(err) or str(path)
    return DiskFull(
        f"Out of space while writing {file} ({reason(err)}): {free_space(file)}. The run "
        f"stopped; the files written before it are intact. {then}".strip()
    )


@contextmanager
def writing(path: str | Path, then: str = ""):
    """Around the writes of one file: a failure for lack of space becomes :class:`DiskFull`
    naming ``path`` (Python's errors of a failed ``write`` name no file)."""
    try:
        yield
    except Exception as err:
        if is_disk_full(err):
            raise disk_full(err, path, then) from err
        raise
