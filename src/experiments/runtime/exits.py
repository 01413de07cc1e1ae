"""How every command ends: promptly, with its own status, whatever W&B's service process does.

W&B runs a helper process (``wandb-core``) that inherits the command's stdout and stderr. At
exit W&B's own hook asks it to stop and then waits for it without a time limit, so a helper
that is busy (retrying a server that does not answer) or stuck keeps the command from
exiting; and while it lives it holds the command's output pipe open, so ``cmd | tee log``
(or a test reading the pipe) never sees the end even after the command printed its error.

:func:`run_command` runs a command's ``main`` and then ends the process itself: it flushes
the output, asks W&B's service to stop and waits at most :data:`SERVICE_STOP_S` seconds,
kills the service's process group if it is still there (after ``wandb.finish`` its data is
already on disk), and exits with the status ``main`` gave. A watchdog turns any exit hook
that still blocks after :data:`EXIT_GRACE_S` seconds into an immediate exit with that status.

Light: importing this module imports neither torch nor wandb.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import NoReturn

SERVICE_STOP_S = 10.0  # seconds W&B's service gets to stop before it is killed
ERROR_STOP_S = 3.0  # the same after an error: the command's message is already printed
EXIT_GRACE_S = 15.0  # seconds the remaining exit hooks get before the process exits anyway


def wandb_service():
    """The ``subprocess.Popen`` of the W&B service this process started, or None (W&B never
    imported, no service, or one inherited from a parent process)."""
    setup = sys.modules.get("wandb.sdk.wandb_setup")
    singleton = getattr(setup, "_singleton", None)
    if singleton is None or getattr(singleton, "_pid", None) != os.getpid():
        return None
    connection = getattr(singleton, "_connection", None)
    service = getattr(connection, "_proc", None)
    return getattr(service, "_process", None)


def stop_wandb_service(timeout: float = SERVICE_STOP_S, notice: bool = True) -> bool:
    """Stop the W&B service this process started: W&B's own teardown, for at most ``timeout``
    seconds, then SIGKILL to its process group. True if a service had to be killed; with
    ``notice``, a line on stderr says so (off after an error, whose one paragraph stays the
    only thing printed)."""
    proc = wandb_service()
    if proc is None or proc.poll() is not None:
        return False

    def teardown() -> None:
        try:
            import wandb

            wandb.teardown()
        except Exception:  # noqa: BLE001 - a failing teardown is handled by the kill below
            pass

    worker = threading.Thread(target=teardown, name="stop-wandb-service", daemon=True)
    worker.start()
    worker.join(timeout)
    if proc.poll() is not None:
        return False
    try:
        # wandb-core starts its own session (start_new_session), so its group is its own.
        if os.getpgid(proc.pid) == proc.pid and proc.pid != os.getpgrp():
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        proc.wait(timeout=5)
    except (ProcessLookupError, PermissionError, OSError):
        pass
    except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired: nothing more to do
        pass
    if notice:
        print(
            f"W&B's service process (pid {proc.pid}) did not stop within {timeout:.0f} s of the "
            "end of the command and was killed; the runs were finished before it.",
            file=sys.stderr,
            flush=True,
        )
    return True


def _status(code: object) -> int:
    """The exit status of ``SystemExit(code)``, as Python gives it."""
    if code is None:
        return 0
    if isinstance(code, bool):
        return int(code)
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()


def end_process(status: int) -> NoReturn:
    """Flush, stop W&B's service (bounded: :data:`SERVICE_STOP_S`, or :data:`ERROR_STOP_S`
    and silently when ``status`` is not 0), arm the watchdog and exit with ``status``."""
    _flush()
    if status == 0:
        stop_wandb_service(SERVICE_STOP_S)
    else:
        stop_wandb_service(ERROR_STOP_S, notice=False)
    _flush()

    def watchdog() -> None:
        threading.Event().wait(EXIT_GRACE_S)
        _flush()
        os._exit(status)

    threading.Thread(target=watchdog, name="exit-watchdog", daemon=True).start()
    sys.exit(status)


def run_command(main: Callable[[], object]) -> NoReturn:
    """Run a command's ``main`` (returning an exit status or None, or calling ``sys.exit``)
    and end the process promptly with that status (see the module doc)."""
    try:
        result = main()
        status = result if isinstance(result, int) and not isinstance(result, bool) else 0
    except SystemExit as done:
        status = _status(done.code)
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        status = 130
    except BaseException:  # noqa: BLE001 - a bug: its traceback, then the same prompt exit
        traceback.print_exc()
        status = 1
    end_process(status)
