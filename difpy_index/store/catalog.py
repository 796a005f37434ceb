"""The catalog repository: every query lives here. Other modules get plain dataclasses."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..paths import prefix_bounds

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable

    import numpy as np
    from sqlalchemy.engine import Engine

    from ..decode import Decoded

CHUNK = 500  # SQLite variable limit friendly


@dataclass(frozen=True, slots=True)
class KnownFile:
    id: int
    path: bytes
    root_id: int
    size: int
    mtime_ns: int
    inode: int | None
    status: str
    error: str | None
    width: int | None
    height: int | None
    ctime_ns: int | None = None  # None: written before schema 0002, "not seen yet"


@dataclass(frozen=True, slots=True)
class RootInfo:
    id: int
    path: bytes
    files: int
    invalid: int


@dataclass(slots=True)
class SearchInput:
    """Columns of the images to search, in catalog order (row i is one file)."""

    paths: list[bytes]
    sizes: np.ndarray
    widths: np.ndarray
    heights: np.ndarray
    tensors: np.ndarray  # (n, px, px, 3) uint8
    mtimes: np.ndarray | None = None  # mtime_ns (the keep rules read it)
    formats: list[str | None] | None = None  # Pillow format name, None where not recorded
    #: EXIF orientation tag per file, 0 when absent (recorded, never applied to tensors)
    orientations: np.ndarray | None = None
    #: the ``near`` preset's stored features per file (None: missing or outdated)
    near: list[bytes | None] | None = None

    def take(self, rows: np.ndarray) -> SearchInput:
        """The same columns restricted to ``rows`` (in that order)."""
        return SearchInput(
            paths=[self.paths[i] for i in rows], sizes=self.sizes[rows], widths=self.widths[rows], heights=self.heights[rows],
            tensors=self.tensors[rows],
            mtimes=None if self.mtimes is None else self.mtimes[rows],
            formats=None if self.formats is None else [self.formats[i] for i in rows],
            orientations=None if self.orientations is None else self.orientations[rows],
            near=None if self.near is None else [self.near[i] for i in rows],
        )


@dataclass(slots=True)
class SearchMeta:
    """``SearchInput`` without tensors, plus each tensor's pixel sum (see ``partition``)."""

    ids: np.ndarray  # file ids: what band tasks read tensors by
    paths: list[bytes]
    sizes: np.ndarray
    widths: np.ndarray
    heights: np.ndarray
    sums: np.ndarray  # (n,) int64
    mtimes: np.ndarray | None = None
    formats: list[str | None] | None = None
    orientations: np.ndarray | None = None  # EXIF orientation tag, 0 when absent

    def take(self, rows: np.ndarray) -> SearchMeta:
        """The same columns restricted to ``rows`` (in that order)."""
        return SearchMeta(
            ids=self.ids[rows], paths=[self.paths[i] for i in rows],
            sizes=self.sizes[rows], widths=self.widths[rows], heights=self.heights[rows],
            sums=self.sums[rows], mtimes=None if self.mtimes is None else self.mtimes[rows],
            formats=None if self.formats is None else [self.formats[i] for i in rows],
            orientations=None if self.orientations is None else self.orientations[rows],
        )


def pixel_sum(blob: bytes) -> int:
    """The integer sum of a tensor's bytes (rotation-invariant; the band sort key)."""
    import numpy as np

    return int(np.frombuffer(blob, dtype=np.uint8).sum(dtype=np.int64))


class TensorLoader:
    """Reads tensors by file id from a SQLite catalog, read-only; picklable, so a band task
    on another process or a Dask worker (same file system) opens the catalog itself."""

    #: ids per query: well below SQLite's host-parameter limit
    CHUNK = 900

    def __init__(self, path: str, px_size: int, recipe: str) -> None:
        self.path, self.px_size, self.recipe = path, px_size, recipe

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        from .db import connect_raw

        conn = connect_raw(Path(self.path), read_only=True)
        try:
            conn.execute("BEGIN")  # one snapshot for the whole read
            out = tensors_by_id(lambda sql, params: conn.execute(sql, params), ids,
                                self.px_size, self.recipe, self.path)
            conn.execute("COMMIT")
        finally:
            conn.close()
        return out


