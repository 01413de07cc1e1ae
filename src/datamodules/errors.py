"""The error type every layer raises for bad user input (files, columns, config keys)."""

from __future__ import annotations


class UserInputError(ValueError):
    """Bad input the user can fix: the message names the file, column, row or config key.

    The Hydra app catches it and prints the message as one paragraph, without a traceback.
    """


class DataError(UserInputError):
    """A market-data file or data config that cannot be used as given."""


class ConfigError(UserInputError):
    """A config value that is out of range or inconsistent with the data."""
