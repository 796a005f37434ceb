"""Storage: the only package that opens the catalog database (SQLite today).

Everything above it sees plain values (``KnownFile``, ``RootInfo``, ``SearchInput``), never
a connection, so the search core and the workers stay free of SQL.
"""

from __future__ import annotations

from .catalog import Catalog, KnownFile, RootInfo, SearchInput, SearchMeta, TensorLoader

__all__ = ["Catalog", "KnownFile", "RootInfo", "SearchInput", "SearchMeta", "TensorLoader"]
