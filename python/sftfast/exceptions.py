"""The sftfast error hierarchy.

Every error derives from :class:`SftfastError`; each leaf also derives from the builtin a user
would catch anyway, so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "FileError",
    "InputError",
    "SchemaError",
    "SftfastError",
    "ShardError",
    "TokenizerError",
]


class SftfastError(Exception):
    """Root of all sftfast errors."""


class ConfigError(SftfastError, ValueError):
    """An option has an invalid value; the message names the option."""


class SchemaError(SftfastError, ValueError):
    """Input data lacks a column or has the wrong type; the message names the column."""


class TokenizerError(SftfastError, ValueError):
    """A tokenizer could not be loaded or failed on a row."""


class InputError(SftfastError, ValueError):
    """An input file cannot be read; the message names the file, the line and the reason."""


class FileError(SftfastError, OSError):
    """Reading or writing a file failed."""


class ShardError(SftfastError, OSError):
    """A shard is missing, truncated or fails its checksum."""
