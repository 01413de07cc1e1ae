"""A throwaway PostgreSQL server on a free local port, for the tests and for ``.ci/run``.

``initdb`` into a temporary folder (password authentication, scram-sha-256, a random password
for the superuser ``bars``), then ``pg_ctl start`` listening on 127.0.0.1 only, its socket in
that folder. PostgreSQL refuses to run as root, so as root both run as the unprivileged user
``nobody`` (through ``runuser``) in a folder it owns. ``stop`` stops the server and removes
the folder.

As a script (what ``.ci/run`` does)::

    eval "$(python tests/helpers/postgres.py start)"   # exports TEST_POSTGRES_URI, TEST_POSTGRES_DIR
    python tests/helpers/postgres.py stop "$TEST_POSTGRES_DIR"

The tests use the server named by ``TEST_POSTGRES_URI`` when it is set, else start their own
(see ``tests/conftest.py``).
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

USER = "bars"
ENV_URI = "TEST_POSTGRES_URI"
ENV_DIR = "TEST_POSTGRES_DIR"
UNPRIVILEGED = "nobody"


class Unavailable(RuntimeError):
    """No PostgreSQL server can be started here (no binaries, or they fail)."""


@dataclass(frozen=True)
class Server:
    """A running server: ``uri`` with the superuser's password, and its parts."""

    uri: str
    folder: Path | None = None  # None: a server this process did not start

    @property
    def password(self) -> str:
        return urlsplit(self.uri).password or ""

    @property
    def port(self) -> int:
        return int(urlsplit(self.uri).port or 5432)

    def database_uri(self, database: str, password: str | None = None) -> str:
        """The URI of another database on this server (and another password, if given)."""
        parts = urlsplit(self.uri)
        secret = self.password if password is None else password
        auth = f"{parts.username}:{secret}@" if secret else f"{parts.username}@"
        return f"postgresql://{auth}{parts.hostname}:{self.port}/{database}"

    def stop(self) -> None:
        if self.folder is not None:
            stop(self.folder)


def binaries() -> Path:
    """The folder of initdb and pg_ctl: $PG_BIN, the newest /usr/lib/postgresql/*/bin, or PATH."""
    candidates = [os.environ.get("PG_BIN", "")]
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True
    )
    found = shutil.which("initdb")
    candidates.append(str(Path(found).parent) if found else "")
    for folder in candidates:
        if folder and (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    raise Unavailable(
        "no PostgreSQL server binaries (initdb, pg_ctl): install Debian's postgresql package "
        "(apt-get install postgresql) or set PG_BIN"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_owner(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    return [runuser, "-u", UNPRIVILEGED, "--", *cmd]


def _run(cmd: list[str], what: str, timeout: float = 120) -> None:
    done = subprocess.run(_as_owner(cmd), capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise Unavailable(f"{what} failed: {' | '.join(tail)}")


def start() -> Server:
    """Start a fresh server; :class:`Unavailable` when it cannot be."""
    bin_dir = binaries()
    folder = Path(tempfile.mkdtemp(prefix="test-postgres-"))
    try:
        if os.geteuid() == 0:
            shutil.chown(folder, UNPRIVILEGED)
        password = secrets.token_hex(12)
        pwfile = folder / "pwfile"
        pwfile.write_text(password + "\n")
        if os.geteuid() == 0:
            shutil.chown(pwfile, UNPRIVILEGED)
        data = folder / "data"
        _run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                USER,
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "-E",
                "UTF8",
                "--no-locale",
            ],
            "initdb",
        )
        pwfile.unlink()
        port = free_port()
        options = (
            f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={folder} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=40"
        )
        _run(
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(folder / "server.log"),
                "-w",
                "-t",
                "60",
                "start",
            ],
            "pg_ctl start",
        )
    except (Unavailable, OSError, subprocess.SubprocessError) as err:
        shutil.rmtree(folder, ignore_errors=True)
        raise err if isinstance(err, Unavailable) else Unavailable(str(err)) from err
    return Server(uri=f"postgresql://{USER}:{password}@127.0.0.1:{port}/postgres", folder=folder)


def stop(folder: str | Path) -> None:
    """Stop the server started in ``folder`` and remove the folder."""
    folder = Path(folder)
    data = folder / "data"
    if (data / "postmaster.pid").exists():
        try:
            _run([str(binaries() / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], "stop")
        except Unavailable as err:
            print(f"postgres: {err}", file=sys.stderr)
    shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str]) -> int:
    if argv[:1] == ["start"]:
        try:
            server = start()
        except Unavailable as err:
            print(f"echo 'PostgreSQL for the tests: {err}' >&2; false")
            return 1
        print(f"export {ENV_URI}='{server.uri}' {ENV_DIR}='{server.folder}'")
        return 0
    if argv[:1] == ["stop"] and len(argv) == 2:
        stop(argv[1])
        return 0
    print("usage: postgres.py start | stop FOLDER", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