def tensors_by_id(
    query: Callable[[str, list[Any]], Iterable[tuple[Any, ...]]], ids: np.ndarray, px: int,
    recipe: str, where: str,
) -> np.ndarray:
    """The tensors of these file ids, in that order (``(n, px, px, 3)`` uint8), fetched
    through ``query`` (SQL with ``?`` placeholders) in chunks of ``TensorLoader.CHUNK`` ids.
    Raises CatalogError when one is missing: the catalog ``where`` changed meanwhile."""
    import numpy as np

    ids = np.asarray(ids, dtype=np.int64)
    out = np.empty((len(ids), px, px, 3), dtype=np.uint8)
    flat = out.reshape(len(ids), px * px * 3)
    rows = {int(f): i for i, f in enumerate(ids.tolist())}
    seen = 0
    for c0 in range(0, len(ids), TensorLoader.CHUNK):
        chunk = ids[c0 : c0 + TensorLoader.CHUNK].tolist()
        marks = ",".join("?" * len(chunk))
        for fid, blob in query(
            f"SELECT file_id, data FROM tensors WHERE px_size = ? AND recipe = ? "
            f"AND file_id IN ({marks})", [px, recipe, *chunk],
        ):
            flat[rows[fid]] = np.frombuffer(blob, dtype=np.uint8)
            seen += 1
    if seen != len(rows):
        from ..errors import CatalogError

        raise CatalogError(f"catalog {where} changed during the search; run it again")
    return out


class PgTensorLoader:
    """``TensorLoader`` for a PostgreSQL catalog: the rows of one band by id (an array
    parameter, binary results), never the whole table; picklable for Dask workers, which
    connect to the database themselves."""

    def __init__(self, url: str, px_size: int, recipe: str) -> None:
        self.url, self.px_size, self.recipe = url, px_size, recipe

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        import numpy as np
        import psycopg

        px = self.px_size
        ids = np.asarray(ids, dtype=np.int64)
        out = np.empty((len(ids), px, px, 3), dtype=np.uint8)
        flat = out.reshape(len(ids), px * px * 3)
        where = {int(f): i for i, f in enumerate(ids.tolist())}
        seen = 0
        conninfo = "postgresql://" + self.url.split("://", 1)[1]
        with psycopg.connect(conninfo) as conn, conn.cursor(binary=True) as cur:
            for c0 in range(0, len(ids), 20_000):
                cur.execute(
                    "SELECT file_id, data FROM tensors WHERE px_size = %s AND recipe = %s "
                    "AND file_id = ANY(%s)", (px, self.recipe, ids[c0 : c0 + 20_000].tolist()))
                for fid, blob in cur:
                    flat[where[fid]] = np.frombuffer(blob, dtype=np.uint8)
                    seen += 1
        if seen != len(where):
            from ..errors import CatalogError

            raise CatalogError("the catalog changed during the search; run it again")
        return out


def now_ns() -> int:
    return time.time_ns()


