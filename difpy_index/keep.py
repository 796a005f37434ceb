"""Keep rules: which file of a group is its key (the one kept), as a total quality order.

A keep rule is an ordered list of criteria; the first one that tells two files apart
decides, and ``path`` (ascending) always ends the list, so the order is total and the
groups never depend on the order files were found in (SEMANTICS.md section 4). Files in
reference folders rank before every other file whatever the rules say.

Criteria (names as on the command line, ``--keep pixels,format,oldest``):

``pixels``          more pixels (width x height) first
``fewer-pixels``    fewer pixels first
``larger``          larger file first
``smaller``         smaller file first
``oldest``          older modification time first
``newest``          newer modification time first
``format``          camera formats (JPEG, HEIF, RAW) before conversions (PNG, WebP, ...)
``shallow``         fewer folders deep first
``deep``            more folders deep first
``path:PATTERN``    files matching PATTERN first
``path-last:PATTERN`` files matching PATTERN last
``path``            path ascending (always the last criterion, implied)
``difpy``           difPy's rule: ``pixels,larger,path``
``default``         :data:`DEFAULT_KEEP`

PATTERN is a glob (``*``, ``?``, ``[...]`` within one folder name, ``**`` any number of
folders). Ending in ``/`` it names folders: ``roll*/`` matches every file under a folder
called ``roll1``, ``roll2``, ... anywhere in the path. Otherwise it matches the end of the
path: ``*.jpg``, ``export/*.png``. A pattern starting with ``/`` or ``~`` is anchored at
the start of the (real, absolute) path; an existing folder given that way matches
everything under it. Matching is case-sensitive; a pattern cannot contain a comma.

This module is pure (numpy and the standard library): the caller hands it columns.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .decode import RAW_EXTENSIONS
from .errors import UsageError

__all__ = [
    "CAMERA_FORMATS", "DEFAULT_KEEP", "DIFPY_KEEP", "Criterion", "KeepColumns", "describe",
    "parse_keep", "quality_order",
]

#: The default: keeps the original in the common cases of a photo folder (a later copy:
#: same pixels, same format, newer mtime; a PNG/WebP conversion of a JPEG; a resized
#: export; a rotated re-save). Section "Keep rules" of docs/semantics.md explains each step.
DEFAULT_KEEP = "pixels,format,oldest,shallow,path"
#: difPy's own rule (the difPy drop-in always uses it).
DIFPY_KEEP = "pixels,larger,path"

#: Format names (as recorded at update) of what cameras and phones write: JPEG, MPO, HEIF
#: and camera RAW; everything else ranks after.
CAMERA_FORMATS = frozenset({"JPEG", "MPO", "HEIF", "HEIC", "RAW"})
_CAMERA_SUFFIXES = tuple(
    f".{s}".encode() for s in ["jpg", "jpeg", "jpe", "jfif", "heic", "heif", *sorted(RAW_EXTENSIONS)]
)

_SIMPLE = {
    "pixels", "fewer-pixels", "larger", "smaller", "oldest", "newest", "format",
    "shallow", "deep", "path",
}
_ALIASES = {"difpy": DIFPY_KEEP, "default": DEFAULT_KEEP}
_PATTERN_RULES = ("path:", "path-last:")


@dataclass(frozen=True, slots=True)
class Criterion:
    """One step of a keep rule; ``pattern`` only for ``path:`` / ``path-last:``."""

    name: str
    pattern: str | None = None

    def __str__(self) -> str:
        return self.name if self.pattern is None else f"{self.name}:{self.pattern}"


@dataclass(slots=True)
class KeepColumns:
    """Per-file columns the criteria read; row i is one file. ``formats`` may hold None
    (format not recorded yet): the file's suffix decides then."""

    paths: Sequence[bytes]
    widths: np.ndarray
    heights: np.ndarray
    sizes: np.ndarray
    mtimes: np.ndarray | None = None  # ns; None: every file equally old
    formats: Sequence[str | None] | None = None
    reference: np.ndarray | None = None  # bool: file lies in a reference folder


def parse_keep(spec: str | Iterable[str] | None) -> tuple[Criterion, ...]:
    """``"pixels,oldest"`` (or a list of such strings) -> criteria ending in ``path``.

    Raises ``UsageError`` naming the bad criterion. ``None`` or empty means the default.
    """
    parts: list[str] = []
    items = [spec] if isinstance(spec, str) else list(spec or [])
    for item in items:
        if not isinstance(item, str):
            raise UsageError(f"invalid keep rule {item!r}: must be a string like 'pixels,oldest'")
        parts.extend(p.strip() for p in item.split(","))
    parts = [p for p in parts if p]
    if not parts:
        parts = DEFAULT_KEEP.split(",")
    out: list[Criterion] = []
    for part in parts:
        low = part.lower()
        if low in _ALIASES:
            expanded = [Criterion(n) for n in _ALIASES[low].split(",")]
        elif low in _SIMPLE:
            expanded = [Criterion(low)]
        elif low.startswith(_PATTERN_RULES):
            name, _, pattern = part.partition(":")
            if not pattern:
                raise UsageError(f"invalid keep rule {part!r}: give a pattern after ':'")
            _compile(pattern)  # fail early on a bad pattern
            expanded = [Criterion(name.lower(), pattern)]
        else:
            raise UsageError(
                f"invalid keep rule {part!r}: use pixels, fewer-pixels, larger, smaller, "
                "oldest, newest, format, shallow, deep, path, path:PATTERN, "
                "path-last:PATTERN, difpy or default"
            )
        for c in expanded:
            if c not in out:
                out.append(c)
    if Criterion("path") in out:  # path ascending is total: nothing after it can matter
        out = out[: out.index(Criterion("path"))]
    return (*out, Criterion("path"))


