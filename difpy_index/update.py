"""Incremental update: discover -> compare with the catalog -> decode what changed -> write.

Results are written in batches, each its own short transaction, so an interrupted update
keeps what it finished and the next one picks up the rest.
"""

from __future__ import annotations

import logging
import os
import stat as stat_mod
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .decode import Decoded, DecodeSettings, is_fast
from .paths import has_hidden_part, is_below, is_hidden, owning_root, rel_below
from .pool import decode_all, default_processes
from .scan import FileStat, ScanOptions, extension_of, extra_for, scan, wanted

if TYPE_CHECKING:
    from .progress import Progress
    from .store.catalog import Catalog, KnownFile

log = logging.getLogger(__name__)
BATCH = 256


@dataclass(slots=True)
class UpdateReport:
    """Counts over the updated folders; ``decoded + reused == files + invalid``."""

    decoded: int = 0
    reused: int = 0
    removed: int = 0
    invalid: int = 0
    skipped: int = 0
    files: int = 0
    renamed: int = 0
    deferred: int = 0
    seconds: float = 0.0
    roots: list[str] = field(default_factory=list)
    missing_roots: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    #: files that changed while being decoded (not recorded; the watcher retries them)
    deferred_paths: list[bytes] = field(default_factory=list)
    #: files passed over for their extension
    skipped_paths: list[bytes] = field(default_factory=list)
    #: undecodable files in the updated folders (this run's and known ones) and why
    invalid_files: dict[bytes, str] = field(default_factory=dict)
    #: skipped files whose format plugin is not installed: install extra -> paths
    needs_extra: dict[str, list[str]] = field(default_factory=dict)
    #: the recipe the decoded tensors were made with ('exact' or 'fast')
    recipe: str = "exact"
    #: review-page thumbnails checked or made (``update --thumbnails``; else 0)
    thumbnails: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "decoded": self.decoded, "reused": self.reused, "removed": self.removed,
            "invalid": self.invalid, "skipped": self.skipped, "files": self.files,
            "renamed": self.renamed, "deferred": self.deferred,
            "seconds": round(self.seconds, 4), "roots": self.roots,
            "missing_roots": self.missing_roots,
            "problems": [{"path": p, "reason": r} for p, r in self.problems],
            "invalid_files": [{"path": os.fsdecode(p), "reason": r}
                              for p, r in sorted(self.invalid_files.items())],
            "skipped_files": [{"path": os.fsdecode(p), "reason": skip_reason(p)}
                              for p in sorted(self.skipped_paths)],
            "needs_extra": self.needs_extra, "recipe": self.recipe,
            "thumbnails": self.thumbnails,
        }

    def note_needs_extra(self, path: bytes, extra: str) -> None:
        self.needs_extra.setdefault(extra, []).append(os.fsdecode(path))


def skip_reason(path: bytes) -> str:
    """Why a file was not tried: its format's plugin is not installed, or its extension is
    not an image type (see --all-extensions)."""
    from .decode import missing_plugins

    ext = extension_of(path)
    plugin = missing_plugins().get(ext)
    if plugin is not None:
        return (f"{plugin.label} needs an optional plugin: "
                f"pip install 'difpy-index[{plugin.extra}]'")
    return (f"extension .{ext} is not an image type" if ext else "no extension") + \
        " (--all-extensions tries every file)"


def access_error(reason: str | None) -> bool:
    """A failure to read the file (permissions, I/O), not a fault of its bytes: fixing it
    (chmod, remount) changes neither size nor mtime, so such files are tried again."""
    return reason is not None and (
        reason.startswith("PermissionError") or "Input/output error" in reason
    )


def rel_in_scope(rel: bytes, options: ScanOptions) -> bool:
    """Would a walk reach this path, given relative to its root (subfolders, hidden names)?"""
    if not options.recursive and b"/" in rel:
        return False
    return options.include_hidden or not has_hidden_part(rel)


def in_scope(row: KnownFile, root: bytes, root_id: int, options: ScanOptions) -> bool:
    """Would a walk of ``root`` with ``options`` have found this row's file?"""
    rel = rel_below(row.path, root)
    if rel is not None:
        if not rel_in_scope(rel, options):
            return False
    elif row.root_id != root_id:
        return False
    elif not options.include_hidden and is_hidden(row.path):
        return False
    return options.extensions is None or extension_of(row.path) in options.extensions


