"""Image -> difPy tensor, run inside decode worker processes (never touches the catalog).

The exact recipe is difPy 4.2.1's, bit for bit (SEMANTICS.md section 2): open with Pillow,
``convert('RGB')`` unless the bands are exactly R, G, B, resize to ``px x px`` with
BICUBIC, keep uint8. Unlike difPy, Pillow warnings do not invalidate a file, except the
decompression-bomb warning.

The fast recipe (``update --fast``) decodes JPEGs at a reduced DCT scale (``draft``, never
below 8x the tensor side) and resizes every format in two steps (``reducing_gap=3``): about
half the work per JPEG, with tensors typically a fraction of an MSE unit from the exact ones
(docs/formats.md).

Formats beyond Pillow's own come from optional plugins, each in an install extra:
HEIC/HEIF (``pillow-heif``), AVIF (Pillow >= 11.3), camera RAW files (``rawpy``, the
embedded preview JPEG or LibRaw's demosaic), JPEG XL (``pillow-jxl-plugin``).
"""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from concurrent.futures import Executor

#: Bumped whenever the tensor recipe changes; stored with every tensor.
RECIPE_VERSION = "difpy421-bicubic-1"
#: The fast recipe's tag: never equal to the exact one, so the two are never mixed.
FAST_RECIPE_VERSION = "fast-draft8-gap3-1"
#: The fast recipe decodes JPEGs at the smallest DCT scale that keeps this many pixels
#: per tensor pixel on each axis, then reduces by whole factors while >= REDUCING_GAP.
FAST_DRAFT_FACTOR = 8
FAST_REDUCING_GAP = 3.0
DEFAULT_PX_SIZE = 50
MIN_PX_SIZE = 10
#: The largest px_size (difPy allows 5000): a tensor is px*px*3 bytes in the catalog and
#: a search needs up to ~25x that per image in its worst case (docs/reliability.md).
MAX_PX_SIZE = 256
#: Pillow's own default decompression-bomb limit.
DEFAULT_MAX_PIXELS = 89_478_485



@dataclass(frozen=True, slots=True)
class DecodeSettings:
    """What every decode of one update shares: the tensor sizes to make, the recipe they
    are stored under, the worker count (None: every core) and the bomb limit."""

    px_sizes: tuple[int, ...]
    recipe: str
    processes: int | None = None
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    #: decode on this ``concurrent.futures`` executor (e.g. a Dask client's) instead of a
    #: pool of our own; its workers need the same file paths
    executor: Executor | None = None


#: difPy 4.2.1's extension list, plus bmp (SEMANTICS.md section 1).
IMAGE_EXTENSIONS = frozenset(
    """apng bw cdf cur dcx dds dib emf eps fli flc fpx ftex fits gd gd2 gif gbr icb icns iim
    ico im imt j2k jfif jfi jif jp2 jpe jpeg jpg jpm jpf jpx mic mpo msp nc pbm pcd pcx pgm
    png ppm psd pixar ras rgb rgba sgi spi spider sun tga tif tiff vda vst wal webp xbm xpm
    bmp""".split()
)
HEIF_EXTENSIONS = frozenset({"heic", "heif", "hif"})
AVIF_EXTENSIONS = frozenset({"avif", "avifs"})
JXL_EXTENSIONS = frozenset({"jxl"})
#: Camera RAW files LibRaw reads (Canon, Nikon, Sony, Adobe DNG, Fujifilm, Olympus,
#: Panasonic, Pentax, Samsung, Leica, Hasselblad, Phase One, Kodak, Minolta, Sigma...).
RAW_EXTENSIONS = frozenset(
    """3fr ari arw bay cr2 cr3 crw dcr dcs dng erf fff iiq k25 kdc mdc mef mos mrw nef nrw
    orf pef raf raw rw2 rwl sr2 srf srw x3f""".split()
)
#: LibRaw's ``flip`` -> the EXIF orientation it stands for.
_LIBRAW_FLIP_TO_EXIF = {0: 1, 3: 3, 5: 8, 6: 6}


@dataclass(frozen=True, slots=True)
class FormatPlugin:
    """A family of formats that needs an optional package (named by its install extra)."""

    name: str
    extra: str
    extensions: frozenset[str]
    module: str  # what must be importable ('' : a Pillow feature, see ``available``)
    label: str = ""  # what the files are called in messages

    def available(self) -> bool:
        if self.name == "avif":
            from PIL import features

            return bool(features.check("avif"))
        import importlib.util

        try:  # found, not imported: the main process never pays for the plugin's import
            return importlib.util.find_spec(self.module) is not None
        except (ImportError, ValueError):
            return False


