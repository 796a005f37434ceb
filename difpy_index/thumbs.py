"""Review-page thumbnails, made once and reused.

Making thumbnails was most of the review page's build time, and the same photos come back
in every review. Each thumbnail is kept in a folder beside the catalog
(``<catalog>.thumbs/``), one file per (image path, thumbnail size), holding the size,
mtime and ctime of the image it was made from: a changed image (new bytes, ``touch``,
``chmod``...) misses and is made again, in place, so the folder holds at most one entry
per image and size. ``update --thumbnails`` makes them ahead of time, in the decode pool.

Nothing here touches the database; a broken or unwritable cache only costs time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

THUMB_PX = 160  #: longest side of a thumbnail
TASK_FILES = 16  #: files per worker task
INLINE_BELOW = 24  #: fewer files than this are thumbnailed in-process


@dataclass(frozen=True, slots=True)
class Thumb:
    """A worker's answer for one file: an encoded thumbnail and what the file was when it
    was made (``error``: no preview, the page shows a placeholder)."""

    path: bytes
    data: bytes | None = None
    mime: str = ""
    width: int = 0
    height: int = 0
    size: int = 0
    mtime: float = 0.0
    error: str | None = None
    mtime_ns: int = 0
    ctime_ns: int = 0


def _init_thumb_worker(max_pixels: int | None) -> None:
    import warnings

    from PIL import Image

    from .decode import init_worker

    init_worker(max_pixels)
    Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.simplefilter("error", Image.DecompressionBombWarning)


def make_thumb(path: bytes, px: int = THUMB_PX) -> Thumb:
    """Thumbnail one file (any format ``decode`` reads, RAW files from their preview);
    any failure becomes ``error``."""
    import io

    from PIL import Image

    from .decode import open_image

    try:
        st = os.stat(path)
    except OSError as exc:
        return Thumb(path, error=exc.strerror or "cannot stat")
    try:
        with open(path, "rb") as fh, open_image(fh, path, fast=False, min_side=px) as op:
            img = op.image
            img.draft("RGB", (px, px))  # a JPEG decodes at 1/2..1/8 scale: much faster
            alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
            small = img.convert("RGBA" if alpha else "RGB")
            small.thumbnail((px, px), Image.Resampling.LANCZOS, reducing_gap=2.0)
            small = _upright(small, op.orientation)
            buf = io.BytesIO()
            if alpha:
                small.save(buf, "PNG", optimize=False)
                mime = "image/png"
            else:
                small.save(buf, "JPEG", quality=75)
                mime = "image/jpeg"
    except Exception as exc:
        from .decode import one_line

        return Thumb(path, None, "", 0, 0, st.st_size, st.st_mtime, one_line(exc),
                     st.st_mtime_ns, st.st_ctime_ns)
    return Thumb(path, buf.getvalue(), mime, op.width, op.height, st.st_size, st.st_mtime, None,
                 st.st_mtime_ns, st.st_ctime_ns)


def _upright(small: Any, orientation: int | None) -> Any:
    """The thumbnail turned the way a photo viewer shows the file (its EXIF orientation);
    only the preview: the tensor ignores the tag, as difPy does."""
    from PIL import ImageOps

    if orientation is None or orientation == 1:
        return small
    exif = small.getexif()
    exif[0x0112] = orientation
    small.info["exif"] = exif.tobytes()
    return ImageOps.exif_transpose(small)


def thumb_batch(paths: list[bytes], px: int) -> list[Thumb]:
    return [make_thumb(p, px) for p in paths]


class ThumbCache:
    """Thumbnails on disk, one file per (image path, size), valid while the image's size,
    mtime and ctime are unchanged."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    @classmethod
    def beside(cls, catalog: str | os.PathLike[str]) -> ThumbCache:
        """The cache of a catalog file: ``<catalog>.thumbs/`` next to it."""
        return cls(Path(os.fspath(catalog) + ".thumbs"))

    def _stem(self, path: bytes) -> Path:
        """``<folder>/<2 hex>/<62 hex>``: the SHA-256 of the image path, split; each
        thumbnail size of that image is ``<stem>-<px>``."""
        digest = hashlib.sha256(path).hexdigest()
        return self.folder / digest[:2] / digest[2:]

    def _file(self, path: bytes, px: int) -> Path:
        stem = self._stem(path)
        return stem.with_name(f"{stem.name}-{px}")

    def get(self, path: bytes, px: int = THUMB_PX) -> Thumb | None:
        """The cached thumbnail, if it was made from the file as it is now."""
        try:
            st = os.stat(path)
            raw = self._file(path, px).read_bytes()
            head, _, data = raw.partition(b"\n")
            meta = json.loads(head)
        except (OSError, ValueError):
            return None
        if (meta.get("path") != os.fsdecode(path)
                or (meta.get("size"), meta.get("mtime_ns"), meta.get("ctime_ns"))
                != (st.st_size, st.st_mtime_ns, st.st_ctime_ns)):
            return None
        return Thumb(path, data or None, meta.get("mime", ""), meta.get("width", 0),
                     meta.get("height", 0), st.st_size, st.st_mtime, meta.get("error"),
                     st.st_mtime_ns, st.st_ctime_ns)

    def put(self, thumb: Thumb, px: int = THUMB_PX) -> None:
        """Keep ``thumb`` (atomically; failures to write are ignored: it is a cache)."""
        if not thumb.mtime_ns:
            return  # the file could not even be stat'ed: nothing to key it by
        meta = {"path": os.fsdecode(thumb.path), "size": thumb.size, "mtime_ns": thumb.mtime_ns,
                "ctime_ns": thumb.ctime_ns, "mime": thumb.mime, "width": thumb.width,
                "height": thumb.height, "error": thumb.error}
        dest = self._file(thumb.path, px)
        tmp = dest.with_name(f"{dest.name}.{os.getpid()}.tmp")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(json.dumps(meta).encode() + b"\n" + (thumb.data or b""))
            os.replace(tmp, dest)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def drop(self, paths: Sequence[bytes]) -> int:
        """Forget the thumbnails of these images (moved, deleted, forgotten): how many."""
        n = 0
        for path in paths:
            stem = self._stem(path)
            with contextlib.suppress(OSError):
                for entry in stem.parent.glob(f"{stem.name}-*"):
                    with contextlib.suppress(OSError):
                        entry.unlink()
                        n += 1
        return n

    def prune(self, live: Iterable[bytes]) -> int:
        """Delete every thumbnail whose image is not in ``live`` (the catalog's paths), and
        temporary files a killed writer left an hour ago or more: how many were deleted."""
        import time

        if not self.folder.is_dir():
            return 0
        keep = {hashlib.sha256(p).hexdigest() for p in live}
        old = time.time() - 3600
        n = 0
        for entry in self._entries():
            name = entry.name
            stale = (entry.parent.name + name.split("-", 1)[0]) not in keep
            if name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    stale = entry.stat().st_mtime < old
            if stale:
                with contextlib.suppress(OSError):
                    entry.unlink()
                    n += 1
        return n

    def _entries(self) -> Iterator[Path]:
        with contextlib.suppress(OSError):
            for sub in self.folder.iterdir():
                if len(sub.name) == 2 and sub.is_dir():
                    with contextlib.suppress(OSError):
                        yield from sub.iterdir()


