"""The public API: ``Index`` over one catalog file. The CLI, the watcher and the difPy
layer call nothing but this."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .decode import DEFAULT_MAX_PIXELS, DEFAULT_PX_SIZE, DecodeSettings, is_fast
from .errors import NotIndexedError, UsageError
from .params import SearchParams, check_processes, check_px_size, is_near
from .paths import directly_in, display, folder_prefix, is_within, real_dir
from .progress import NullProgress, Progress
from .results import FileFacts, GroupInfo, MemberInfo, QueryMatch, SearchResult

if TYPE_CHECKING:
    from collections.abc import Callable
    from concurrent.futures import Executor

    import numpy as np

    from . import match
    from .scan import ScanOptions
    from .store.catalog import Catalog, KnownFile, SearchInput, SearchMeta
    from .thumbs import ThumbCache
    from .update import UpdateReport
    from .watch import Watcher

PathLike = str | os.PathLike[str] | bytes


def default_catalog_path() -> Path:
    """``$DIFPY_INDEX_CATALOG``, else a file in the user's data directory (local disk)."""
    env = os.environ.get("DIFPY_INDEX_CATALOG")
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "difpy-index" / "catalog.sqlite"


def catalog_failure(exc: BaseException, catalog: str | Path | None) -> tuple[str, int] | None:
    """A database failure (bare or wrapped) as one user line and an exit code; None when
    ``exc`` is not one. A full disk, an I/O error or a corrupt catalog each deserve one
    sentence that says what to do, not a driver's two-line text naming its classes."""
    from .store.db import database_error, display_url

    found = database_error(exc)
    if found is None:
        return None
    dialect, text = found
    if dialect == "postgresql":
        return f"catalog {display_url(str(catalog))}: {text}", 1
    if catalog is None:
        catalog = default_catalog_path()
    low = text.lower()
    if "full" in low or "i/o error" in low:
        return (f"cannot write catalog {catalog}: {text} (free some space and run again; "
                "work already written is kept)", 1)
    if "malformed" in low or "not a database" in low or "corrupt" in low:
        return (f"catalog {catalog} is corrupt ({text}); move it aside and run update to "
                "rebuild it", 2)
    return f"catalog {catalog}: {text}", 1


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).isoformat()


