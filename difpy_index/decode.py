"""Image -> difPy tensor, run inside decode worker processes (never touches the catalog).

The recipe is difPy 4.2.1's, bit for bit (SEMANTICS.md section 2): open with Pillow,
``convert('RGB')`` unless the bands are exactly R, G, B, resize to ``px x px`` with
BICUBIC, keep uint8. Unlike difPy, Pillow warnings do not invalidate a file, except the
decompression-bomb warning.
"""

from __future__ import annotations

import os
import stat
import warnings
from dataclasses import dataclass, field

#: Bumped whenever the tensor recipe changes; stored with every tensor.
RECIPE_VERSION = "difpy421-bicubic-1"
DEFAULT_PX_SIZE = 50
MIN_PX_SIZE = 10
MAX_PX_SIZE = 5000
#: Pillow's own default decompression-bomb limit.
DEFAULT_MAX_PIXELS = 89_478_485

#: difPy 4.2.1's extension list, plus bmp (SEMANTICS.md section 1).
IMAGE_EXTENSIONS = frozenset(
    """apng bw cdf cur dcx dds dib emf eps fli flc fpx ftex fits gd gd2 gif gbr icb icns iim
    ico im imt j2k jfif jfi jif jp2 jpe jpeg jpg jpm jpf jpx mic mpo msp nc pbm pcd pcx pgm
    png ppm psd pixar ras rgb rgba sgi spi spider sun tga tif tiff vda vst wal webp xbm xpm
    bmp""".split()
)
HEIF_EXTENSIONS = frozenset({"heic", "heif", "avif"})


def recipe() -> str:
    """The recipe tag: our version plus Pillow's major version (its resampler may change)."""
    import PIL

    return f"{RECIPE_VERSION}-pillow{PIL.__version__.split('.')[0]}"


def heif_available() -> bool:
    try:
        import pillow_heif  # noqa: F401
    except ImportError:
        return False
    return True


def image_extensions() -> frozenset[str]:
    return IMAGE_EXTENSIONS | HEIF_EXTENSIONS if heif_available() else IMAGE_EXTENSIONS


@dataclass(frozen=True, slots=True)
class Decoded:
    """What a worker sends back for one file. ``error`` set means the file is invalid;
    ``gone`` means it vanished (or kept changing) and must not be recorded at all."""

    path: bytes
    size: int = 0
    mtime_ns: int = 0
    inode: int = 0
    width: int = 0
    height: int = 0
    tensors: dict[int, bytes] = field(default_factory=dict)
    error: str | None = None
    gone: bool = False


def one_line(exc: BaseException) -> str:
    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):
        return "UnidentifiedImageError: file could not be identified as image."
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        text = exc.strerror  # the path is already the row's key
    if type(exc).__name__ not in text:
        text = f"{type(exc).__name__}: {text}"
    return " ".join(text.split())[:500]


_worker_max_pixels: int | None = DEFAULT_MAX_PIXELS


def init_worker(max_pixels: int | None) -> None:
    """Pool initializer: the bomb limit is a setting, applied in every worker."""
    global _worker_max_pixels
    _worker_max_pixels = max_pixels
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
    except ImportError:
        pass


def image_to_arrays(img: object, px_sizes: tuple[int, ...]) -> tuple[int, int, dict[int, bytes]]:
    """difPy's recipe on an opened Pillow image: (width, height, {px: uint8 bytes})."""
    import numpy as np
    from PIL import Image

    assert isinstance(img, Image.Image)
    if img.getbands() != ("R", "G", "B"):
        img = img.convert("RGB")
    else:
        img.load()
    width, height = img.size
    out: dict[int, bytes] = {}
    for px in px_sizes:
        small = img.resize((px, px), resample=Image.Resampling.BICUBIC)
        arr = np.asarray(small, dtype=np.uint8)
        if arr.shape != (px, px, 3):
            raise ValueError(f"unexpected tensor shape {arr.shape}")
        out[px] = arr.tobytes()
    return width, height, out


def decode_file(path: bytes, px_sizes: tuple[int, ...]) -> Decoded:
    """Decode one file; every failure becomes a value, never an exception."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = _worker_max_pixels
    try:
        # O_NONBLOCK: a path swapped for a FIFO since the scan must not hang the worker
        # (it has no effect on regular files); non-regular files are rejected below.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except (FileNotFoundError, NotADirectoryError):
        return Decoded(path, gone=True)
    except OSError as exc:
        st = _stat_or_none(path)
        if st is None:
            return Decoded(path, gone=True)
        return Decoded(path, st.st_size, st.st_mtime_ns, st.st_ino, error=one_line(exc))
    before = os.fstat(fd)
    stat_fields = (before.st_size, before.st_mtime_ns, before.st_ino)
    if not stat.S_ISREG(before.st_mode):
        os.close(fd)
        return Decoded(path, *stat_fields, error="not a regular file")
    with open(fd, "rb") as fh:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(fh) as img:
                    width, height, tensors = image_to_arrays(img, px_sizes)
        except Exception as exc:  # any decoder failure makes the file invalid
            result = Decoded(path, *stat_fields, error=one_line(exc))
        else:
            result = Decoded(path, *stat_fields, width=width, height=height, tensors=tensors)
        after = os.fstat(fh.fileno())
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        return Decoded(path, gone=True)  # still being written: try again on the next update
    return result


def decode_batch(paths: list[bytes], px_sizes: tuple[int, ...]) -> list[Decoded]:
    """One pool task: a few files, to amortise the inter-process round trip."""
    return [decode_file(p, px_sizes) for p in paths]


def _stat_or_none(path: bytes) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None
