"""Every path rule, spelled once. Paths are real absolute paths in OS bytes (as stored in
the catalog); a folder is below itself only where a function says "within"."""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable


def folder_prefix(folder: bytes) -> bytes:
    """``folder`` with exactly one trailing slash: every path below it starts with this."""
    return folder.rstrip(b"/") + b"/"


def is_below(path: bytes, folder: bytes) -> bool:
    """Is ``path`` strictly below ``folder`` (at any depth)?"""
    return path.startswith(folder_prefix(folder))


def is_within(path: bytes, folder: bytes) -> bool:
    """``folder`` itself or anything below it."""
    return path == (folder.rstrip(b"/") or b"/") or is_below(path, folder)


def rel_below(path: bytes, folder: bytes) -> bytes | None:
    """The part of ``path`` after ``folder/``; None when it is not strictly below."""
    base = folder_prefix(folder)
    return path[len(base) :] if path.startswith(base) else None


def folder_name(folder: bytes) -> bytes:
    """A folder's own name, trailing slash or not (``b""`` for ``/``)."""
    return os.path.basename(folder.rstrip(b"/"))


def owning_root(path: bytes, roots: Iterable[bytes]) -> bytes | None:
    """The deepest of ``roots`` that holds ``path`` (None: outside all of them)."""
    best: bytes | None = None
    for r in roots:
        if is_below(path, r) and (best is None or len(r) > len(best)):
            best = r
    return best


def directly_in(path: bytes, folders: Collection[bytes]) -> bool:
    """Is ``path`` an entry of one of ``folders`` itself, not of a subfolder?"""
    return os.path.dirname(path) in folders


def prefix_bounds(folder: bytes) -> tuple[bytes, bytes]:
    """The byte range holding every path strictly below ``folder`` (memcmp order, as
    SQLite compares BLOBs): ``lo <= path < hi`` exactly when ``is_below(path, folder)``."""
    base = folder_prefix(folder)
    return base, base[:-1] + b"0"  # '0' is the byte after '/'


def is_hidden(name: bytes) -> bool:
    """A dot file or dot folder (by its own name)."""
    return os.path.basename(name).startswith(b".")


def has_hidden_part(rel: bytes) -> bool:
    """Does a relative path pass through a hidden name (``a/.b/c``)?"""
    return any(part.startswith(b".") for part in rel.split(b"/"))


def real_dir(path: str | bytes | os.PathLike[str]) -> bytes:
    """A folder argument as its real absolute path in bytes (``~`` expanded)."""
    raw = os.fsencode(os.path.expanduser(os.fspath(path)))
    return os.path.realpath(raw)


def display(path: bytes) -> str:
    """A stored path as a ``str`` (undecodable bytes as surrogates: it round-trips)."""
    return os.fsdecode(path)


def printable(text: str) -> str:
    """Text safe to print or embed: undecodable bytes of a name become U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