PLUGINS = (
    FormatPlugin("heif", "heif", HEIF_EXTENSIONS, "pillow_heif", "HEIC/HEIF"),
    FormatPlugin("avif", "avif", AVIF_EXTENSIONS, "", "AVIF"),
    FormatPlugin("raw", "raw", RAW_EXTENSIONS, "rawpy", "camera RAW"),
    FormatPlugin("jxl", "jxl", JXL_EXTENSIONS, "pillow_jxl", "JPEG XL"),
)
EXTRA_LABELS = {p.extra: p.label for p in PLUGINS}


def recipe(fast: bool = False) -> str:
    """The recipe tag: our version plus Pillow's major version (its resampler may change)."""
    import PIL

    return f"{FAST_RECIPE_VERSION if fast else RECIPE_VERSION}-pillow{PIL.__version__.split('.')[0]}"


def is_fast(recipe_tag: str) -> bool:
    return recipe_tag.startswith(FAST_RECIPE_VERSION)


def heif_available() -> bool:
    return PLUGINS[0].available()


def image_extensions() -> frozenset[str]:
    """difPy's list plus the extensions of every plugin that is installed."""
    out = set(IMAGE_EXTENSIONS)
    for plugin in PLUGINS:
        if plugin.available():
            out |= plugin.extensions
    return frozenset(out)


def missing_plugins() -> dict[str, FormatPlugin]:
    """Extension -> the plugin that would read it, for every plugin not installed: such
    files are skipped (and named) rather than recorded invalid, so installing the extra
    later picks them up."""
    return {ext: p for p in PLUGINS if not p.available() for ext in p.extensions}


@dataclass(frozen=True, slots=True)
class Decoded:
    """What a worker sends back for one file. ``error`` set means the file is invalid;
    ``gone`` means it vanished (or kept changing) and must not be recorded at all.
    ``orientation`` is the EXIF orientation tag (1-8, None when absent): recorded, never
    applied to the tensor (difPy ignores it too); ``format`` is Pillow's format name
    ('RAW' for camera RAW files)."""

    path: bytes
    size: int = 0
    mtime_ns: int = 0
    inode: int = 0
    width: int = 0
    height: int = 0
    tensors: dict[int, bytes] = field(default_factory=dict)
    error: str | None = None
    gone: bool = False
    orientation: int | None = None
    format: str | None = None
    #: st_ctime_ns when decoded: ``touch -r`` can set mtime back, never ctime
    ctime_ns: int = 0
    #: px -> (plain, turned) digests of that tensor (``tensorhash``; made by ``decode_batch``)
    digests: dict[int, tuple[int, int]] = field(default_factory=dict)
    #: {px: the ``near`` preset's features of that tensor} (made per task: ``with_near``)
    near: dict[int, bytes] = field(default_factory=dict)


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
    """Pool initializer: the bomb limit is a setting, applied in every worker; the
    optional format plugins that are installed are registered with Pillow."""
    global _worker_max_pixels
    _worker_max_pixels = max_pixels
    register_plugins()


def register_plugins() -> None:
    """Teach Pillow the optional formats whose plugin is installed (idempotent)."""
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
    except ImportError:
        pass
    try:
        import pillow_jxl  # noqa: F401  (registers the JXL plugin on import)
    except ImportError:
        pass


@dataclass(slots=True)
class Opened:
    """A file opened for the tensor: the pixels to resize (for a RAW file its preview or
    demosaic), and what is recorded about the file itself."""

    image: Any  # PIL.Image.Image
    width: int
    height: int
    orientation: int | None
    format: str


def exif_orientation(img: Any) -> int | None:
    """The EXIF orientation tag (1-8) of an opened Pillow image; None when absent or
    unreadable (broken metadata never makes a file invalid)."""
    try:
        value = img.getexif().get(0x0112)
    except Exception:  # metadata is optional
        return None
    return _orientation_value(value)


def _orientation_value(value: Any) -> int | None:
    """An orientation tag's value if it is one of the eight EXIF defines, else None."""
    return value if isinstance(value, int) and 1 <= value <= 8 else None


@contextmanager
def open_image(
    fh: IO[bytes], path: bytes, *, fast: bool = False, min_side: int = DEFAULT_PX_SIZE
) -> Iterator[Opened]:
    """Open any supported file: Pillow (and its registered plugins), or rawpy for RAW
    extensions. ``fast`` lets a JPEG decode at a reduced DCT scale that still keeps
    ``FAST_DRAFT_FACTOR * min_side`` pixels per axis."""
    from PIL import Image

    from .scan import extension_of

    if extension_of(path) in RAW_EXTENSIONS and PLUGINS[2].available():
        yield open_raw(fh, fast=fast, min_side=min_side)
        return
    with Image.open(fh) as img:
        width, height = img.size
        fmt = img.format or ""
        if fast:
            draft_to(img, min_side * FAST_DRAFT_FACTOR)
            if fmt in _CODEC_FORMATS:
                decoded = _codec_decode(img, fh)
                if decoded is not None:
                    yield Opened(decoded[0], width, height, decoded[1], fmt)
                    return
        yield Opened(img, width, height, exif_orientation(img), fmt)


