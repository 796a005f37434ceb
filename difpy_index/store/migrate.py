"""Open-time schema policy: create, back up then upgrade, or refuse a newer schema.

Alembic is imported only when the schema actually has to change (it costs ~300 ms).
"""

from __future__ import annotations

import importlib.resources
import logging
import sqlite3
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CatalogError, NoCatalogError, NotACatalogError, SchemaTooNewError
from .db import APPLICATION_ID, SQLITE_MAGIC, connect_raw

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)

#: Every revision this code knows, oldest first. A test checks it against migrations/.
REVISIONS = ("0001", "0002", "0003", "0005", "0004", "0006", "0007")
HEAD = REVISIONS[-1]


def backfill_tensors(
    conn: Connection,
    columns: dict[str, Any],
    fill: Callable[[list[tuple[int, int, bytes]]], list[dict[str, Any]]],
    batch: int = 2000,
) -> None:
    """What a migration that adds per-tensor columns does to the rows already there: every
    ``tensors`` row, in keyset pages of ``batch`` (memory stays flat on a large catalog),
    gets ``columns`` (name -> SQLAlchemy type) from ``fill``, which maps well-formed rows
    ``(file_id, px_size, tensor bytes)`` to one dict of values each, in order. A damaged
    row (a tensor of the wrong length) keeps NULLs there: searches read such rows whole."""
    import sqlalchemy as sa

    tensors = sa.table(
        "tensors", sa.column("file_id", sa.Integer()), sa.column("px_size", sa.Integer()),
        sa.column("data", sa.LargeBinary()), *(sa.column(n, t) for n, t in columns.items()),
    )
    update = (
        tensors.update()
        .where(tensors.c.file_id == sa.bindparam("k_fid"), tensors.c.px_size == sa.bindparam("k_px"))
        .values({n: sa.bindparam(f"v_{n}") for n in columns})
    )
    last = (-1, -1)
    while True:
        rows = conn.execute(
            sa.select(tensors.c.file_id, tensors.c.px_size, tensors.c.data)
            .where(sa.tuple_(tensors.c.file_id, tensors.c.px_size) > sa.tuple_(*last))
            .order_by(tensors.c.file_id, tensors.c.px_size)
            .limit(batch)
        ).all()
        if not rows:
            return
        whole = [(int(f), int(p), bytes(d)) for f, p, d in rows]
        good = [r for r in whole if len(r[2]) == r[1] * r[1] * 3]
        filled = {(f, p): v for (f, p, _), v in zip(good, fill(good), strict=True)}
        empty = dict.fromkeys(columns)
        conn.execute(update, [
            {"k_fid": f, "k_px": p, **{f"v_{n}": v for n, v in filled.get((f, p), empty).items()}}
            for f, p, _ in whole
        ])
        last = (whole[-1][0], whole[-1][1])


def refill_near(conn: Connection) -> None:
    """Every tensor row's ``near`` features, made again from its stored tensor
    (``near.batch_blobs``, at the current ``near.NEAR_VERSION``): what the migrations that
    add or change those features (0004, 0006, 0007) do to the rows already there."""
    import sqlalchemy as sa

    from .. import near

    def fill(rows: list[tuple[int, int, bytes]]) -> list[dict[str, Any]]:
        blobs = near.batch_blobs([{p: d} for _, p, d in rows])
        return [{"near": b[p], "near_version": near.NEAR_VERSION}
                for (_, p, _), b in zip(rows, blobs, strict=True)]

    backfill_tensors(conn, {"near": sa.LargeBinary(), "near_version": sa.String()}, fill)


def migrations_dir() -> Path:
    """The packaged copy in an installed wheel, else the source tree's top-level folder."""
    packaged = importlib.resources.files("difpy_index") / "migrations"
    if packaged.is_dir() and (packaged / "env.py").is_file():
        return Path(str(packaged))
    source = Path(__file__).resolve().parents[2] / "migrations"
    if (source / "env.py").is_file():
        return source
    raise CatalogError("migrations not found: broken difpy-index install")


