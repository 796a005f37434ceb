"""difpy-index: difPy's duplicate-image search over a persistent, incremental catalog.

``from difpy_index import Index`` for the catalog API; ``import difpy_index as difPy``
for difPy's ``build``/``search``.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .difpy_compat import build, search
from .errors import (
    ActionError,
    CatalogError,
    DifpyIndexError,
    NotACatalogError,
    NotIndexedError,
    SchemaTooNewError,
    UsageError,
)
from .index import Index, default_catalog_path
from .results import GroupInfo, MemberInfo, QueryMatch, SearchResult

__all__ = [
    "ActionError", "CatalogError", "DifpyIndexError", "GroupInfo", "Index", "MemberInfo",
    "NotACatalogError", "NotIndexedError", "QueryMatch", "SchemaTooNewError", "SearchResult",
    "UsageError", "build", "default_catalog_path", "search",
]

