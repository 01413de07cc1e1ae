"""Database URIs: the two kinds, what libpq receives, and passwords masked in any text."""

from __future__ import annotations

from pathlib import Path

import pytest

from datamodules.database.uri import mask_credentials, mask_secrets, parse_uri
from datamodules.errors import ConfigError


def test_duckdb_uris_name_a_relative_or_an_absolute_file():
    assert parse_uri("duckdb:///outputs/market.duckdb").path == Path("outputs/market.duckdb")
    assert parse_uri("duckdb:////data/market.duckdb").path == Path("/data/market.duckdb")
    with pytest.raises(ConfigError, match="names a file"):
        parse_uri("duckdb:///:memory:")


def test_a_postgresql_uri_keeps_what_libpq_needs_and_shows_no_password():
    uri = parse_uri("postgresql+psycopg2://me:s3cr3t@db.internal:6543/market?sslmode=require")
    assert (uri.kind, uri.host, uri.port, uri.user, uri.database) == (
        "postgresql",
        "db.internal",
        "6543",
        "me",
        "market",
    )
    assert uri.has_password and uri.masked() == (
        "postgresql+psycopg2://me:***@db.internal:6543/market?sslmode=require"
    )
    assert uri.libpq() == (
        "postgresql://me:s3cr3t@db.internal:6543/market?sslmode=require&connect_timeout=10"
    )
    assert (
        uri.without_password() == "postgresql+psycopg2://me@db.internal:6543/market?sslmode=require"
    )
    assert uri.without_credentials() == "postgresql://db.internal:6543/market?sslmode=require"
    assert "s3cr3t" not in uri.where() and "user 'me'" in uri.where()


def test_a_masked_password_is_not_sent():
    uri = parse_uri("postgres://me:***@localhost/market?password=***&application_name=x")
    assert uri.masked_password
    assert uri.libpq() == "postgresql://me@localhost/market?application_name=x&connect_timeout=10"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("data.uri=postgresql://u:pw@h:5432/db", "data.uri=postgresql://u:***@h:5432/db"),
        ("postgresql://u:p@ss:w@rd@h/db x", "postgresql://u:***@h/db x"),  # raw @ and : inside
        ("postgresql://:pw@h/db", "postgresql://:***@h/db"),
        (
            "postgresql://h/db?sslmode=x&password=pw&a=b",
            "postgresql://h/db?sslmode=x&password=***&a=b",
        ),
        ("host=h password='a b' dbname=d", "host=h password=*** dbname=d"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),  # nothing to mask
        # a multirun's overrides as Hydra saves them, colons escaped
        (
            r"data.uri=postgresql\://bars\:pw@h\:5432/db",
            r"data.uri=postgresql\://bars\:***@h\:5432/db",
        ),
        ("duckdb:///outputs/market.duckdb", "duckdb:///outputs/market.duckdb"),
    ],
)
def test_passwords_are_masked_in_any_text(text, masked):
    assert mask_credentials(text) == masked


def test_a_config_tree_is_masked_everywhere():
    tree = {
        "data": {"uri": "postgresql://u:pw@h/db"},
        "overrides": ["data.uri=postgres://u:pw@h/db"],
        "n": 1,
    }
    assert mask_secrets(tree) == {
        "data": {"uri": "postgresql://u:***@h/db"},
        "overrides": ["data.uri=postgres://u:***@h/db"],
        "n": 1,
    }


def test_a_bad_port_is_a_config_error_without_the_password():
    with pytest.raises(ConfigError) as err:
        parse_uri("postgresql://u:hunter2@h:fivefour/db")
    assert "the port 'fivefour' is not a number" in str(err.value)
    assert "hunter2" not in str(err.value)