def alembic_config(connection: object | None = None) -> object:
    from alembic.config import Config

    # today's stdout: Config's default is the one of the moment alembic was first imported
    # (under an in-process CLI run, a capture that is closed by now)
    cfg = Config(stdout=sys.stdout)
    cfg.set_main_option("script_location", str(migrations_dir()))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def inspect_file(path: Path) -> str | None:
    """The schema revision of an existing catalog, None for an empty or new file.

    Raises NotACatalogError for anything else, without writing to the file.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CatalogError(f"cannot read catalog {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
        # /dev/null, a FIFO, a socket: SQLite would open it and leave a -journal beside it
        raise NotACatalogError(f"catalog {path} is not a regular file")
    if st.st_size == 0:
        return None
    if path.is_dir():
        raise NotACatalogError(f"catalog {path} is a directory, not a catalog file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(100)  # the SQLite database header
    except OSError as exc:
        raise CatalogError(f"cannot read catalog {path}: {exc.strerror or exc}") from exc
    if head[: len(SQLITE_MAGIC)] != SQLITE_MAGIC:
        raise NotACatalogError(f"{path} is not a difpy-index catalog (not an SQLite file)")
    if len(head) == 100 and not Path(f"{path}-wal").exists():
        # Decide from the header alone when nothing is pending in a WAL: even a read-only
        # SQLite open of another program's WAL database leaves -wal/-shm files beside it.
        app_id = int.from_bytes(head[68:72], "big")
        schema_cookie = int.from_bytes(head[40:44], "big")
        if app_id != APPLICATION_ID and schema_cookie != 0:
            raise NotACatalogError(
                f"{path} is an SQLite file of another program, not a difpy-index catalog"
            )
    try:
        conn = connect_raw(path, read_only=True)
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if app_id != APPLICATION_ID:
                if not tables:
                    return None
                raise NotACatalogError(
                    f"{path} is an SQLite file of another program, not a difpy-index catalog"
                )
            if "alembic_version" not in tables:
                return None
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            return row[0] if row else None
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise NotACatalogError(f"{path} is not a usable difpy-index catalog ({exc})") from exc


def check_revision(path: Path | str, found: str | None) -> bool:
    """True when an upgrade is needed; raises for a schema newer than this code."""
    if found is None:
        return True
    if found == HEAD:
        return False
    if found in REVISIONS:
        return True
    raise SchemaTooNewError(str(path), found, HEAD)


def backup(path: Path, revision: str) -> Path:
    """A consistent copy (SQLite backup API, safe under WAL) before any upgrade."""
    target = path.with_name(f"{path.name}.bak-{revision}-{time.strftime('%Y%m%d%H%M%S')}")
    src = connect_raw(path)
    try:
        dst = sqlite3.connect(str(target))
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()
    log.warning("catalog schema %s is older than %s; backed up to %s", revision, HEAD, target)
    return target


def upgrade(path: Path, engine: Engine) -> None:
    """Bring the catalog to HEAD inside one BEGIN IMMEDIATE transaction (races are safe)."""
    from alembic import command

    writer = engine.execution_options(difpy_write=True)
    with writer.connect() as conn:
        with conn.begin():
            found = conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE name='alembic_version'"
            ).fetchone()
            current = None
            if found:
                row = conn.exec_driver_sql("SELECT version_num FROM alembic_version").fetchone()
                current = row[0] if row else None
            if not check_revision(path, current):
                return  # another process migrated it while we waited
            if current is not None:
                backup(path, current)
            cfg = alembic_config(conn)
            command.upgrade(cfg, "head")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- PostgreSQL

#: ``pg_advisory_xact_lock`` key shared by every difpy-index opening a PostgreSQL catalog
PG_LOCK_KEY = 0x64696649


def pg_revision(conn: Connection, where: str) -> str | None:
    """The schema revision of a PostgreSQL catalog, None for an empty database.

    A database holding other tables and no difpy-index schema is refused untouched."""
    from sqlalchemy import inspect

    names = set(inspect(conn).get_table_names())
    if "alembic_version" not in names:
        if names - {"roots", "files", "tensors"}:
            raise NotACatalogError(
                f"database {where} holds tables of another program; use an empty database "
                "for a difpy-index catalog"
            )
        return None
    row = conn.exec_driver_sql("SELECT version_num FROM alembic_version").fetchone()
    return row[0] if row else None


def open_pg(engine: Engine, where: str, create: bool = True) -> None:
    """The open policy on PostgreSQL: create or upgrade once, under an advisory lock (so
    concurrent openers wait and then find it done), refuse a newer schema. (No backup
    copy is made: that is the database administrator's job, e.g. ``pg_dump``.)"""
    with engine.connect() as conn:
        found = pg_revision(conn, where)
    if found is None and not create:
        raise NoCatalogError(f"no catalog in {where}; run 'difpy-index update DIR' first")
    if not check_revision(where, found):
        return
    from alembic import command

    with engine.connect() as conn:
        with conn.begin():
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (PG_LOCK_KEY,))
            current = pg_revision(conn, where)
            if not check_revision(where, current):
                return  # another process migrated it while we waited
            if current is not None:
                log.warning("catalog schema %s is older than %s; upgrading %s", current, HEAD, where)
            command.upgrade(alembic_config(conn), "head")  # type: ignore[arg-type]