class Catalog:
    """SQLAlchemy for writes; the hot read path of ``search`` and ``status`` uses plain
    sqlite3, so a search over a cached catalog never imports SQLAlchemy (~150 ms)."""

    def __init__(self, path: Path, engine: Engine | Callable[[], Engine],
                 url: str | None = None) -> None:
        self.path = path
        #: a PostgreSQL catalog's URL (None: the SQLite file at ``path``)
        self.url = url
        self._engine: Engine | None = None
        self._factory: Callable[[], Engine] | None = None
        if callable(engine) and not hasattr(engine, "connect"):
            self._factory = engine
        else:
            self._engine = engine  # type: ignore[assignment]
        self._writer: Engine | None = None
        #: the one connection of an open ``snapshot()`` (sqlite3, or SQLAlchemy's)
        self._snapshot: Any = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            assert self._factory is not None
            self._engine = self._factory()
        return self._engine

    @property
    def writer(self) -> Engine:
        if self._writer is None:
            self._writer = self.engine.execution_options(difpy_write=True)
        return self._writer

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    # -- transactions -----------------------------------------------------------------
    def write(self) -> Any:
        """A short BEGIN IMMEDIATE transaction (context manager yielding a Connection)."""
        return self.writer.begin()

    def read(self) -> Any:
        return self.engine.connect()

    def _raw(self) -> sqlite3.Connection:
        """A plain read-only-by-pragma connection for the hot read path (on a read-only
        filesystem, a read-only immutable one: such a catalog can still be searched)."""
        from .db import connect_raw, on_read_only_fs

        conn = connect_raw(self.path, read_only=on_read_only_fs(self.path))
        conn.execute("PRAGMA query_only=1")
        return conn

    def _raw_query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Portable SQL with ``?`` placeholders: plain sqlite3, or the PostgreSQL engine;
        inside ``snapshot()``, on its one connection."""
        snap = self._snapshot
        if self.url is not None:
            with contextlib.nullcontext(snap) if snap is not None else self.engine.connect() as pg:
                return [tuple(r) for r in
                        pg.exec_driver_sql(sql.replace("?", "%s"), tuple(params)).fetchall()]
        if snap is not None:
            return snap.execute(sql, params).fetchall()
        conn = self._raw()
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Every read of this catalog object (``_raw_query``, ``read_tensors``) sees one
        state of the catalog until the block ends, whatever other processes write meanwhile
        (one SQLite read transaction; one PostgreSQL REPEATABLE READ transaction)."""
        if self._snapshot is not None:
            yield
            return
        if self.url is not None:
            with self.engine.connect() as pg:
                pg = pg.execution_options(isolation_level="REPEATABLE READ")
                with pg.begin():
                    self._snapshot = pg
                    try:
                        yield
                    finally:
                        self._snapshot = None
            return
        conn = self._raw()
        try:
            conn.execute("BEGIN")
            self._snapshot = conn
            yield
        finally:
            self._snapshot = None
            conn.close()

    def read_tensors(self, ids: np.ndarray, px_size: int, recipe: str) -> np.ndarray:
        """The tensors of these file ids, in that order (``(n, px, px, 3)`` uint8), read
        here (inside ``snapshot()``: from its state). Raises CatalogError for a missing one."""
        return tensors_by_id(self._raw_query, ids, px_size, recipe, str(self.path))

    def _insert(self, table: Any) -> Any:
        """INSERT with ON CONFLICT for this catalog's dialect (same API on both)."""
        if self.url is not None:
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table)
        from sqlalchemy.dialects.sqlite import insert

        return insert(table)

    def writable(self) -> str | None:
        """None when a write transaction can start here, else SQLite's reason (a read-only
        file or filesystem). Takes and releases the write lock; writes nothing."""
        import sqlite3

        from .db import connect_raw, on_read_only_fs

        if self.url is not None:  # a server database: its own permissions, found on write
            return None
        if on_read_only_fs(self.path):
            return "read-only filesystem"
        if not os.access(self.path, os.W_OK):
            return "the file is read-only"
        try:
            conn = connect_raw(self.path)
            try:
                conn.execute("PRAGMA busy_timeout=0")  # a writer at work is not "read-only"
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("ROLLBACK")
            finally:
                conn.close()
        except sqlite3.Error as exc:
            text = str(exc) or type(exc).__name__
            if "locked" in text or "busy" in text:
                return None  # writable, just busy: the action's own writes wait their turn
            return text
        return None

    # -- roots ------------------------------------------------------------------------
    def ensure_roots(self, paths: Sequence[bytes]) -> dict[bytes, int]:
        from sqlalchemy import select

        from .models import Root

        if not paths:
            return {}
        with self.write() as conn:
            conn.execute(
                self._insert(Root).on_conflict_do_nothing(index_elements=["path"]),
                [{"path": p, "added_ns": now_ns(), "updated_ns": None} for p in paths],
            )
            rows = conn.execute(select(Root.path, Root.id).where(Root.path.in_(list(paths))))
            return {r.path: r.id for r in rows}

    def touch_roots(self, ids: Iterable[int]) -> None:
        from sqlalchemy import update

        from .models import Root

        ids = list(ids)
        if ids:
            with self.write() as conn:
                conn.execute(update(Root).where(Root.id.in_(ids)).values(updated_ns=now_ns()))

    def roots(self) -> list[RootInfo]:
        rows = self._raw_query(
            "SELECT r.id, r.path, count(f.id), "
            "coalesce(sum(CASE WHEN f.status = 'invalid' THEN 1 ELSE 0 END), 0) "
            "FROM roots r LEFT JOIN files f ON f.root_id = r.id GROUP BY r.id ORDER BY r.path"
        )
        return [RootInfo(r[0], bytes(r[1]), int(r[2]) - int(r[3]), int(r[3])) for r in rows]

    # -- files ------------------------------------------------------------------------
    def files_in(self, folders: Sequence[bytes], root_ids: Sequence[int] = ()) -> list[KnownFile]:
        """Rows below any of ``folders`` or belonging to any of ``root_ids``."""
        from sqlalchemy import or_, select

        from .models import File

        conds: list[Any] = []
        for folder in folders:
            lo, hi = prefix_bounds(folder)
            conds.append((File.path >= lo) & (File.path < hi))
        if root_ids:
            conds.append(File.root_id.in_(list(root_ids)))
        if not conds:
            return []
        with self.read() as conn:
            rows = conn.execute(select(*_file_cols()).where(or_(*conds)))
            return [KnownFile(*r) for r in rows]

    def files_by_path(self, paths: Sequence[bytes]) -> dict[bytes, KnownFile]:
        from sqlalchemy import select

        from .models import File

        out: dict[bytes, KnownFile] = {}
        with self.read() as conn:
            for chunk in _chunks(list(paths), CHUNK):
                for r in conn.execute(select(*_file_cols()).where(File.path.in_(chunk))):
                    out[r.path] = KnownFile(*r)
        return out

    def tensor_sizes(self, file_ids: Sequence[int], recipe: str) -> dict[int, set[int]]:
        """For each file id, the px sizes it has a current-recipe tensor for."""
        from sqlalchemy import select

        from .models import Tensor

        out: dict[int, set[int]] = {}
        with self.read() as conn:
            if len(file_ids) > 20 * CHUNK:  # cheaper to read the whole (small) index
                stmt = select(Tensor.file_id, Tensor.px_size).where(Tensor.recipe == recipe)
                wanted = set(file_ids)
                for fid, px in conn.execute(stmt):
                    if fid in wanted:
                        out.setdefault(fid, set()).add(px)
                return out
            for chunk in _chunks(list(file_ids), CHUNK):
                stmt = select(Tensor.file_id, Tensor.px_size).where(
                    Tensor.file_id.in_(chunk), Tensor.recipe == recipe
                )
                for fid, px in conn.execute(stmt):
                    out.setdefault(fid, set()).add(px)
        return out

    def record(self, results: Sequence[Decoded], root_of: dict[bytes, int], recipe: str) -> None:
        """Write one batch of decode results in one transaction.

        A file whose size, mtime, inode or ctime changed loses its tensors of every other size.
        """
        from sqlalchemy import delete, select

        from .models import File, Tensor

        if not results:
            return
        from ..near import NEAR_VERSION as near_version

        stamp = now_ns()
        with self.write() as conn:
            paths = [d.path for d in results]
            old = {
                r.path: (r.id, r.size, r.mtime_ns, r.inode, r.ctime_ns)
                for r in conn.execute(
                    select(File.path, File.id, File.size, File.mtime_ns, File.inode, File.ctime_ns)
                    .where(File.path.in_(paths))
                )
            }
            stale = [
                old[d.path][0]
                for d in results
                if d.path in old and old[d.path][1:] != (d.size, d.mtime_ns, d.inode, d.ctime_ns)
            ]
            if stale:
                conn.execute(delete(Tensor).where(Tensor.file_id.in_(stale)))
            rows = [
                {
                    "root_id": root_of[d.path],
                    "path": d.path,
                    "size": d.size,
                    "mtime_ns": d.mtime_ns,
                    "inode": d.inode,
                    "ctime_ns": d.ctime_ns,
                    "status": "invalid" if d.error else "ok",
                    "error": d.error,
                    "width": d.width if not d.error else None,
                    "height": d.height if not d.error else None,
                    "orientation": d.orientation if not d.error else None,
                    "format": d.format if not d.error else None,
                    "updated_ns": stamp,
                }
                for d in results
            ]
            ins = self._insert(File)
            conn.execute(
                ins.on_conflict_do_update(
                    index_elements=["path"],
                    set_={
                        k: ins.excluded[k]
                        for k in ("size", "mtime_ns", "inode", "ctime_ns", "status", "error",
                                  "width", "height", "orientation", "format", "updated_ns")
                    },
                ),
                rows,
            )
            ids = dict(
                conn.execute(select(File.path, File.id).where(File.path.in_(paths))).all()
            )
            invalid = [ids[d.path] for d in results if d.error]
            if invalid:
                conn.execute(delete(Tensor).where(Tensor.file_id.in_(invalid)))
            trows = [
                {"file_id": ids[d.path], "px_size": px, "recipe": recipe, "data": blob,
                 "pixel_sum": pixel_sum(blob), **_digest_cols(d, px, blob), "near": d.near.get(px),
                 "near_version": near_version if px in d.near else None}
                for d in results
                if not d.error
                for px, blob in d.tensors.items()
            ]
            if trows:
                tins = self._insert(Tensor)
                conn.execute(
                    tins.on_conflict_do_update(
                        index_elements=["file_id", "px_size"],
                        set_={k: tins.excluded[k]
                              for k in ("recipe", "data", "pixel_sum", "digest", "turned_digest",
                                        "near", "near_version")},
                    ),
                    trows,
                )

    def remove(self, file_ids: Sequence[int]) -> int:
        from sqlalchemy import delete

        from .models import File, Tensor

        n = 0
        with self.write() as conn:
            for chunk in _chunks(list(file_ids), CHUNK):
                conn.execute(delete(Tensor).where(Tensor.file_id.in_(chunk)))
                n += conn.execute(delete(File).where(File.id.in_(chunk))).rowcount or 0
        return n

    def remove_root(self, root_id: int) -> int:
        """Drop a root, its file rows and their tensors; returns how many files went."""
        from sqlalchemy import delete, select

        from .models import File, Root, Tensor

        with self.write() as conn:
            ids = list(conn.execute(select(File.id).where(File.root_id == root_id)).scalars())
            for chunk in _chunks(ids, CHUNK):
                conn.execute(delete(Tensor).where(Tensor.file_id.in_(chunk)))
                conn.execute(delete(File).where(File.id.in_(chunk)))
            conn.execute(delete(Root).where(Root.id == root_id))
        return len(ids)

    def forget_paths(self, paths: Sequence[bytes]) -> int:
        """Drop the rows of these paths (files that an action moved or deleted)."""
        known = self.files_by_path(paths)
        return self.remove([k.id for k in known.values()])

    def note_ctime(self, path: bytes, size: int, mtime_ns: int, inode: int, ctime_ns: int) -> bool:
        """The file was only renamed away and back by us (its ctime moved, nothing else):
        record the new ctime where size, mtime and inode are still the row's."""
        from sqlalchemy import update

        from .models import File

        with self.write() as conn:
            done = conn.execute(
                update(File)
                .where(File.path == path, File.size == size, File.mtime_ns == mtime_ns, File.inode == inode)
                .values(ctime_ns=ctime_ns)
            ).rowcount
        return bool(done)

    def move_row(self, old: bytes, new: bytes, size: int, mtime_ns: int, inode: int | None,
                 root_id: int | None = None, ctime_ns: int | None = None) -> bool:
        """A rename: the row (and its tensors) follows the file without a decode. A rename
        moves ctime, so the new ctime is taken as is (size, mtime and inode vouch)."""
        from sqlalchemy import delete, select, update

        from .models import File, Tensor

        with self.write() as conn:
            row = conn.execute(select(File.id, File.root_id).where(File.path == old)).first()
            if row is None:
                return False
            clash = conn.execute(select(File.id).where(File.path == new)).scalar()
            if clash is not None:
                conn.execute(delete(Tensor).where(Tensor.file_id == clash))
                conn.execute(delete(File).where(File.id == clash))
            conn.execute(
                update(File)
                .where(File.id == row.id)
                .values(path=new, size=size, mtime_ns=mtime_ns, inode=inode, ctime_ns=ctime_ns,
                        root_id=root_id if root_id is not None else row.root_id,
                        updated_ns=now_ns())
            )
        return True

    # -- tensors and search input -----------------------------------------------------
    def tensor(self, path: bytes, px_size: int, recipe: str) -> bytes | None:
        from sqlalchemy import select

        from .models import File, Tensor

        stmt = (
            select(Tensor.data)
            .join(File, File.id == Tensor.file_id)
            .where(File.path == path, Tensor.px_size == px_size, Tensor.recipe == recipe)
        )
        with self.read() as conn:
            return conn.execute(stmt).scalar()

    def _tensor_rows(self, columns: str, px_size: int, recipe: str,
                     folders: Sequence[bytes] | None) -> list[tuple[Any, ...]]:
        """``columns`` (of ``files f`` and ``tensors t``) of every valid file, optionally
        below ``folders``, that has a tensor of this size and recipe, in path order."""
        where, params = _below_sql(folders)
        return self._raw_query(
            f"SELECT {columns} FROM files f JOIN tensors t ON t.file_id = f.id "
            f"WHERE f.status = 'ok' AND t.px_size = ? AND t.recipe = ?{where} ORDER BY f.path",
            [px_size, recipe, *params],
        )

    def search_input(
        self, px_size: int, recipe: str, folders: Sequence[bytes] | None = None
    ) -> SearchInput:
        """Every valid file (optionally below ``folders``) with its tensor, one matrix."""
        import numpy as np

        from ..near import NEAR_VERSION

        rows = self._tensor_rows("f.path, f.size, f.width, f.height, t.data, f.mtime_ns, f.format, "
                                 "coalesce(f.orientation, 0), "
                                 f"CASE WHEN t.near_version = '{NEAR_VERSION}' THEN t.near END",
                                 px_size, recipe, folders)
        n = len(rows)
        blob = b"".join(r[4] for r in rows)
        tensors = np.frombuffer(blob, dtype=np.uint8).reshape(n, px_size, px_size, 3)
        cols = np.array([(*r[1:4], r[5], r[7]) for r in rows], dtype=np.int64).reshape(n, 5)
        return SearchInput(
            paths=[bytes(r[0]) for r in rows],
            sizes=cols[:, 0].copy(),
            widths=cols[:, 1].copy(),
            heights=cols[:, 2].copy(),
            tensors=tensors,
            mtimes=cols[:, 3].copy(),
            formats=[r[6] for r in rows],
            orientations=cols[:, 4].copy(),
            near=[None if r[8] is None else bytes(r[8]) for r in rows],
        )

    def near_blobs(self, ids: np.ndarray, px_size: int, recipe: str) -> list[bytes | None]:
        """The stored ``near`` features of these file ids' tensors, in that order (None:
        missing or of another version than ``near.NEAR_VERSION``)."""
        from ..near import NEAR_VERSION

        where = {int(f): i for i, f in enumerate(ids.tolist())}
        out: list[bytes | None] = [None] * len(where)
        for chunk in _chunks(list(where), CHUNK):
            marks = ",".join("?" * len(chunk))
            for fid, blob in self._raw_query(
                f"SELECT file_id, near FROM tensors WHERE px_size = ? AND recipe = ? "
                f"AND near_version = ? AND file_id IN ({marks})",
                [px_size, recipe, NEAR_VERSION, *chunk],
            ):
                out[where[int(fid)]] = None if blob is None else bytes(blob)
        return out

    def stats_below(self, folders: Sequence[bytes], px_size: int, recipe: str
                    ) -> dict[bytes, tuple[int, int, int | None, int | None, str, str | None, bool]]:
        """{path: (size, mtime_ns, inode, ctime_ns, status, error, has a tensor at px_size)}
        of every row below ``folders``: one plain-sqlite read, for the freshness check."""
        where, params = _below_sql(folders)
        rows = self._raw_query(
            "SELECT f.path, f.size, f.mtime_ns, f.inode, f.ctime_ns, f.status, f.error, "
            "EXISTS (SELECT 1 FROM tensors t WHERE t.file_id = f.id AND t.px_size = ? "
            f"AND t.recipe = ?) FROM files f WHERE 1 = 1{where}",
            [px_size, recipe, *params],
        )
        return {bytes(r[0]): (r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7])) for r in rows}

    def search_meta(
        self, px_size: int, recipe: str, folders: Sequence[bytes] | None = None
    ) -> SearchMeta:
        """``search_input`` without the tensors: the summaries the partitioned search plans
        its bands from (tensors are read band by band through ``tensor_loader``)."""
        import numpy as np

        rows = self._tensor_rows(
            "f.id, f.path, f.size, f.width, f.height, t.pixel_sum, f.mtime_ns, f.format, "
            "coalesce(f.orientation, 0)",
            px_size, recipe, folders,
        )
        n = len(rows)
        cols = np.array([(r[0], r[2], r[3], r[4], -1 if r[5] is None else r[5], r[6], r[8])
                         for r in rows], dtype=np.int64).reshape(n, 7)
        sums = cols[:, 4].copy()
        missing = np.flatnonzero(sums < 0)
        if len(missing):  # rows written by code older than schema 0003 (cannot happen
            # after the migration, which fills them; kept so a search never misorders)
            loader = self.tensor_loader(px_size, recipe)
            for c0 in range(0, len(missing), 4096):
                part = missing[c0 : c0 + 4096]
                t = loader(cols[part, 0])
                sums[part] = t.reshape(len(part), -1).sum(axis=1, dtype=np.int64)
        return SearchMeta(
            ids=cols[:, 0].copy(), paths=[bytes(r[1]) for r in rows],
            sizes=cols[:, 1].copy(), widths=cols[:, 2].copy(), heights=cols[:, 3].copy(),
            sums=sums, mtimes=cols[:, 5].copy(), formats=[r[7] for r in rows],
            orientations=cols[:, 6].copy(),
        )

    def twin_candidates(
        self, px_size: int, recipe: str, folders: Sequence[bytes] | None, rotate: bool,
        same_dim: bool,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """``duplicates`` grouped in SQL: (file ids, digests) of the valid files (optionally
        below ``folders``) whose tensor's digest (``turned_digest`` with ``rotate``, else
        ``digest``) is shared by another one, with the same dimensions up to swapping when
        ``same_dim``; sorted by (digest, id). Only these rows can have an MSE of 0 to
        another: the rest need no tensor read. None when a row in scope has no digest (one
        written by an older difpy-index still running): the caller then reads them all."""
        import numpy as np

        where, params = _below_sql(folders)
        col = "t.turned_digest" if rotate else "t.digest"
        dims = (", CASE WHEN f.width < f.height THEN f.width ELSE f.height END, "
                "CASE WHEN f.width < f.height THEN f.height ELSE f.width END") if same_dim else ""
        rows = self._raw_query(
            f"SELECT x.id, x.h FROM (SELECT f.id AS id, {col} AS h, "
            f"count(*) OVER (PARTITION BY {col}{dims}) AS c FROM files f "
            "JOIN tensors t ON t.file_id = f.id "
            f"WHERE f.status = 'ok' AND t.px_size = ? AND t.recipe = ?{where}) x "
            "WHERE x.c > 1 OR x.h IS NULL ORDER BY x.h, x.id",
            [px_size, recipe, *params],
        )
        if rows and rows[0][1] is None:  # NULLs sort first on SQLite, last on PostgreSQL
            return None
        if rows and rows[-1][1] is None:
            return None
        out = np.array(rows, dtype=np.int64).reshape(len(rows), 2)
        return out[:, 0].copy(), out[:, 1].copy()

    def count_images(self, folders: Sequence[bytes] | None = None) -> int:
        """Decoded images (optionally below ``folders``): an upper bound of what
        ``search_input`` returns for any px size, from the indexes alone (no tensor read),
        so choosing between the in-memory and the banded search costs nothing."""
        where, params = _below_sql(folders)
        return int(self._raw_query(
            f"SELECT count(*) FROM files f WHERE f.status = 'ok'{where}", params
        )[0][0])

    def tensor_loader(self, px_size: int, recipe: str) -> TensorLoader | PgTensorLoader:
        """A picklable ``ids -> tensors`` reader of this catalog (for band tasks)."""
        if self.url is not None:
            return PgTensorLoader(self.url, px_size, recipe)
        return TensorLoader(str(self.path), px_size, recipe)

    def recipe_counts(self, px_size: int, folders: Sequence[bytes] | None = None) -> dict[str, int]:
        """How many valid files (optionally below ``folders``) have a tensor of ``px_size``
        under each recipe tag: how a search picks its recipe (never two at once)."""
        where, params = _below_sql(folders)
        rows = self._raw_query(
            "SELECT t.recipe, count(*) FROM files f JOIN tensors t ON t.file_id = f.id "
            f"WHERE f.status = 'ok' AND t.px_size = ?{where} GROUP BY t.recipe",
            [px_size, *params],
        )
        return {str(r[0]): int(r[1]) for r in rows}

    def invalid_in(self, folders: Sequence[bytes] | None = None) -> dict[bytes, str]:
        where, params = _below_sql(folders)
        rows = self._raw_query(
            f"SELECT f.path, f.error FROM files f WHERE f.status = 'invalid'{where} ORDER BY f.path",
            params,
        )
        return {bytes(r[0]): r[1] or "" for r in rows}

    # -- summary ----------------------------------------------------------------------
    def counts(self) -> dict[str, Any]:
        files, invalid = self._raw_query(
            "SELECT coalesce(sum(CASE WHEN status = 'ok' THEN 1 ELSE 0 END), 0), "
            "coalesce(sum(CASE WHEN status = 'invalid' THEN 1 ELSE 0 END), 0) FROM files"
        )[0]
        pxs = [r[0] for r in self._raw_query("SELECT DISTINCT px_size FROM tensors ORDER BY px_size")]
        rev = self._raw_query("SELECT version_num FROM alembic_version")[0][0]
        if self.url is not None:
            size = int(self._raw_query("SELECT pg_database_size(current_database())")[0][0])
        else:
            size = sum(
                os.path.getsize(p)
                for p in (self.path, Path(f"{self.path}-wal"))
                if os.path.exists(p)
            )
        return {"files": files, "invalid": invalid, "px_sizes": pxs, "schema": rev, "bytes": size}


def _digest_cols(d: Decoded, px: int, blob: bytes) -> dict[str, int]:
    """The digests of one tensor: the worker's, or made here (a result from elsewhere)."""
    got = d.digests.get(px)
    if got is None:
        from ..tensorhash import tensor_digests

        got = tensor_digests(blob, px)
    return {"digest": got[0], "turned_digest": got[1]}


def _file_cols() -> tuple[Any, ...]:
    from .models import File

    return (
        File.id, File.path, File.root_id, File.size, File.mtime_ns, File.inode,
        File.status, File.error, File.width, File.height, File.ctime_ns,
    )


def _below_sql(folders: Sequence[bytes] | None) -> tuple[str, list[bytes]]:
    """A WHERE fragment selecting the files of ``folders`` (None: everything): paths below
    any of them, and the rows of roots at or below them whose real path lies elsewhere (a
    symlink's target outside every root: found through that root, so searching the root
    and searching everything agree about it)."""
    if folders is None:
        return "", []
    if not folders:
        return " AND 1 = 0", []
    params: list[bytes] = []
    ors: list[str] = []
    for folder in folders:
        lo, hi = prefix_bounds(folder)
        params.extend((lo, hi, folder, lo, hi))
        ors.append("(f.path >= ? AND f.path < ?) OR f.root_id IN (SELECT r.id FROM roots r "
                   "WHERE r.path = ? OR (r.path >= ? AND r.path < ?))")
    return f" AND ({' OR '.join(ors)})", params


def _chunks(items: list[Any], n: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]