def describe(criteria: Sequence[Criterion]) -> str:
    """The canonical text of a rule list (``pixels,oldest,path``)."""
    return ",".join(str(c) for c in criteria)


def _glob_part(part: str) -> str:
    """Regex for one path component glob (``*``, ``?``, ``[...]`` never cross ``/``)."""
    out, i = [], 0
    while i < len(part):
        c = part[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = part.find("]", i + 2 if part[i + 1 : i + 2] in ("!", "]") else i + 1)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = part[i + 1 : j]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\").replace("/", "") + "]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _compile(pattern: str) -> re.Pattern[str]:
    """A regex over a whole absolute path for one ``path:`` pattern (see module docs)."""
    pat = pattern
    anchored = pat.startswith(("/", "~"))
    if anchored:
        pat = os.path.expanduser(pat)
        if not any(ch in pat for ch in "*?[") and os.path.isdir(pat):
            pat = os.path.realpath(pat) + "/"
    folder = pat.endswith("/")
    parts = [p for p in pat.strip("/").split("/") if p]
    if not parts:
        raise UsageError(f"invalid keep pattern {pattern!r}: empty")
    body = ""
    for k, p in enumerate(parts):
        if p == "**":
            body += "(?:[^/]+/)*"
        else:
            body += _glob_part(p) + ("/" if k < len(parts) - 1 else "")
    head = "^/" if anchored else "(?:^|/)"
    tail = "/" if folder else "$"
    try:
        return re.compile(head + body + tail, re.DOTALL)
    except re.error as exc:
        raise UsageError(f"invalid keep pattern {pattern!r}: {exc}") from None


def _matches(pattern: str, paths: Sequence[bytes]) -> np.ndarray:
    rx = _compile(pattern)
    return np.fromiter(
        (rx.search(os.fsdecode(p)) is not None for p in paths), dtype=bool, count=len(paths)
    )


def _camera(formats: Sequence[str | None] | None, paths: Sequence[bytes]) -> np.ndarray:
    """True where the file is in a camera format (its recorded format, else its suffix)."""
    out = np.empty(len(paths), dtype=bool)
    for i, p in enumerate(paths):
        f = formats[i] if formats is not None else None
        out[i] = f.upper() in CAMERA_FORMATS if f else p.lower().endswith(_CAMERA_SUFFIXES)
    return out


def _path_rank(paths: Sequence[bytes]) -> np.ndarray:
    n = len(paths)
    rank = np.empty(n, dtype=np.int64)
    rank[sorted(range(n), key=paths.__getitem__)] = np.arange(n)
    return rank


def sort_keys(criteria: Sequence[Criterion], cols: KeepColumns) -> list[np.ndarray]:
    """One int64 column per criterion (reference first when given), smaller = kept first."""
    n = len(cols.paths)
    keys: list[np.ndarray] = []
    if cols.reference is not None:
        keys.append(np.where(np.asarray(cols.reference, dtype=bool), 0, 1).astype(np.int64))
    pixels = np.asarray(cols.widths, dtype=np.int64) * np.asarray(cols.heights, dtype=np.int64)
    sizes = np.asarray(cols.sizes, dtype=np.int64)
    mtimes = np.zeros(n, np.int64) if cols.mtimes is None else np.asarray(cols.mtimes, np.int64)
    for c in criteria:
        if c.name == "pixels":
            keys.append(-pixels)
        elif c.name == "fewer-pixels":
            keys.append(pixels)
        elif c.name == "larger":
            keys.append(-sizes)
        elif c.name == "smaller":
            keys.append(sizes)
        elif c.name == "oldest":
            keys.append(mtimes)
        elif c.name == "newest":
            keys.append(-mtimes)
        elif c.name == "format":
            keys.append(np.where(_camera(cols.formats, cols.paths), 0, 1).astype(np.int64))
        elif c.name in ("shallow", "deep"):
            depth = np.fromiter((p.count(b"/") for p in cols.paths), dtype=np.int64, count=n)
            keys.append(depth if c.name == "shallow" else -depth)
        elif c.pattern is not None:  # path:PATTERN first, path-last:PATTERN last
            hit = _matches(c.pattern, cols.paths)
            keys.append(np.where(hit == (c.name == "path"), 0, 1).astype(np.int64))
        elif c.name == "path":
            keys.append(_path_rank(cols.paths))
        else:  # pragma: no cover - parse_keep admits nothing else
            raise UsageError(f"unknown keep criterion {c}")
    return keys


def quality_order(criteria: Sequence[Criterion], cols: KeepColumns) -> np.ndarray:
    """Permutation of the rows, best (kept first) to worst: ``np.lexsort`` of the
    criteria's columns, so it is a total order whenever the paths are distinct."""
    n = len(cols.paths)
    if n == 0:
        return np.zeros(0, dtype=np.intp)
    keys = sort_keys(criteria, cols)
    if not criteria or criteria[-1] != Criterion("path"):
        keys.append(_path_rank(cols.paths))
    return np.lexsort(keys[::-1])