def make_thumbs(paths: Sequence[bytes], px: int = THUMB_PX, processes: int | None = None,
                max_pixels: int | None = None, cache: ThumbCache | None = None) -> dict[bytes, Thumb]:
    """Thumbnails of every path: from ``cache`` when current, the rest made in worker
    processes (when there are enough of them) and kept in ``cache``."""
    from functools import partial

    from .decode import DEFAULT_MAX_PIXELS
    from .pool import default_processes, map_batches

    out: dict[bytes, Thumb] = {}
    todo: list[bytes] = []
    for p in paths:
        hit = cache.get(p, px) if cache is not None else None
        if hit is not None:
            out[p] = hit
        else:
            todo.append(p)
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    procs = default_processes() if processes is None else max(1, processes)

    def keep(thumbs: list[Thumb]) -> None:
        for t in thumbs:
            out[t.path] = t
            if cache is not None:
                cache.put(t, px)

    lost = map_batches(partial(thumb_batch, px=px), todo, keep, processes=procs,
                       initializer=_init_thumb_worker, initargs=(limit,),
                       batch=TASK_FILES, inline_below=INLINE_BELOW)
    for p in lost:  # a decoder crash: no preview, never a crash of ours
        out.setdefault(p, Thumb(p, error="preview crashed the decoder"))
    return out
