"""Database URIs (``data.uri``, ``--to``): which database, where, and who; and the masking that
keeps passwords out of everything a run saves or logs.

Two kinds, chosen by the scheme:

- ``duckdb:///PATH``: a DuckDB file, embedded (no server). Three slashes and a relative path
  (``duckdb:///outputs/market.duckdb``, from the folder the command runs in) or four and an
  absolute one (``duckdb:////data/market.duckdb``), as SQLAlchemy writes SQLite URLs.
- ``postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?key=value...]`` (or ``postgres://``; a
  SQLAlchemy driver suffix such as ``postgresql+psycopg2://`` is dropped): a PostgreSQL
  server, and so TimescaleDB. libpq reads what the URI leaves out from its environment
  variables (PGPASSWORD, PGUSER, PGHOST, PGPORT...) and the password file (``~/.pgpass`` or
  PGPASSFILE), so a password need never be written in the config.

A password is never shown: :func:`mask_credentials` replaces it with ``***`` in any text, and
:func:`mask_secrets` in any config tree. A URI whose password is ``***`` (read back from a saved
config) connects without it, so libpq falls back to PGPASSWORD or the password file. Light:
the standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlencode

from datamodules.errors import ConfigError

MASK = "***"
SUPPORTED = (
    "duckdb:///PATH (a DuckDB file; duckdb:////ABSOLUTE/PATH)",
    "postgresql://USER@HOST:PORT/DATABASE (PostgreSQL or TimescaleDB; postgres:// too)",
)
CONNECT_TIMEOUT_S = (
    10  # libpq's connect_timeout when the URI sets none: an unreachable host fails fast
)

# scheme://user:PASSWORD@ - the password runs to the last @ before the host (raw @ included);
# Hydra escapes the colons of a multirun's overrides (postgresql\://user\:PASSWORD@).
_URI_PASSWORD = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*\\?://[^\s:/@?#\\]*\\?:)[^\s/]*(?=@)"
)
# password=... in a URI's query string or a libpq key=value string.
_KEY_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?:'[^']*'|[^\s&;,]*)", re.IGNORECASE)


def mask_credentials(text: str) -> str:
    """``text`` with every password of a URI (``scheme://user:PASSWORD@host``) and every
    ``password=...`` value replaced by ``***``."""
    text = _URI_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    return _KEY_PASSWORD.sub(lambda m: m.group("head") + MASK, text)


def mask_secrets(value: object) -> object:
    """A copy of a plain config tree (dicts, lists, strings...) with :func:`mask_credentials`
    applied to every string."""
    if isinstance(value, str):
        return mask_credentials(value)
    if isinstance(value, Mapping):
        return {k: mask_secrets(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(mask_secrets(v) for v in value)
    return value


@dataclass(frozen=True)
class DatabaseURI:
    """A parsed ``data.uri``: ``kind`` (duckdb or postgresql), and for DuckDB the file
    ``path``; for PostgreSQL the ``host``, ``port``, ``user``, ``database`` (None where the
    URI leaves them to libpq) and whether it carries a password."""

    text: str
    kind: Literal["duckdb", "postgresql"]
    path: Path | None = None
    host: str | None = None
    port: str | None = None
    user: str | None = None
    database: str | None = None
    has_password: bool = False
    masked_password: bool = False  # the password is *** (a saved config): libpq finds it elsewhere
    query: tuple[tuple[str, str], ...] = ()

    def masked(self) -> str:
        """The URI as given, its password (if any) shown as ``***``."""
        return mask_credentials(self.text)

    def without_password(self) -> str:
        """The URI as given less its password (the user kept): safe to print as a command."""
        if not self.has_password:
            return self.text
        scheme, rest = self.text.split("://", 1)
        rest = re.sub(r"^([^/@]*?):[^/]*@", r"\1@", rest, count=1)
        rest = re.sub(r"([?&])password=[^&]*(&|$)", r"\1", rest, flags=re.IGNORECASE)
        return f"{scheme}://{rest.rstrip('?&')}"

    def without_credentials(self) -> str:
        """The URI without user and password (what the feature cache key holds)."""
        if self.kind == "duckdb":
            return f"duckdb:///{self.path.resolve()}"
        netloc = self.host or ""
        if self.port:
            netloc += f":{self.port}"
        query = [(k, v) for k, v in self.query if k.lower() not in ("password", "user")]
        tail = f"?{urlencode(query)}" if query else ""
        return f"postgresql://{netloc}/{self.database or ''}{tail}"

    def libpq(self) -> str:
        """The URI handed to libpq: the scheme ``postgresql``, the masked password dropped,
        and ``connect_timeout`` added when the URI sets none."""
        assert self.kind == "postgresql"
        rest = self.text.split("://", 1)[1]
        if self.masked_password:  # *** is no password: let libpq find the real one
            rest = re.sub(r"^([^/@]*?):[^/]*@", r"\1@", rest, count=1)
            rest = re.sub(r"([?&])password=\*\*\*(&|$)", r"\1", rest, flags=re.IGNORECASE)
            rest = rest.rstrip("?&")
        if not any(k.lower() == "connect_timeout" for k, _ in self.query):
            rest += ("&" if "?" in rest else "?") + f"connect_timeout={CONNECT_TIMEOUT_S}"
        return f"postgresql://{rest}"

    def where(self) -> str:
        """Words for messages: the DuckDB file, or the server, database and user."""
        if self.kind == "duckdb":
            return f"the DuckDB file {self.path}"
        server = f"{self.host or 'the default host (PGHOST or the local socket)'}"
        if self.port:
            server += f":{self.port}"
        who = f" as user '{self.user}'" if self.user else ""
        base = f", database '{self.database}'" if self.database else ""
        return f"the PostgreSQL server at {server}{base}{who}"


def parse_uri(text: object, key: str = "data.uri") -> DatabaseURI:
    """Parse a database URI; a ConfigError naming ``key`` (and the supported schemes) when it
    is not one. The password, if any, is never part of a message."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{key} is {text!r}; give a database URI: {' or '.join(SUPPORTED)}.")
    text = text.strip()
    shown = mask_credentials(text)
    if "://" not in text:
        raise ConfigError(f"{key} is '{shown}', which is not a URI; give {' or '.join(SUPPORTED)}.")
    scheme, rest = text.split("://", 1)
    base = scheme.lower().split("+", 1)[0]
    if base == "duckdb":
        if not rest.startswith("/") or rest in ("/", "/:memory:"):
            raise ConfigError(
                f"{key} is '{shown}'; a DuckDB URI names a file: duckdb:///relative/path.duckdb "
                "or duckdb:////absolute/path.duckdb."
            )
        return DatabaseURI(text=text, kind="duckdb", path=Path(rest[1:]).expanduser())
    if base in ("postgresql", "postgres"):
        return _postgres(text, rest, shown, key)
    raise ConfigError(
        f"{key} is '{shown}': the scheme '{scheme}' is not supported. Supported: "
        f"{'; '.join(SUPPORTED)}."
    )