#: Formats Pillow decodes at full size only, which imagecodecs (the ``fast`` extra)
#: decodes to the same pixels faster: libspng (with zlib-ng) and libwebp.
_CODEC_FORMATS = {"PNG": "spng_decode", "WEBP": "webp_decode"}
_codecs: Any = None


def _codec_decode(img: Any, fh: IO[bytes]) -> tuple[Any, int | None] | None:
    """The fast recipe's PNG/WEBP decode through imagecodecs, when installed: the same
    8-bit RGB(A) pixels Pillow would give (tests/test_formats.py checks it file by file),
    wrapped as a Pillow image, and the EXIF orientation; None (decode with Pillow instead)
    for anything else: other modes, 16-bit samples, animations, a decoder error."""
    global _codecs
    if _codecs is None:
        try:
            import imagecodecs as module
        except ImportError:
            _codecs = False
        else:
            _codecs = module
    if _codecs is False or img.mode not in ("RGB", "RGBA") or getattr(img, "is_animated", False):
        return None
    import numpy as np
    from PIL import Image

    try:
        fh.seek(0)
        data = fh.read()
        arr = getattr(_codecs, _CODEC_FORMATS[img.format])(data)
    except Exception:  # let Pillow decode it (and name its error)
        return None
    width, height = img.size
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[:2] != (height, width) or arr.shape[2] not in (3, 4):
        return None
    pixels = Image.fromarray(np.ascontiguousarray(arr[..., :3]), "RGB")
    if img.format == "PNG" and "exif" not in img.info:
        # Pillow would decode the whole PNG again to look for an eXIf chunk after the data
        return pixels, _png_late_orientation(data)
    return pixels, exif_orientation(img)


def _png_late_orientation(data: bytes) -> int | None:
    """The EXIF orientation of a PNG whose eXIf chunk (if any) follows the image data,
    read by walking the chunk headers: what Pillow's ``getexif`` finds after a load."""
    from PIL import Image

    pos, end = 8, len(data)
    while pos + 8 <= end:
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        if kind == b"eXIf":
            exif = Image.Exif()
            try:
                exif.load(b"Exif\x00\x00" + data[pos + 8:pos + 8 + length])
                value = exif.get(0x0112)
            except Exception:  # broken metadata never makes a file invalid
                return None
            return _orientation_value(value)
        if kind == b"IEND":
            break
        pos += 12 + length
    return None


def draft_to(img: Any, side: int) -> None:
    """Ask a JPEG to decode at the smallest DCT scale (1/2, 1/4, 1/8) that keeps at least
    ``side`` pixels on each axis; a no-op for other formats."""
    img.draft("RGB", (side, side))


def open_raw(fh: IO[bytes], *, fast: bool = False, min_side: int = DEFAULT_PX_SIZE) -> Opened:
    """A camera RAW file through LibRaw (rawpy). The recorded size is the developed image's
    (sensor orientation, as a camera JPEG stores its pixels); the tensor comes from the
    embedded preview when it is a full-frame picture (same aspect ratio, at least
    ``min_side`` pixels on its short side): the camera's own rendering, which is what its
    JPEG twin shows; else from LibRaw's half-size demosaic with the camera's white balance.
    """
    import io

    import rawpy
    from PIL import Image

    source: Any = fh  # rawpy reads any binary file object
    with rawpy.imread(source) as raw:
        sizes = raw.sizes
        width, height = int(sizes.width), int(sizes.height)
        limit = _worker_max_pixels
        if limit is not None and width * height > limit:
            raise Image.DecompressionBombError(
                f"Image size ({width * height} pixels) exceeds limit of {limit} pixels, "
                "could be decompression bomb DOS attack."
            )
        orientation = _LIBRAW_FLIP_TO_EXIF.get(int(sizes.flip))
        image: Any = None
        try:
            thumb = raw.extract_thumb()
        except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
            thumb = None
        if thumb is not None:
            data: Any = thumb.data  # bytes for a JPEG, an RGB array for a bitmap
            if thumb.format == rawpy.ThumbFormat.JPEG:
                image = Image.open(io.BytesIO(data))
                if fast:
                    draft_to(image, min_side * FAST_DRAFT_FACTOR)
            else:
                image = Image.fromarray(data)
            pw, ph = image.size
            full_frame = abs(pw * height - ph * width) <= 0.02 * width * ph
            if not full_frame or min(pw, ph) < min_side:
                image = None
        if image is None:
            rgb = raw.postprocess(use_camera_wb=True, half_size=True, user_flip=0, output_bps=8)
            image = Image.fromarray(rgb)
    return Opened(image, width, height, orientation, "RAW")


