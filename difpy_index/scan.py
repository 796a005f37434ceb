"""Discover image files under folders: os.scandir (never glob), symlinks followed with loop
protection, each file identified by its resolved real path (OS bytes)."""

from __future__ import annotations

import os
import stat as stat_mod
from collections.abc import Iterable
from dataclasses import dataclass, field

from .errors import UsageError
from .fileops import ASIDE_PREFIX, recover_aside
from .paths import real_dir


@dataclass(frozen=True, slots=True)
class FileStat:
    path: bytes  # real path, OS bytes
    size: int
    mtime_ns: int
    inode: int
    root: bytes  # the root under which it was found first
    ctime_ns: int = 0  # part of the change test: ``touch -r`` cannot set it back


@dataclass(slots=True)
class ScanOptions:
    recursive: bool = True
    include_hidden: bool = False
    extensions: frozenset[str] | None = None  # None: every regular file is tried
    #: extension -> the install extra whose plugin would read it (not installed): such
    #: files are skipped and named, whatever ``extensions`` says
    needs_extra: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class RootScan:
    root: bytes
    missing: bool = False
    entries_seen: int = 0
    unreadable: list[bytes] = field(default_factory=list)


@dataclass(slots=True)
class ScanResult:
    files: list[FileStat] = field(default_factory=list)
    roots: list[RootScan] = field(default_factory=list)
    skipped: int = 0  # not tried because of their extension
    skipped_paths: list[bytes] = field(default_factory=list)
    problems: list[tuple[bytes, str]] = field(default_factory=list)
    #: files an interrupted action had left aside, and what became of them
    restored: list[tuple[bytes, str]] = field(default_factory=list)
    #: skipped files a missing plugin would read: (path, install extra)
    needs_extra: list[tuple[bytes, str]] = field(default_factory=list)


def extension_of(name: bytes) -> str:
    """The file's own suffix, lower-cased ('' when none)."""
    base = os.path.basename(name)
    dot = base.rfind(b".")
    if dot <= 0:
        return ""
    return base[dot + 1 :].decode("utf-8", "surrogateescape").lower()


def wanted(name: bytes, options: ScanOptions) -> bool:
    ext = extension_of(name)
    if ext in options.needs_extra:
        return False
    return options.extensions is None or ext in options.extensions


def extra_for(name: bytes, options: ScanOptions) -> str | None:
    """The install extra that would read this file, if its plugin is what is missing."""
    return options.needs_extra.get(extension_of(name)) if options.needs_extra else None


def check_dirs(dirs: Iterable[str | bytes | os.PathLike[str]]) -> list[bytes]:
    """Real paths of folder arguments, deduplicated in order; a file is a usage error."""
    out: list[bytes] = []
    for d in dirs:
        real = real_dir(d)
        if os.path.exists(real) and not os.path.isdir(real):
            raise UsageError(f"not a folder: {os.fsdecode(real)}")
        if real not in out:
            out.append(real)
    return out


def scan(roots: list[bytes], options: ScanOptions) -> ScanResult:
    """Walk every root; a file reached twice (overlap, symlink) is listed once."""
    result = ScanResult()
    seen_files: set[bytes] = set()
    for root in roots:
        rs = RootScan(root)
        result.roots.append(rs)
        if not os.path.isdir(root):
            rs.missing = True
            continue
        _walk(root, root, options, result, rs, seen_files, set())
    return result


def _walk(
    root: bytes,
    folder: bytes,
    options: ScanOptions,
    result: ScanResult,
    rs: RootScan,
    seen_files: set[bytes],
    active: set[tuple[int, int]],
) -> None:
    """Depth-first; ``active`` holds the (dev, inode) of folders on the current path,
    which stops symlink loops while still allowing two links to one folder."""
    try:
        st = os.stat(folder)
        key = (st.st_dev, st.st_ino)
        if key in active:
            result.problems.append((folder, "symlink loop, not followed"))
            return
        entries = list(os.scandir(folder))
        if any(e.name.startswith(ASIDE_PREFIX) for e in entries):
            # files an interrupted action had moved aside go back first, then are found
            result.restored.extend(recover_aside(folder))
            entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return  # vanished or replaced by a file mid-scan: its files are gone
    except OSError as exc:
        rs.unreadable.append(folder)
        result.problems.append((folder, f"cannot read folder: {exc.strerror or exc}"))
        return
    active.add(key)
    try:
        subdirs: list[bytes] = []
        for entry in sorted(entries, key=lambda e: e.name):
            rs.entries_seen += 1
            name = entry.name
            if not options.include_hidden and name.startswith(b"."):
                continue
            try:
                is_link = entry.is_symlink()
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:
                continue
            if is_dir:
                if options.recursive:
                    subdirs.append(os.path.realpath(entry.path) if is_link else entry.path)
                continue
            if not wanted(name, options):
                result.skipped += 1
                result.skipped_paths.append(entry.path)
                extra = extra_for(name, options)
                if extra is not None:
                    result.needs_extra.append((entry.path, extra))
                continue
            try:
                fst = entry.stat(follow_symlinks=True)
            except FileNotFoundError:
                if is_link:
                    result.problems.append((entry.path, "broken symlink"))
                continue
            except OSError as exc:
                result.problems.append((entry.path, exc.strerror or str(exc)))
                continue
            if not stat_mod.S_ISREG(fst.st_mode):
                continue
            real = os.path.realpath(entry.path) if is_link else entry.path
            if real in seen_files:
                continue
            seen_files.add(real)
            result.files.append(FileStat(real, fst.st_size, fst.st_mtime_ns, fst.st_ino, root,
                                         fst.st_ctime_ns))
        for sub in subdirs:
            _walk(root, sub, options, result, rs, seen_files, active)
    finally:
        active.discard(key)