def _postgres(text: str, rest: str, shown: str, key: str) -> DatabaseURI:
    location, _, query_text = rest.partition("?")
    netloc, _, path = location.partition("/")
    user = password = None
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        user, sep, password = userinfo.partition(":")
        password = password if sep else None
    host, port = netloc, None
    if netloc and "," not in netloc and not netloc.startswith("["):
        host, sep, port = netloc.partition(":")
        port = port if sep else None
        if port is not None and not port.isdigit():
            raise ConfigError(
                f"{key} is '{shown}': the port '{port}' is not a number (e.g. "
                "postgresql://user@localhost:5432/market)."
            )
    try:
        query = tuple(parse_qsl(query_text, keep_blank_values=True, strict_parsing=False))
    except ValueError:
        raise ConfigError(f"{key} is '{shown}': its query string cannot be read.") from None
    params = {k.lower(): v for k, v in query}
    if "password" in params:
        password = params["password"]
    return DatabaseURI(
        text=text,
        kind="postgresql",
        host=unquote(host) or params.get("host") or None,
        port=port or params.get("port"),
        user=unquote(user) if user else params.get("user"),
        database=unquote(path) or params.get("dbname") or None,
        has_password=password is not None and password != "",
        masked_password=password == MASK,
        query=query,
    )