def run_update(
    catalog: Catalog,
    roots: list[bytes],
    options: ScanOptions,
    settings: DecodeSettings,
    progress: Progress,
) -> UpdateReport:
    """Bring the rows below ``roots`` in line with a walk of them."""
    t0 = time.perf_counter()
    report = UpdateReport(roots=[os.fsdecode(r) for r in roots],
                          recipe="fast" if is_fast(settings.recipe) else "exact")
    found = scan(roots, options)
    report.skipped = found.skipped
    report.skipped_paths = found.skipped_paths
    for path, extra in found.needs_extra:
        report.note_needs_extra(path, extra)
    report.problems = [(os.fsdecode(p), r) for p, r in found.problems + found.restored]
    root_ids = catalog.ensure_roots([rs.root for rs in found.roots if not rs.missing])

    # what the catalog knows about this scope (and about any file found outside it)
    known: dict[bytes, KnownFile] = {
        k.path: k for k in catalog.files_in([rs.root for rs in found.roots], list(root_ids.values()))
    }
    stray = [f.path for f in found.files if f.path not in known]
    known.update(catalog.files_by_path(stray))

    # rows whose file is gone from a walked, present root
    discovered = {f.path for f in found.files}
    gone: list[KnownFile] = []
    for rs in found.roots:
        if rs.missing:
            report.missing_roots.append(os.fsdecode(rs.root))
            continue
        rid = root_ids[rs.root]
        scoped = [
            k for k in known.values()
            if k.path not in discovered and in_scope(k, rs.root, rid, options)
            and not any(is_below(k.path, u) for u in rs.unreadable)
        ]
        if scoped and rs.entries_seen == 0:
            # an empty root that used to hold files: most likely an unmounted drive
            report.missing_roots.append(os.fsdecode(rs.root))
            continue
        gone.extend(scoped)
    for m in report.missing_roots:
        log.warning("root %s is missing or empty (unmounted?): its catalog rows are kept", m)

    apply_changes(catalog, found.files, known, gone, root_ids, settings, progress, report)
    catalog.touch_roots(root_ids.values())
    if report.invalid:
        report.invalid_files = catalog.invalid_in([rs.root for rs in found.roots])
    report.seconds = time.perf_counter() - t0
    return report


def unchanged(row: KnownFile, f: FileStat) -> bool:
    """Is the file the one the row describes? Size, mtime, inode and ctime must all agree:
    an edit that keeps the size (BMP, TIFF, PPM) and sets the mtime back (``touch -r``)
    still moves ctime, and a file replaced by another one has another inode. A row with no
    ctime or inode (written before schema 0002) is "not seen yet": changed, once."""
    if row.ctime_ns is None or row.inode is None:
        return False
    return (row.size, row.mtime_ns, row.inode, row.ctime_ns) == (f.size, f.mtime_ns, f.inode, f.ctime_ns)


