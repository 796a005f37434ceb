"""Storage: the only package that opens the catalog database (SQLite today).

Everything above it sees plain values (``KnownFile``, ``RootInfo``, ``SearchInput``), never
a connection, so the search core and the workers stay free of SQL.
"""

from __future__ import annotations

from pathlib import Path

from .catalog import Catalog, KnownFile, RootInfo, SearchInput, SearchMeta, TensorLoader

__all__ = ["Catalog", "KnownFile", "RootInfo", "SearchInput", "SearchMeta", "TensorLoader",
           "open_catalog", "open_url_catalog"]


def open_catalog(path: Path) -> Catalog:
    """The SQLite catalog at ``path`` (absolute), created or migrated as needed.

    A file that is not a catalog, or one from a newer difpy-index, is refused untouched.
    SQLAlchemy is imported only when something is written.
    """
    from ..errors import CatalogError
    from . import migrate
    from .db import make_engine

    found = migrate.inspect_file(path)
    needs = migrate.check_revision(path, found)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CatalogError(f"cannot create catalog folder {path.parent}: {exc.strerror}") from exc
    if not needs:
        return Catalog(path, lambda: make_engine(path))
    engine = make_engine(path)
    try:
        migrate.upgrade(path, engine)
    except Exception as exc:
        engine.dispose()
        from sqlalchemy.exc import OperationalError

        if isinstance(exc, OperationalError):
            raise CatalogError(f"cannot write catalog {path}: {exc.orig}") from exc
        raise
    return Catalog(path, engine)


def open_url_catalog(url: str, create: bool = True) -> Catalog:
    """A PostgreSQL catalog: the same models and migrations, the same open policy
    (create, upgrade once under an advisory lock, refuse a newer schema)."""
    from ..errors import CatalogError
    from . import migrate
    from .db import display_url, make_pg_engine

    engine = make_pg_engine(url)
    shown = display_url(url)
    try:
        migrate.open_pg(engine, shown, create)
    except Exception as exc:
        engine.dispose()
        from sqlalchemy.exc import DBAPIError

        if isinstance(exc, DBAPIError):
            text = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise CatalogError(f"cannot open catalog {shown}: {text}") from exc
        raise
    return Catalog(Path(shown), engine, url=url)
