"""Exceptions for whole-operation failures. Per-file problems are results, not exceptions."""

from __future__ import annotations


class DifpyIndexError(Exception):
    """Base class: the CLI prints the message as one line and exits with ``exit_code``."""

    exit_code = 1


class UsageError(DifpyIndexError, ValueError):
    """Bad input from the caller (a missing folder, an invalid parameter)."""

    exit_code = 2


class CatalogError(DifpyIndexError):
    """The catalog file cannot be used."""


class NoCatalogError(CatalogError):
    """A command that only reads was pointed at a catalog that does not exist: it is never
    created by a read (a mistyped --catalog would otherwise look like an empty one)."""

    exit_code = 2


class ReadOnlyCatalogError(CatalogError):
    """The catalog cannot be written (a read-only file or filesystem): it can be searched,
    but an action, which must record what it moved or deleted, is refused up front."""

    exit_code = 2


class NotACatalogError(CatalogError):
    """The file exists but is not a difpy-index catalog; it is left untouched."""

    exit_code = 2


class SchemaTooNewError(CatalogError):
    """The catalog was written by a newer difpy-index; we never downgrade."""

    def __init__(self, path: str, found: str, known: str) -> None:
        super().__init__(
            f"catalog {path} has schema revision {found}, newer than this difpy-index "
            f"knows ({known}); upgrade difpy-index"
        )
        self.found = found
        self.known = known


class NotIndexedError(UsageError):
    """A search folder lies outside every indexed root."""


class ActionError(DifpyIndexError):
    """A move or delete cannot start (bad destination, no confirmation)."""
