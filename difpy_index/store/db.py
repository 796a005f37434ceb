"""Engine factory: SQLite in WAL mode, a busy timeout, and ``BEGIN IMMEDIATE`` for writers.

Readers and one writer run side by side under WAL; writers take the write lock at BEGIN,
so a transaction never fails half-way with "database is locked" (STYLE.md D5).
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

#: PRAGMA application_id of a difpy-index catalog ("difI").
APPLICATION_ID = 0x64696649
BUSY_TIMEOUT_S = 60.0
SQLITE_MAGIC = b"SQLite format 3\x00"


def database_error(exc: BaseException) -> tuple[str, str] | None:
    """``(dialect, first line)`` of the database error behind ``exc`` (bare, or wrapped by
    SQLAlchemy as ``.orig``): ``"postgresql"`` or ``"sqlite"``; None when it is none."""
    orig = getattr(exc, "orig", None) or exc
    if type(orig).__module__.split(".")[0] == "psycopg":  # a PostgreSQL catalog's failure
        text = str(orig).strip()
        return "postgresql", text.splitlines()[0] if text else type(orig).__name__
    if not isinstance(orig, sqlite3.Error):
        return None
    return "sqlite", str(orig).splitlines()[0] if str(orig) else type(orig).__name__


def on_read_only_fs(path: Path) -> bool:
    """Is the catalog on a read-only filesystem (or in a folder we cannot write)? SQLite
    cannot create the WAL index there, so such a catalog is opened ``immutable``."""
    import os

    folder = Path(path).resolve().parent
    try:
        if os.statvfs(folder).f_flag & getattr(os, "ST_RDONLY", 1):
            return True
    except OSError:
        return False
    return not os.access(folder, os.W_OK) and not Path(f"{path}-shm").exists()


def connect_raw(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    """A plain sqlite3 connection; read-only opens never create or change the file (on a
    read-only filesystem they open it ``immutable``: nobody can be writing it there)."""
    if read_only:
        uri = Path(path).resolve().as_uri() + "?mode=ro"
        if on_read_only_fs(path):
            uri += "&immutable=1"
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
    else:
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, check_same_thread=False)
    conn.isolation_level = None  # we issue BEGIN ourselves
    conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    return conn


def make_engine(path: Path) -> Engine:
    """An engine whose connections are configured for sharing one catalog between processes."""
    from sqlalchemy import create_engine, event
    from sqlalchemy.pool import QueuePool

    def creator() -> sqlite3.Connection:
        conn = connect_raw(path)
        _ensure_wal(conn)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    engine = create_engine("sqlite://", creator=creator, poolclass=QueuePool, pool_size=4)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        write = conn.get_execution_options().get("difpy_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _ensure_wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL once. The switch needs an exclusive lock and SQLite may answer BUSY
    without calling the busy handler (two processes creating one catalog), so retry."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    delay = 0.01
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


# --------------------------------------------------------------------------- PostgreSQL

#: ``scheme://...``: a database URL, never a file path (``C:\x`` and ``./a:b`` are paths)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def is_url(text: str | bytes | os.PathLike[str]) -> bool:
    """Is this ``--catalog`` value a database URL rather than a file path?"""
    if isinstance(text, os.PathLike):
        return False
    return bool(_URL.match(os.fsdecode(text)))


def display_url(url: str) -> str:
    """The URL without its password (for messages, ``status`` and stats)."""
    return re.sub(r"^([^:/]+://[^:/@]+):[^@]*@", r"\1:***@", url)


def make_pg_engine(url: str) -> Engine:
    """An engine on a PostgreSQL catalog (``postgresql[+psycopg]://...``).

    Raises UsageError for another scheme, or when the cluster extra (psycopg) is missing.
    """
    from ..errors import UsageError

    scheme = url.split("://", 1)[0].lower()
    if scheme not in ("postgresql", "postgresql+psycopg", "postgres"):
        raise UsageError(
            f"unsupported catalog URL {display_url(url)}: use a file path (SQLite) or "
            "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB"
        )
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise UsageError(
            "a PostgreSQL catalog needs the cluster extra: pip install 'difpy-index[cluster]' "
            f"({exc.name or 'psycopg'} is not installed)"
        ) from exc
    from sqlalchemy import create_engine

    rest = url.split("://", 1)[1]
    return create_engine(f"postgresql+psycopg://{rest}", pool_pre_ping=True, pool_size=4)
