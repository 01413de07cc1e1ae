"""``python -m experiments ...`` for tests, as a separate process that skips the imports.

Each command of the app a test runs is its own process with its own exit status, stdout and
stderr, as a user's is; what it does not repeat is the import of torch, Lightning, TorchRL,
W&B and the rest, a few seconds of every run on a small machine and most of a failing one.
One *warm* interpreter per test process imports the app's modules once (and runs nothing),
then forks a child per command; the child takes the command's environment, working folder,
``PYTHONPATH`` and standard streams, and runs the module as ``python -m`` does
(``runpy.run_module`` as ``__main__``), so its ``__main__`` and everything after it are the
app's own code, from the collector's pause onwards.

What a warm child shares with its siblings, unlike fresh interpreters: the hash seed, the
state the imports left (nothing ran) and the modules already imported (a ``PYTHONPATH``
entry cannot shadow one of them). Tests whose point is the interpreter's start (imports, the
garbage collector at start-up, the same results from two fresh processes) pass
``fresh=True`` to get a plain subprocess, and so does every command when the environment sets
``TESTS_FRESH_PROCESSES``; commands other than ``python -m experiments...`` always get one.

The protocol, over a socket pair: the test sends a JSON request (argv, env, cwd) with the
three file descriptors for the child's stdin, stdout and stderr; the warm interpreter answers
the child's pid, then its wait status. The warm interpreter ends when the test process does
(its socket reaches end of file)."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

# What the warm interpreter imports: every module of the app's packages (but their __main__)
# and the libraries the app imports only once it runs (W&B's run, the bootstrap's arch,
# export's ONNX, the reports' matplotlib backends): a second or two of each tiny run. Not
# onnxruntime, whose import starts a thread (a fork keeps only the forking one).
WARM_PACKAGES = ("datamodules", "envs", "modules", "experiments")
WARM_LIBRARIES = (
    "hydra",
    "wandb",
    "wandb.sdk.wandb_init",
    "arch.bootstrap",
    "torch.onnx",
    "onnx",
    "onnxscript",
    "matplotlib.backends.backend_agg",
    "matplotlib.backends.backend_svg",
)
WARM_PREFIX = "experiments"  # the modules (``python -m``) a warm child runs
FRESH_VARIABLE = "TESTS_FRESH_PROCESSES"  # set (to anything): every command in a new interpreter


def _send(sock: socket.socket, payload: dict, fds: list[int] = ()) -> None:
    data = json.dumps(payload).encode()
    message = struct.pack("!I", len(data)) + data
    if fds:
        socket.send_fds(sock, [message], list(fds))
    else:
        sock.sendall(message)


def _recv(sock: socket.socket, with_fds: int = 0) -> tuple[dict | None, list[int]]:
    """One message (None at end of file) and the file descriptors that came with it."""
    fds: list[int] = []
    head = b""
    if with_fds:
        head, fds, _, _ = socket.recv_fds(sock, 4, with_fds)
    while len(head) < 4:
        chunk = sock.recv(4 - len(head))
        if not chunk:
            return None, fds
        head += chunk
    (size,) = struct.unpack("!I", head)
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None, fds
        data += chunk
    return json.loads(data), fds


# ------------------------------------------------------------------ the warm interpreter
def _child(request: dict, fds: list[int]) -> None:
    """In the forked child: become the requested command, then run it as ``python -m``."""
    import runpy

    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    # sys.path as `python -m` builds it: the working folder, then PYTHONPATH, then the rest.
    extra = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = [request["cwd"], *extra, *sys.path[1:]]
    sys.argv = [request["argv"][0], *request["argv"][2:]]
    _new_process_state()
    runpy.run_module(request["argv"][1], run_name="__main__", alter_sys=True)
    sys.exit(0)


def _new_process_state() -> None:
    """What the imports made once that a new process makes for itself: the temporary folder
    (``TMPDIR`` is read again), W&B's folder for media files (each process removes its own at
    exit) and numpy's global random state (drawn from the OS, as at import). Python's
    ``random`` and W&B's run ids are reseeded at fork by the libraries themselves."""
    import tempfile

    import numpy as np
    from wandb.sdk.data_types import _private

    tempfile.tempdir = None
    _private.MEDIA_TMP.name = tempfile.mkdtemp("wandb-media")
    np.random.seed()