def tensors_of(img: Any, px_sizes: tuple[int, ...], fast: bool = False) -> dict[int, bytes]:
    """The recipe on an opened Pillow image: {px: uint8 (px, px, 3) bytes}. Exact: difPy's
    (convert unless the bands are exactly R, G, B; one BICUBIC resize). Fast: the same,
    but the resize first reduces by whole factors while at least 3x too large."""
    import numpy as np
    from PIL import Image

    assert isinstance(img, Image.Image)
    if img.getbands() != ("R", "G", "B"):
        img = img.convert("RGB")
    else:
        img.load()
    gap = FAST_REDUCING_GAP if fast else None
    out: dict[int, bytes] = {}
    for px in px_sizes:
        small = img.resize((px, px), resample=Image.Resampling.BICUBIC, reducing_gap=gap)
        arr = np.asarray(small, dtype=np.uint8)
        if arr.shape != (px, px, 3):
            raise ValueError(f"unexpected tensor shape {arr.shape}")
        out[px] = arr.tobytes()
    return out


def decode_file(path: bytes, px_sizes: tuple[int, ...], fast: bool = False) -> Decoded:
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
        return Decoded(path, st.st_size, st.st_mtime_ns, st.st_ino, error=one_line(exc),
                       ctime_ns=st.st_ctime_ns)
    before = os.fstat(fd)
    ctime = before.st_ctime_ns
    stat_fields = (before.st_size, before.st_mtime_ns, before.st_ino)
    if not stat.S_ISREG(before.st_mode):
        os.close(fd)
        return Decoded(path, *stat_fields, error="not a regular file", ctime_ns=ctime)
    with open(fd, "rb") as fh:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with open_image(fh, path, fast=fast, min_side=max(px_sizes)) as op:
                    tensors = tensors_of(op.image, px_sizes, fast)
        except Exception as exc:  # any decoder failure makes the file invalid
            result = Decoded(path, *stat_fields, error=one_line(exc), ctime_ns=ctime)
        else:
            result = Decoded(path, *stat_fields, width=op.width, height=op.height,
                             tensors=tensors, orientation=op.orientation,
                             format=op.format[:16] or None, ctime_ns=ctime)
        after = os.fstat(fh.fileno())
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) or after.st_ctime_ns != ctime:
        return Decoded(path, gone=True)  # still being written: try again on the next update
    return result


def decode_bytes(data: bytes, path: bytes, px_sizes: tuple[int, ...]) -> tuple[int, int, dict[int, bytes]]:
    """The exact recipe on a file already read into memory: (width, height, tensors).

    An action's proof reads a file once, hashes those bytes and decodes the same bytes, so
    what it later re-checks by hash is exactly what it compared. Raises on any failure."""
    import io

    from PIL import Image

    Image.MAX_IMAGE_PIXELS = _worker_max_pixels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with open_image(io.BytesIO(data), path, fast=False, min_side=max(px_sizes)) as op:
            return op.width, op.height, tensors_of(op.image, px_sizes, False)


def decode_batch(paths: list[bytes], px_sizes: tuple[int, ...], fast: bool = False) -> list[Decoded]:
    """One pool task: a few files, to amortise the inter-process round trip. Each tensor's
    digests and ``near`` features are made here too, on the worker, not by the catalog
    writer; the features for the whole batch at once (one vectorised pass is several
    times cheaper than one per file)."""
    return with_near([with_digests(decode_file(p, px_sizes, fast)) for p in paths])


def with_near(batch: list[Decoded]) -> list[Decoded]:
    """``batch`` with the ``near`` features of every tensor (``near.batch_blobs``)."""
    from dataclasses import replace

    from .near import batch_blobs

    blobs = iter(batch_blobs([d.tensors for d in batch if d.tensors]))
    return [replace(d, near=next(blobs)) if d.tensors else d for d in batch]


def with_digests(d: Decoded) -> Decoded:
    """``d`` with the digests of its tensors (``tensorhash.tensor_digests``)."""
    if not d.tensors:
        return d
    from dataclasses import replace

    from .tensorhash import tensor_digests

    return replace(d, digests={px: tensor_digests(b, px) for px, b in d.tensors.items()})


def _stat_or_none(path: bytes) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None