def apply_changes(
    catalog: Catalog,
    files: list[FileStat],
    known: dict[bytes, KnownFile],
    gone: list[KnownFile],
    root_ids: dict[bytes, int],
    settings: DecodeSettings,
    progress: Progress,
    report: UpdateReport,
) -> None:
    """The shared tail of ``run_update`` and ``run_update_paths``: reuse unchanged
    ``files``, let a row follow a renamed file, drop ``gone`` rows, decode the rest."""
    px_sizes, recipe = settings.px_sizes, settings.recipe
    # unchanged files are reused; the rest are decoded (or follow a rename)
    sizes_have = catalog.tensor_sizes(
        [k.id for f in files if (k := known.get(f.path)) is not None and k.status == "ok"],
        recipe,
    )
    todo: list[FileStat] = []
    need: dict[bytes, tuple[int, ...]] = {}
    for f in files:
        k = known.get(f.path)
        if k is not None and unchanged(k, f):
            if k.status == "invalid" and not access_error(k.error):
                report.reused += 1
                report.invalid += 1
                continue
            missing = tuple(px for px in px_sizes if px not in sizes_have.get(k.id, ()))
            if not missing:
                report.reused += 1
                report.files += 1
                continue
            need[f.path] = missing
        todo.append(f)

    # a new path with the size, mtime and inode of a vanished row is that file, renamed
    by_identity = {(g.size, g.mtime_ns, g.inode): g for g in gone if g.inode}
    still: list[FileStat] = []
    for f in todo:
        g = by_identity.pop((f.size, f.mtime_ns, f.inode), None) if f.path not in known else None
        if g is not None and catalog.move_row(g.path, f.path, f.size, f.mtime_ns, f.inode,
                                              root_ids.get(f.root), f.ctime_ns):
            gone.remove(g)
            report.renamed += 1
            if g.status == "invalid":
                report.invalid += 1
                report.reused += 1
                continue
            have = catalog.tensor_sizes([g.id], recipe).get(g.id, set())
            missing = tuple(px for px in px_sizes if px not in have)
            if missing:
                need[f.path] = missing
                still.append(f)
            else:
                report.reused += 1
                report.files += 1
        else:
            still.append(f)
    todo = still

    if gone:
        report.removed = catalog.remove([g.id for g in gone])

    root_of = {f.path: root_ids.get(f.root) or known[f.path].root_id for f in todo}
    progress.start(len(todo), "decoding")
    batch: list[Decoded] = []

    def flush() -> None:
        if batch:
            catalog.record(batch, root_of, recipe)
            batch.clear()

    def on_result(results: list[Decoded]) -> None:
        for d in results:
            if d.gone:
                report.deferred += 1
                report.deferred_paths.append(d.path)
                continue
            report.decoded += 1
            if d.error:
                report.invalid += 1
            else:
                report.files += 1
            batch.append(d)
        if len(batch) >= BATCH:
            flush()
        progress.advance(len(results))

    groups: dict[tuple[int, ...], list[bytes]] = {}
    for f in todo:
        groups.setdefault(need.get(f.path, px_sizes), []).append(f.path)
    try:
        for sizes, paths in groups.items():
            decode_all(paths, sizes, settings.processes or default_processes(),
                       settings.max_pixels, on_result, executor=settings.executor,
                       fast=is_fast(recipe))
    finally:
        flush()
        progress.finish()

    # rows of files that vanished between the walk and the decode
    vanished = [k.id for f in todo if (k := known.get(f.path)) and not os.path.lexists(f.path)]
    if vanished:
        report.removed += catalog.remove(vanished)


def run_update_paths(
    catalog: Catalog,
    paths: list[bytes],
    roots: list[bytes],
    options: ScanOptions,
    settings: DecodeSettings,
    progress: Progress,
) -> UpdateReport:
    """``run_update`` restricted to ``paths`` (the watcher's dirty set): each is re-stat'ed;
    a missing one loses its row, a changed one is decoded, and a vanished row whose size,
    mtime and inode reappear under another listed path follows it (a move, no decode).

    Paths outside ``roots`` or out of scope (extension, hidden) are ignored.
    """
    t0 = time.perf_counter()
    report = UpdateReport(roots=[os.fsdecode(r) for r in roots],
                          recipe="fast" if is_fast(settings.recipe) else "exact")
    root_ids = catalog.ensure_roots([r for r in roots if os.path.isdir(r)])
    files: list[FileStat] = []
    missing: list[bytes] = []
    for p in dict.fromkeys(paths):
        root = owning_root(p, roots)
        rel = rel_below(p, root) if root is not None else None
        if root not in root_ids or rel is None or not rel_in_scope(rel, options):
            continue
        if not wanted(p, options):
            report.skipped += 1
            extra = extra_for(p, options)
            if extra is not None and os.path.isfile(p):
                report.note_needs_extra(p, extra)
            continue
        try:
            st = os.stat(p)
        except (FileNotFoundError, NotADirectoryError):
            missing.append(p)
            continue
        except OSError as exc:
            report.problems.append((os.fsdecode(p), exc.strerror or str(exc)))
            continue
        if stat_mod.S_ISREG(st.st_mode):
            real = os.path.realpath(p) if os.path.islink(p) else p
            files.append(FileStat(real, st.st_size, st.st_mtime_ns, st.st_ino, root, st.st_ctime_ns))
        else:
            missing.append(p)  # replaced by a folder or a special file
    known = catalog.files_by_path([f.path for f in files] + missing)
    gone = [known[p] for p in missing if p in known]
    apply_changes(catalog, files, known, gone, root_ids, settings, progress, report)
    report.seconds = time.perf_counter() - t0
    return report