class Index:
    """A catalog of image tensors. Open with ``Index.open(path)`` (a context manager)."""

    def __init__(self, catalog: Catalog, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
        self._catalog = catalog
        #: the catalog file, or a PostgreSQL catalog's URL without its password
        self.path: Path | str = catalog.path
        self.max_pixels = max_pixels
        self._recipe: str | None = None

    # -- lifecycle ----------------------------------------------------------------------
    @classmethod
    def open(cls, path: PathLike | None = None, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
             create: bool = True) -> Index:
        """Open (creating or migrating as needed) the catalog at ``path``.

        ``create=False`` refuses a catalog that does not exist yet (``NoCatalogError``):
        what the read-only commands use, so a mistyped path is an error, not an empty result.
        """
        from .errors import NoCatalogError
        from .store import open_catalog
        from .store.db import is_url

        if path is None and is_url(os.environ.get("DIFPY_INDEX_CATALOG") or ""):
            path = os.environ["DIFPY_INDEX_CATALOG"]
        if path is not None and is_url(path):
            return cls._open_url(os.fsdecode(path), max_pixels, create)
        p = Path(os.fsdecode(path)).expanduser() if path is not None else default_catalog_path()
        p = p.absolute()
        if not create and not p.exists():
            raise NoCatalogError(f"no catalog at {p}; run 'difpy-index update DIR' first")
        return cls(open_catalog(p), max_pixels=max_pixels)

    @classmethod
    def _open_url(cls, url: str, max_pixels: int | None, create: bool = True) -> Index:
        """A PostgreSQL catalog (``store.open_url_catalog``); ``path`` is its URL shown
        without a password."""
        from .store import open_url_catalog
        from .store.db import display_url

        idx = cls(open_url_catalog(url, create), max_pixels=max_pixels)
        idx.path = display_url(url)
        return idx

    def close(self) -> None:
        self._catalog.dispose()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def recipe(self) -> str:
        if self._recipe is None:
            from .decode import recipe

            self._recipe = recipe()
        return self._recipe

    # -- update -------------------------------------------------------------------------
    def update(
        self,
        dirs: PathLike | Iterable[PathLike] | None = None,
        *,
        px_size: int | Sequence[int] = DEFAULT_PX_SIZE,
        recursive: bool = True,
        include_hidden: bool = False,
        limit_extensions: bool = True,
        processes: int | None = None,
        progress: Progress | None = None,
        executor: Executor | None = None,
        fast: bool | None = None,
        thumbnails: bool = False,
    ) -> UpdateReport:
        """Bring the catalog in line with the folders: decode only new or changed files.

        Without ``dirs``, every root already in the catalog is updated. ``executor`` (any
        ``concurrent.futures`` one, e.g. ``distributed.Client(address).get_executor()``)
        decodes there, in batches of paths; its workers must see the same paths. The
        catalog is written here, as without it. ``fast=True`` makes tensors with the fast
        recipe, ``False`` with the exact (difPy's) one; files whose tensors were made with
        the other recipe are decoded again. ``None`` keeps the recipe most files below
        these folders have (docs/formats.md).
        ``thumbnails=True`` also makes the review page's thumbnails of every image below
        the folders that has none yet (kept beside the catalog, see ``thumb_cache``).
        """
        from .scan import check_dirs
        from .update import run_update

        if dirs is None:
            roots = self.root_paths()
        else:
            roots = check_dirs(_as_list(dirs))
            known = set(self.root_paths())
            for r in roots:
                if not os.path.isdir(r) and r not in known:
                    raise UsageError(f"folder does not exist: {display(r)}")
        settings = self._decode_settings(px_size, processes, executor,
                                         self._update_recipe(fast, roots))
        options = _scan_options(recursive, include_hidden, limit_extensions)
        report = run_update(self._catalog, roots, options, settings, progress or NullProgress())
        if report.removed:
            self._prune_thumbs()
        if thumbnails:
            from .thumbs import make_thumbs

            t0 = time.perf_counter()
            below = self._catalog.files_in([r for r in roots if os.path.isdir(r)])
            made = make_thumbs([k.path for k in below if k.status == "ok"],
                               processes=settings.processes, max_pixels=self.max_pixels,
                               cache=self.thumb_cache())
            report.thumbnails = len(made)
            report.seconds += time.perf_counter() - t0
        return report

    def thumb_cache(self) -> ThumbCache:
        """Where the review page's thumbnails are kept: ``<catalog>.thumbs/`` beside the
        catalog file (for a PostgreSQL catalog, ``thumbs/`` in the user's data folder);
        delete it at will: thumbnails are made again when needed."""
        from .thumbs import ThumbCache

        if isinstance(self.path, Path):
            return ThumbCache.beside(self.path)
        return ThumbCache(default_catalog_path().parent / "thumbs")

    def update_paths(
        self,
        paths: Iterable[PathLike],
        roots: PathLike | Iterable[PathLike],
        *,
        px_size: int | Sequence[int] = DEFAULT_PX_SIZE,
        include_hidden: bool = False,
        limit_extensions: bool = True,
        processes: int | None = None,
        progress: Progress | None = None,
        fast: bool | None = None,
    ) -> UpdateReport:
        """``update`` restricted to the given files below ``roots`` (the watcher's batches):
        re-stat each, decode what changed, drop what is gone, let moved rows follow."""
        from .scan import check_dirs
        from .update import run_update_paths

        root_list = check_dirs(_as_list(roots))
        settings = self._decode_settings(px_size, processes,
                                         recipe=self._update_recipe(fast, root_list))
        options = _scan_options(True, include_hidden, limit_extensions)
        files = [os.fsencode(os.path.abspath(os.fsdecode(p))) for p in _as_list(paths)]
        return run_update_paths(self._catalog, files, root_list, options,
                                settings, progress or NullProgress())

    def _decode_settings(self, px_size: int | Sequence[int], processes: int | None,
                         executor: Executor | None = None,
                         recipe: str | None = None) -> DecodeSettings:
        sizes = (px_size,) if isinstance(px_size, int) else tuple(px_size)
        return DecodeSettings(
            px_sizes=tuple(sorted({check_px_size(px) for px in sizes})),
            recipe=recipe or self.recipe,
            processes=check_processes(processes), max_pixels=self.max_pixels, executor=executor,
        )

    # -- recipes: exact (difPy's) or fast, never mixed in one search ---------------------
    def _recipe_counts(self, px_size: int, folders: Sequence[bytes] | None) -> tuple[int, int]:
        """(files with exact tensors, files with fast tensors) of ``px_size`` in scope;
        tensors of an outdated recipe (another Pillow major) count for neither."""
        from .decode import recipe

        counts = self._catalog.recipe_counts(px_size, folders)
        return counts.get(recipe(False), 0), counts.get(recipe(True), 0)

    def _update_recipe(self, fast: bool | None, roots: Sequence[bytes]) -> str:
        """The recipe an update uses: the one asked for, else the one most files below
        ``roots`` have, else the one most of the catalog has, else exact."""
        from .decode import recipe

        if fast is not None:
            if not isinstance(fast, bool):
                raise UsageError(f"invalid fast {fast!r}: must be True, False or None")
            return recipe(fast)
        for scope in (list(roots), None):
            exact, quick = self._recipe_counts(DEFAULT_PX_SIZE, scope)
            if exact or quick:
                return recipe(quick > exact)
        return recipe(False)

    def search_recipe(self, px_size: int = DEFAULT_PX_SIZE,
                      folders: Sequence[bytes] | None = None) -> str:
        """The recipe a search of ``folders`` reads: the only one its files have (exact
        when none). Files of both recipes in one scope are an error: a search never
        compares fast tensors with exact ones."""
        from .decode import recipe

        exact, quick = self._recipe_counts(px_size, folders)
        if exact and quick:
            where = " ".join(display(f) for f in folders) if folders else "the catalog"
            raise UsageError(
                f"{where} holds {exact} files with exact tensors and {quick} with fast ones "
                f"(px_size {px_size}); a search never mixes them: run 'difpy-index update "
                f"--fast' or 'difpy-index update --exact' on these folders first"
            )
        return recipe(quick > 0)

    # -- read ---------------------------------------------------------------------------
    def tensor(self, path: PathLike, px_size: int = DEFAULT_PX_SIZE,
               recipe: str | None = None) -> np.ndarray | None:
        """The cached uint8 (px, px, 3) tensor of a file, or None if it has none (of
        ``recipe``; default: the exact recipe, or the fast one when that is all it has)."""
        import numpy as np

        real = os.path.realpath(os.fsencode(os.path.expanduser(os.fsdecode(path))))
        px_size = check_px_size(px_size)
        if recipe is None:
            from .decode import recipe as recipe_of

            blob = self._catalog.tensor(real, px_size, recipe_of(False))
            if blob is None:
                blob = self._catalog.tensor(real, px_size, recipe_of(True))
        else:
            blob = self._catalog.tensor(real, px_size, recipe)
        if blob is None:
            return None
        return np.frombuffer(blob, dtype=np.uint8).reshape(px_size, px_size, 3)

    def status(self) -> dict[str, Any]:
        counts = self._catalog.counts()
        return {
            "catalog": str(self.path),
            "schema": counts["schema"],
            "roots": self.roots(),
            "files": counts["files"],
            "invalid": counts["invalid"],
            "px_sizes": counts["px_sizes"],
            "bytes": counts["bytes"],
        }

    def roots(self) -> list[str]:
        return [display(r) for r in self.root_paths()]

    def _resolve_search_dirs(self, dirs: PathLike | Iterable[PathLike] | None) -> list[bytes] | None:
        if dirs is None:
            return None
        roots = self.root_paths()
        out: list[bytes] = []
        for d in _as_list(dirs):
            real = real_dir(d)
            if not any(is_within(real, r) for r in roots):
                raise NotIndexedError(
                    f"{display(real)} is not inside an indexed folder; run "
                    f"'difpy-index update {os.fsdecode(real)}' first"
                )
            if real not in out:
                out.append(real)
        return out

    # -- rows, for the work modules and shells (the store itself stays private) ---------
    def root_paths(self) -> list[bytes]:
        """The indexed roots as real paths (bytes), in path order."""
        return [r.path for r in self._catalog.roots()]

    def roots_by_id(self) -> dict[int, bytes]:
        return {r.id: r.path for r in self._catalog.roots()}

    def file_rows(self, paths: Sequence[bytes]) -> dict[bytes, KnownFile]:
        """The catalog rows of these real paths (absent: not indexed)."""
        return self._catalog.files_by_path(paths)

    def check_writable(self) -> None:
        """Raise ``ReadOnlyCatalogError`` (exit 2) when the catalog cannot be written: an
        action must record what it moves or deletes, so it asks before touching a file."""
        from .errors import ReadOnlyCatalogError

        why = self._catalog.writable()
        if why is not None:
            raise ReadOnlyCatalogError(
                f"catalog {self.path} is read-only ({why}): it can be searched, but moving or "
                "deleting files needs a writable catalog"
            )

    def note_put_back(self, path: bytes) -> None:
        """An action moved this file aside and back (a rename moves ctime): the row keeps
        vouching for it when its size, mtime and inode are unchanged."""
        try:
            st = os.lstat(path)
        except OSError:
            return
        self._catalog.note_ctime(path, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)

    def forget(self, paths: Sequence[bytes]) -> int:
        """Drop the rows of these paths (files an action moved or deleted), and their
        review-page thumbnails."""
        self.thumb_cache().drop(paths)
        return self._catalog.forget_paths(paths)

    def _prune_thumbs(self) -> None:
        """Thumbnails of images no longer in the catalog go too (after an update removed
        files, or roots were forgotten); only when there is a thumbnail folder at all."""
        cache = self.thumb_cache()
        if cache.folder.is_dir():
            cache.prune(k.path for k in self._catalog.files_in(self.root_paths()))

    def forget_roots(self, roots: PathLike | Iterable[PathLike]) -> dict[str, int]:
        """Drop indexed roots and every row of their files, for good (the files on disk are
        not touched); {root: files dropped}. Each must be an indexed root, reachable or not."""
        known = {r.path: r.id for r in self._catalog.roots()}
        wanted: list[bytes] = []
        for r in _as_list(roots):
            raw = os.fsencode(os.path.expanduser(os.fsdecode(r)))
            real = os.path.realpath(raw)
            hit = real if real in known else os.path.abspath(raw)
            if hit not in known:
                raise UsageError(
                    f"not an indexed root: {display(real)} (the roots are listed by "
                    "'difpy-index status')"
                )
            if hit not in wanted:
                wanted.append(hit)
        dropped = {display(r): self._catalog.remove_root(known[r]) for r in wanted}
        self._prune_thumbs()
        return dropped

    def owning_roots(self, dirs: PathLike | Iterable[PathLike] | None = None) -> list[bytes]:
        """The indexed roots holding ``dirs`` (None: every root), for a refresh first."""
        roots = self.root_paths()
        if dirs is None:
            return roots
        out: list[bytes] = []
        for d in self._resolve_search_dirs(dirs) or []:
            own = [r for r in roots if is_within(d, r)]
            for r in own:
                if r not in out:
                    out.append(r)
        return out

    def is_current(self, roots: Sequence[bytes], px_size: int = DEFAULT_PX_SIZE) -> bool:
        """Would ``update(roots)`` change nothing? A stat walk and one plain-sqlite read
        (no SQLAlchemy, no decoder plugins imported), so a search over an unchanged folder
        pays almost nothing for being up to date. Conservative: any doubt answers False."""
        from .decode import IMAGE_EXTENSIONS, PLUGINS
        from .scan import ScanOptions, extension_of, scan
        from .update import access_error

        present = [r for r in roots if os.path.isdir(r)]
        if not present:
            return True  # nothing to walk; missing roots are reported by the search
        plugin_ext = {e: p for p in PLUGINS for e in p.extensions}
        found = scan(present, ScanOptions(extensions=frozenset(IMAGE_EXTENSIONS | set(plugin_ext))))
        if found.problems or any(rs.unreadable for rs in found.roots):
            return False
        rows = self._catalog.stats_below(present, check_px_size(px_size),
                                         self._update_recipe(None, present))
        seen = set()
        for f in found.files:
            seen.add(f.path)
            row = rows.get(f.path)
            if row is None:
                plugin = plugin_ext.get(extension_of(f.path))
                if plugin is None or plugin.available():
                    return False  # a new image
                continue  # its decoder is not installed: update would skip it too
            size, mtime, inode, ctime, status, error, has_tensor = row
            if (size, mtime, inode, ctime) != (f.size, f.mtime_ns, f.inode, f.ctime_ns):
                return False
            if (status == "ok" and not has_tensor) or (status != "ok" and access_error(error)):
                return False
        # a row the walk did not meet: gone (stale), or out of this walk's scope (kept)
        return all(os.path.lexists(p) for p in rows.keys() - seen)

    def refresh(self, dirs: PathLike | Iterable[PathLike] | None = None, *,
                px_size: int = DEFAULT_PX_SIZE, processes: int | None = None,
                progress: Progress | None = None,
                executor: Executor | None = None) -> UpdateReport | None:
        """Bring the roots holding ``dirs`` (None: every root) up to date, as ``search
        DIR`` and ``query`` do first; None when :meth:`is_current` says nothing changed.
        ``executor``: decode there, as ``update(executor=)``."""
        roots = self.owning_roots(dirs)
        if not roots or self.is_current(roots, px_size):
            return None
        if self._catalog.writable() is not None:  # searched as it is; actions verify each file
            logging.getLogger(__name__).warning(
                "catalog %s is read-only: searched as it is, without bringing it up to date", self.path)
            return None
        return self.update(roots, px_size=px_size, processes=processes, progress=progress,
                           executor=executor)

    def unreachable_roots(self, roots: Sequence[bytes] | None = None) -> list[bytes]:
        """Roots that are gone or empty (an unmounted drive) while the catalog holds files
        for them: their rows are kept, and searches leave their files out."""
        out = []
        for r in self._catalog.roots():
            if roots is not None and r.path not in roots:
                continue
            if r.files + r.invalid == 0:
                continue
            try:
                with os.scandir(r.path) as it:
                    if next(it, None) is not None:
                        continue
            except OSError:
                pass
            out.append(r.path)
        return out

    def paths_below(self, folder: bytes) -> list[bytes]:
        """Every indexed path (valid or not) strictly below ``folder``."""
        return [k.path for k in self._catalog.files_in([folder])]

    def invalid_files(self, folders: Sequence[bytes] | None = None) -> dict[bytes, str]:
        """Undecodable files (optionally below ``folders``) and why."""
        return self._catalog.invalid_in(folders)

    def search_input(self, px_size: int = DEFAULT_PX_SIZE,
                     folders: Sequence[bytes] | None = None) -> SearchInput:
        """Every valid file (optionally below ``folders``) with its cached tensor, of the
        recipe a search of ``folders`` reads (``search_recipe``)."""
        px_size = check_px_size(px_size)
        return self._catalog.search_input(px_size, self.search_recipe(px_size, folders), folders)

    # -- search -------------------------------------------------------------------------
    def search(
        self,
        dirs: PathLike | Iterable[PathLike] | None = None,
        *,
        similarity: str | float | int = "duplicates",
        rotate: bool = True,
        same_dim: bool | None = None,
        lazy: bool | None = None,
        in_folder: bool = False,
        px_size: int = DEFAULT_PX_SIZE,
        processes: int | None = None,
        recursive: bool = True,
        keep: str | Sequence[str] | None = None,
        reference: PathLike | Iterable[PathLike] | None = None,
        max_band_rows: int | None = None,
        executor: Executor | None = None,
    ) -> SearchResult:
        """difPy's search over the cached tensors (SEMANTICS.md sections 3-5).

        ``keep`` is the keep rule deciding each group's key (``keep.parse_keep``; None: the
        default, ``keep.DEFAULT_KEEP``; ``"difpy"``: difPy's own). Files under a
        ``reference`` folder (inside an indexed root) are searched too, rank before all
        others, and are never members of a group, so nothing ever moves or deletes them.
        ``recursive=False`` searches only the files directly inside the folders (difPy's
        ``build(recursive=False)``), even if the catalog also holds their subfolders.
        More than ``max_band_rows`` images (default ``partition.DEFAULT_MAX_BAND_ROWS``), or
        an ``executor`` (a ``concurrent.futures`` one, e.g. a Dask client's), switch to the
        partitioned search: the same groups, with tensors read band by band, so memory
        stays bounded by ``max_band_rows`` tensors per task. ``duplicates`` (threshold 0)
        reads only the tensors of rows whose digest another row shares, found in SQL
        (``Catalog.twin_candidates``), in chunks of at most ``max_band_rows``.
        """
        import numpy as np

        from . import keep as keeprules
        from . import match, near
        from .partition import DEFAULT_MAX_BAND_ROWS
        from .store.catalog import SearchMeta

        t0 = time.time()
        sp = SearchParams.parse(similarity, rotate=rotate, same_dim=same_dim, lazy=lazy,
                                in_folder=in_folder, px_size=px_size)
        procs = check_processes(processes)  # accepted (difPy's), recorded; nothing to spread
        # the second measure of the near preset needs all 8 orientations
        use_near = is_near(similarity) and sp.rotate
        criteria = keeprules.parse_keep(keep)
        band_rows = DEFAULT_MAX_BAND_ROWS if max_band_rows is None else int(max_band_rows)
        if band_rows < 2:
            raise UsageError(f"invalid max_band_rows {max_band_rows!r}: must be at least 2")
        folders = self._resolve_search_dirs(dirs)
        refs = self._resolve_search_dirs(reference) if reference is not None else []
        refs = refs or []
        if refs and sp.in_folder:
            raise UsageError("reference folders cannot be combined with in_folder")
        scope = None if folders is None else folders + [r for r in refs if r not in folders]
        recipe = self.search_recipe(sp.px_size, scope)
        # duplicates: the catalog groups the rows by their tensor's digest in SQL, and only
        # rows sharing one are read and verified (no cluster, no full tensor read); the
        # grouping, the rows and their tensors are read from one state of the catalog
        hashed = sp.threshold == 0 and not use_near
        with self._catalog.snapshot() if hashed else contextlib.nullcontext():
            twins = (self._catalog.twin_candidates(sp.px_size, recipe, scope, sp.rotate,
                                                   sp.same_dim) if hashed else None)
            banded = twins is not None or executor is not None or self._catalog.url is not None or (
                self._catalog.count_images(scope) > band_rows
            )  # PostgreSQL: tensors are only ever read band by band, never all at once
            data: SearchInput | SearchMeta
            if banded:
                data = self._catalog.search_meta(sp.px_size, recipe, scope)
                if executor is not None and max_band_rows is None:
                    # several band tasks per worker, not one task holding everything
                    band_rows = min(band_rows, max(2_000, -(-len(data.paths) // 8)))
            else:
                data = self._catalog.search_input(sp.px_size, recipe, scope)
            self._check_px_cached(data, sp.px_size, scope)
            unreachable = self.unreachable_roots()
            if unreachable:
                gone = _under_any(data.paths, unreachable)
                if gone.any():
                    data = data.take(np.flatnonzero(~gone))
            if not recursive:
                tops = scope if scope is not None else self.root_paths()
                data = _top_level(data, tops)
            is_ref = _under_any(data.paths, refs) if refs else None
            order = keeprules.quality_order(criteria, keeprules.KeepColumns(
                data.paths, data.widths, data.heights, data.sizes, data.mtimes, data.formats,
                reference=is_ref,
            ))
            scopes: list[tuple[bytes | None, np.ndarray | None]]
            if sp.in_folder:
                scope_dirs = folders if folders is not None else self.root_paths()
                scopes = [(d, _below(data.paths, d)) for d in scope_dirs]
            else:
                scopes = [(None, None)]
            t_search = time.time()
            groups: list[GroupInfo] = []
            found_rows: list[list[int]] = []
            near_input: tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
            for folder, subset in scopes:
                found: Sequence[match.Group | near.NearGroup]
                if use_near:
                    if near_input is None:  # once for every folder of in_folder
                        near_input = self._near_input(data, sp.px_size, recipe)
                    found = near.search(
                        near_input[0], data.widths, data.heights, data.sizes, data.paths,
                        same_dim=sp.same_dim, subset=subset, order=order, protected=is_ref,
                        stored=near_input[1],
                    )
                elif twins is not None and isinstance(data, SearchMeta):
                    found = _twin_groups(
                        partial(self._catalog.read_tensors, px_size=sp.px_size, recipe=recipe),
                        data, subset, sp, twins, band_rows, order, is_ref)
                elif isinstance(data, SearchMeta):
                    found = _banded(self._catalog.tensor_loader(sp.px_size, recipe), data, subset,
                                    sp, band_rows, executor, order, is_ref)
                else:
                    found = match.find_groups(
                        data.tensors, data.widths, data.heights, data.sizes, data.paths,
                        sp.threshold, rotate=sp.rotate, same_dim=sp.same_dim, subset=subset,
                        order=order, protected=is_ref,
                    )
                orient = _orientation_of(data)
                for fg in found:
                    found_rows.append([fg.key, *(m.index for m in fg.members)])
                    groups.append(
                        GroupInfo(
                            key=display(data.paths[fg.key]),
                            members=tuple(_member_info(data.paths, m, orient(m.index))
                                          for m in fg.members),
                            folder=display(folder) if folder is not None else None,
                            key_orientation=orient(fg.key),
                        )
                    )
        t_end = time.time()
        result: dict[str, Any] = {}
        for g in groups:
            target = result.setdefault(g.folder or "", {}) if sp.in_folder else result
            target[g.key] = [[m.path, m.mse] for m in g.members]
        lower = sorted({m.path for g in groups for m in g.members})
        facts = {}
        for i in {fg_i for g in found_rows for fg_i in g}:
            facts[display(data.paths[i])] = FileFacts(
                int(data.widths[i]), int(data.heights[i]), int(data.sizes[i]),
                int(data.mtimes[i]) if data.mtimes is not None else 0,
            )
        invalid = self._catalog.invalid_in(scope)
        if not recursive:
            tops_set = set(tops)
            invalid = {p: r for p, r in invalid.items() if directly_in(p, tops_set)}
        n_files = len(data.paths)
        stats = {
            "directory": [display(f) for f in scope] if scope is not None else self.roots(),
            "process": {
                "build": {
                    "duration": {"start": _iso(t0), "end": _iso(t_search),
                                 "seconds_elapsed": round(t_search - t0, 4)},
                    "parameters": {"px_size": sp.px_size, "catalog": str(self.path),
                                   "recipe": "fast" if is_fast(recipe) else "exact"},
                    "total_files": {"count": n_files + len(invalid)},
                    "invalid_files": {
                        "count": len(invalid),
                        "logs": {display(p): r for p, r in invalid.items()},
                    },
                },
                "search": {
                    "duration": {"start": _iso(t_search), "end": _iso(t_end),
                                 "seconds_elapsed": round(t_end - t_search, 4)},
                    "parameters": {
                        "similarity_mse": sp.threshold, "rotate": sp.rotate,
                        "same_dim": sp.same_dim, "in_folder": sp.in_folder, "processes": procs,
                        "keep": keeprules.describe(criteria),
                        "reference": [display(r) for r in refs],
                    },
                    "unreachable_roots": [display(r) for r in unreachable],
                    "files_searched": n_files,
                    "matches_found": {
                        "duplicates": sum(1 for g in groups for m in g.members if m.mse == 0),
                        "similar": sum(1 for g in groups for m in g.members if m.mse != 0),
                    },
                    "groups": len(groups),
                },
            },
        }
        return SearchResult(
            result=result, lower_quality=lower, stats=stats, groups=groups,
            threshold=sp.threshold, rotate=sp.rotate, same_dim=sp.same_dim, px_size=sp.px_size,
            folders=[display(f) for f in (scope if scope is not None else self.root_paths())],
            keep=keeprules.describe(criteria), reference=[display(r) for r in refs], facts=facts,
            unreachable=[display(r) for r in unreachable],
            recipe=recipe, _index=self,
        )

    def _check_px_cached(self, data: SearchInput | SearchMeta, px_size: int, folders: list[bytes] | None) -> None:
        if len(data.paths) or px_size == DEFAULT_PX_SIZE:
            return
        sizes = self._catalog.counts()["px_sizes"]
        if sizes and px_size not in sizes:
            raise UsageError(
                f"no tensors of px_size {px_size} in the catalog; run "
                f"'difpy-index update --px-size {px_size} DIR' first"
            )

    # -- query --------------------------------------------------------------------------
    def query(
        self,
        images: PathLike | Iterable[PathLike],
        *,
        similarity: str | float | int = "duplicates",
        rotate: bool = True,
        same_dim: bool | None = None,
        px_size: int = DEFAULT_PX_SIZE,
    ) -> list[QueryMatch]:
        """For each image (indexed or not), the catalog files that match it."""
        import numpy as np

        from . import match
        from .decode import decode_file, init_worker
        from .partition import DEFAULT_MAX_BAND_ROWS
        from .store.catalog import SearchMeta

        sp = SearchParams.parse(similarity, rotate=rotate, same_dim=same_dim, px_size=px_size)
        px_size = sp.px_size
        recipe = self.search_recipe(px_size, None)
        init_worker(self.max_pixels)
        queries = []
        for image in _as_list(images):
            raw = os.fsencode(os.path.expanduser(os.fsdecode(image)))
            if not os.path.isfile(raw):
                raise UsageError(f"not a file: {os.fsdecode(raw)}")
            real = os.path.realpath(raw)
            d = decode_file(real, (px_size,), fast=is_fast(recipe))
            if d.error or d.gone:
                raise UsageError(f"cannot read image {display(real)}: {d.error or 'vanished'}")
            q = np.frombuffer(d.tensors[px_size], dtype=np.uint8).reshape(1, px_size, px_size, 3)
            queries.append((real, q, d.width, d.height))
        banded = self._catalog.url is not None or self._catalog.count_images() > DEFAULT_MAX_BAND_ROWS
        data: SearchInput | SearchMeta
        if banded:
            data = self._catalog.search_meta(px_size, recipe, None)
        else:
            data = self._catalog.search_input(px_size, recipe, None)
        unreachable = self.unreachable_roots()
        if unreachable:
            data = data.take(np.flatnonzero(~_under_any(data.paths, unreachable)))
        known = set(data.paths)
        orient = _orientation_of(data)
        found: list[Sequence[match.Member | near.NearMember]]
        if is_near(similarity) and sp.rotate:  # the preset's three rules (docs/quality.md)
            from . import near

            tensors, stored = self._near_input(data, px_size, recipe)
            widths, heights = np.asarray(data.widths), np.asarray(data.heights)
            found = [near.query(q, tensors, np.flatnonzero((widths == w) & (heights == h))
                                if sp.same_dim else np.arange(len(data.paths)), stored)
                     for _, q, w, h in queries]
        elif isinstance(data, SearchMeta):
            loader = self._catalog.tensor_loader(px_size, recipe)
            found = [_query_banded(loader, data, q, w, h, sp) for _, q, w, h in queries]
        elif queries:  # all queries in one pass: the catalog's features are made once
            found = list(match.match_against(
                np.concatenate([q for _, q, _, _ in queries]),
                np.array([w for _, _, w, _ in queries]), np.array([h for _, _, _, h in queries]),
                data.tensors, data.widths, data.heights, sp.threshold, rotate=sp.rotate,
                same_dim=sp.same_dim,
            ))
        else:
            found = []
        return [QueryMatch(display(real), real in known, tuple(
                    _member_info(data.paths, m, orient(m.index))
                    for m in members if data.paths[m.index] != real))
                for (real, _, _, _), members in zip(queries, found, strict=True)]

    def _near_input(self, data: SearchInput | SearchMeta, px_size: int, recipe: str,
                    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Every row's tensor and ``near`` features (the catalog's; missing ones computed)."""
        from . import near
        from .store.catalog import SearchMeta

        if isinstance(data, SearchMeta):
            tensors = self._catalog.tensor_loader(px_size, recipe)(data.ids)
            blobs = self._catalog.near_blobs(data.ids, px_size, recipe)
        else:
            tensors = data.tensors
            blobs = data.near if data.near is not None else [None] * len(data.paths)
        return tensors, near.stored_features(blobs, tensors)

    # -- watch --------------------------------------------------------------------------
    def watch(self, dirs: PathLike | Iterable[PathLike], **kwargs: Any) -> Watcher:
        """A watcher (context manager with start()/stop()) that keeps ``dirs`` current."""
        from .watch import Watcher

        return Watcher(self, _as_list(dirs), **kwargs)


def _query_banded(
    loader: Callable[[np.ndarray], np.ndarray], data: SearchMeta, q: np.ndarray, w: int, h: int,
    sp: SearchParams,
) -> list[match.Member]:
    """``match_against`` for one query without reading every tensor: only rows whose pixel
    sum is within the exact bound of the query's can match, and those are read in chunks
    of at most ``DEFAULT_MAX_BAND_ROWS``. Same members, order and rotations."""
    import numpy as np

    from . import match
    from .partition import DEFAULT_MAX_BAND_ROWS, band_width

    s = int(q.sum(dtype=np.int64))
    width = band_width(sp.threshold, q[0].size) if sp.threshold > 0 else 0
    rows = np.flatnonzero(np.abs(data.sums - s) <= width)
    if sp.same_dim:
        lo, hi = min(w, h), max(w, h)
        rows = rows[(np.minimum(data.widths[rows], data.heights[rows]) == lo)
                    & (np.maximum(data.widths[rows], data.heights[rows]) == hi)]
    found: list[match.Member] = []
    for c0 in range(0, len(rows), DEFAULT_MAX_BAND_ROWS):
        part = rows[c0 : c0 + DEFAULT_MAX_BAND_ROWS]
        res = match.match_against(q, np.array([w]), np.array([h]), loader(data.ids[part]),
                                  data.widths[part], data.heights[part], sp.threshold,
                                  rotate=sp.rotate, same_dim=sp.same_dim)[0]
        found.extend(match.Member(int(part[m.index]), m.mse, m.rotation) for m in res)
    return sorted(found, key=lambda m: (m.mse, m.index))


def _scan_options(recursive: bool, include_hidden: bool, limit_extensions: bool) -> ScanOptions:
    """What a walk tries: difPy's extensions plus those of the installed plugins (or every
    file); a file a missing plugin would read is skipped and named either way."""
    from .decode import image_extensions, missing_plugins
    from .scan import ScanOptions

    return ScanOptions(
        recursive=recursive, include_hidden=include_hidden,
        extensions=image_extensions() if limit_extensions else None,
        needs_extra={ext: p.extra for ext, p in missing_plugins().items()},
    )


def _as_list(items: PathLike | Iterable[PathLike]) -> list[PathLike]:
    if isinstance(items, (str, bytes, os.PathLike)):
        return [items]
    return list(items)


def _member_info(paths: Sequence[bytes], m: Any, orientation: int | None = None) -> MemberInfo:
    """A search member (match.Member, or near.NearMember with why it matched); ``paths``
    by row."""
    info = MemberInfo(display(paths[m.index]), float(m.mse), int(m.rotation),
                      orientation=orientation)
    measure = getattr(m, "measure", None)
    if measure is None:
        return info
    via = getattr(m, "via", None)
    return MemberInfo(info.path, info.mse, info.rotation, bool(m.mirror), measure, float(m.value),
                      orientation=orientation, via=None if via is None else display(paths[via]))


def _orientation_of(data: SearchInput | SearchMeta) -> Callable[[int], int | None]:
    """Row -> its EXIF orientation tag (None when the file has none, or not read)."""
    orientations = getattr(data, "orientations", None)
    if orientations is None:
        return lambda i: None
    values = orientations.tolist()
    return lambda i: values[i] or None


def _below(paths: list[bytes], folder: bytes) -> np.ndarray:
    import numpy as np

    base = folder_prefix(folder)
    return np.array([i for i, p in enumerate(paths) if p.startswith(base)], dtype=np.int64)


def _top_level(data: SearchInput | SearchMeta, folders: list[bytes]) -> SearchInput | SearchMeta:
    """Only the rows directly inside ``folders`` (a non-recursive search)."""
    import numpy as np

    tops = set(folders)
    keep = np.array(
        [i for i, p in enumerate(data.paths) if directly_in(p, tops)], dtype=np.int64
    )
    return data.take(keep)


def _under_any(paths: list[bytes], folders: Sequence[bytes]) -> np.ndarray:
    """Bool per path: it lies below one of ``folders``."""
    import numpy as np

    bases = tuple(folder_prefix(f) for f in folders)
    return np.fromiter((p.startswith(bases) for p in paths), dtype=bool, count=len(paths))


def _twin_groups(
    loader: Callable[[np.ndarray], np.ndarray], data: SearchMeta, subset: np.ndarray | None,
    sp: SearchParams, twins: tuple[np.ndarray, np.ndarray], band_rows: int,
    order: np.ndarray, protected: np.ndarray | None,
) -> list[match.Group]:
    """``find_groups`` at threshold 0 over only the rows the catalog found sharing a digest
    with another (``Catalog.twin_candidates``), read in chunks of whole digest classes of
    at most ``band_rows`` rows (a larger class is read whole). A row without a twin has no
    exact duplicate (equal tensors have equal digests), so the groups, keys, members and
    rotations are those of ``find_groups`` over every row; indices refer to ``data`` rows.
    """
    import numpy as np

    from . import match

    n = len(data.paths)
    rank = np.empty(n, dtype=np.int64)
    rank[np.asarray(order, dtype=np.intp)] = np.arange(n)
    ids, keys = twins
    by_id = np.argsort(data.ids, kind="stable")
    at = np.minimum(np.searchsorted(data.ids, ids, sorter=by_id), max(n - 1, 0))
    known = (data.ids[by_id[at]] == ids) if n else np.zeros(len(ids), dtype=bool)
    rows, keys = by_id[at[known]], keys[known]  # still sorted by digest
    if subset is not None:
        inside = np.isin(rows, np.asarray(subset, dtype=np.intp))
        rows, keys = rows[inside], keys[inside]
    bounds = np.r_[np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]), len(rows)]
    out: list[match.Group] = []
    s = 0
    while s < len(rows):
        # the last class start that keeps the chunk within band_rows (at least one class)
        e = int(bounds[np.searchsorted(bounds, s + band_rows, side="right") - 1])
        if e <= s:
            e = int(bounds[np.searchsorted(bounds, s, side="right")])
        r = rows[s:e]
        s = e
        if len(r) < 2:
            continue
        local = match.find_groups(
            loader(data.ids[r]), data.widths[r], data.heights[r], data.sizes[r],
            [data.paths[i] for i in r], 0.0, rotate=sp.rotate, same_dim=sp.same_dim,
            order=np.argsort(rank[r], kind="stable"),
            protected=None if protected is None else np.asarray(protected, dtype=bool)[r],
        )
        out.extend(
            match.Group(int(r[g.key]), tuple(match.Member(int(r[m.index]), m.mse, m.rotation)
                                             for m in g.members))
            for g in local
        )
    out.sort(key=lambda g: int(rank[g.key]))
    return out


def _banded(
    loader: Callable[[np.ndarray], np.ndarray], data: SearchMeta, subset: np.ndarray | None,
    sp: SearchParams, band_rows: int, executor: Executor | None, order: np.ndarray,
    protected: np.ndarray | None,
) -> list[match.Group]:
    """``find_groups`` through the partitioned search; indices refer to ``data`` rows.

    The rank is taken from the same keep-rule ``order`` ``find_groups`` claims in."""
    import numpy as np

    from . import match
    from .partition import partitioned_groups

    n = len(data.paths)
    rows = np.arange(n) if subset is None else np.unique(np.asarray(subset, dtype=np.intp))
    full = np.empty(n, dtype=np.int64)
    full[np.asarray(order, dtype=np.intp)] = np.arange(n)
    found = partitioned_groups(
        loader, data.ids[rows], data.sums[rows], data.widths[rows], data.heights[rows],
        sp.px_size, full[rows], [data.paths[i] for i in rows], sp.threshold, rotate=sp.rotate,
        same_dim=sp.same_dim,
        max_band_rows=band_rows, executor=executor,
        protected=None if protected is None else np.asarray(protected, dtype=bool)[rows],
    )
    return [
        match.Group(int(rows[g.key]), tuple(match.Member(int(rows[m.index]), m.mse, m.rotation)
                                            for m in g.members))
        for g in found
    ]