def serve(sock: socket.socket) -> None:
    """The warm interpreter's loop: one forked child per request, one at a time."""
    while True:
        request, fds = _recv(sock, with_fds=3)
        if request is None:
            return
        pid = os.fork()
        if pid == 0:
            sock.close()
            _child(request, fds)  # never returns: the child exits as the command does
        for fd in fds:
            os.close(fd)
        _send(sock, {"pid": pid})
        _, status = os.waitpid(pid, 0)
        _send(sock, {"status": os.waitstatus_to_exitcode(status)})


def _warm_modules() -> list[str]:
    import importlib
    import pkgutil

    names = []
    for top in WARM_PACKAGES:
        package = importlib.import_module(top)
        for info in pkgutil.walk_packages(package.__path__, f"{top}."):
            if not info.name.endswith(".__main__"):
                names.append(info.name)
    return [*names, *WARM_LIBRARIES]


def _warm_main() -> None:
    import gc
    import importlib

    sys.path[0] = os.getcwd()  # not this file's folder, whose helpers would shadow the app's
    fd = int(sys.argv[1])
    sock = socket.socket(fileno=fd)
    gc.disable()  # the imports below, as the app's commands do (experiments.runtime.collection)
    for name in _warm_modules():
        importlib.import_module(name)
    gc.freeze()
    gc.enable()
    _send(sock, {"ready": True})
    serve(sock)


# ------------------------------------------------------------------ the test's side
class _Warm:
    """The test process's warm interpreter, started on first use."""

    lock = threading.Lock()
    proc: subprocess.Popen | None = None
    sock: socket.socket | None = None

    @classmethod
    def socket(cls) -> socket.socket:
        if cls.proc is None or cls.proc.poll() is not None:
            ours, theirs = socket.socketpair()
            cls.proc = subprocess.Popen(
                [sys.executable, __file__, str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
            )
            theirs.close()
            cls.sock = ours
            ready, _ = _recv(ours)
            if not ready:
                raise RuntimeError("the warm interpreter did not start (see its stderr above)")
        return cls.sock


def run(
    cmd: list[str],
    *,
    env: dict | None = None,
    timeout: float | None = None,
    cwd: str | Path | None = None,
    stdin: int | None = None,
    fresh: bool = False,
) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True, text=True, ...)``, in a warm child when
    ``cmd`` is ``[sys.executable, "-m", "experiments...", ...]`` and not ``fresh``."""
    warm = (
        not fresh
        and not os.environ.get(FRESH_VARIABLE)
        and stdin in (None, subprocess.DEVNULL)
        and len(cmd) >= 3
        and cmd[0] == sys.executable
        and cmd[1] == "-m"
        and cmd[2].split(".")[0] == WARM_PREFIX
    )
    if not warm:
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd, stdin=stdin
        )
    request = {
        "argv": [str(Path(sys.executable)), *cmd[2:]],
        "env": dict(os.environ if env is None else env),
        "cwd": str(Path(cwd or os.getcwd()).resolve()),
    }
    with (
        _Warm.lock,
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        open(os.devnull, "rb") as null,
    ):
        sock = _Warm.socket()
        sock.settimeout(None)
        _send(sock, request, [null.fileno(), out.fileno(), err.fileno()])
        started, _ = _recv(sock)
        if started is None:
            raise RuntimeError("the warm interpreter ended before starting the command")
        sock.settimeout(timeout)
        try:
            done, _ = _recv(sock)
        except TimeoutError:
            os.kill(started["pid"], signal.SIGKILL)
            sock.settimeout(None)
            _recv(sock)  # its status
            raise subprocess.TimeoutExpired(cmd, timeout, *_read(out, err)) from None
        if done is None:
            raise RuntimeError("the warm interpreter ended while the command ran")
        return subprocess.CompletedProcess(cmd, done["status"], *_read(out, err))


def _read(*files) -> tuple[str, ...]:
    """The files' text as ``subprocess.run(..., text=True)`` gives a pipe's: decoded in the
    locale's encoding, with universal newlines (``\r\n`` and ``\r`` read as ``\n``)."""
    import locale

    encoding = locale.getpreferredencoding(False)
    texts = []
    for f in files:
        f.seek(0)
        text = f.read().decode(encoding)
        texts.append(text.replace("\r\n", "\n").replace("\r", "\n"))
    return tuple(texts)


if __name__ == "__main__":
    _warm_main()
