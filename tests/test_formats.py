"""Optional formats (HEIC, AVIF, JPEG XL, camera RAW), EXIF orientation, the fast recipe.

Every file here is written by the test itself: HEIC by pillow-heif, AVIF by Pillow, JPEG XL
by pillow-jxl-plugin, DNG (a real CFA raw file that LibRaw develops) by tifffile. A test
skips, with the reason, only when the plugin that reads the format is not installed (the
``test`` extra installs them all, so CI runs every one).
"""

from __future__ import annotations

import os
from pathlib import Path

import imagefactory as factory
import numpy as np
import pytest
from PIL import Image, features

from difpy_index import decode
from difpy_index.decode import DEFAULT_MAX_PIXELS, decode_file, init_worker

#: documented in docs/formats.md: the fast recipe's tensors stay within this MSE of the
#: exact recipe's (measured on the benchmark corpus: median 0.2, max 1.4)
FAST_MSE_BOUND = 3.0


def b(path: object) -> bytes:
    return os.fsencode(path)


def tensor(d: decode.Decoded, px: int = 50) -> np.ndarray:
    return np.frombuffer(d.tensors[px], dtype=np.uint8).reshape(px, px, 3)


def mse(a: np.ndarray, b_: np.ndarray) -> float:
    return float(((a.astype(np.int64) - b_.astype(np.int64)) ** 2).mean())


def difpy_recipe(img: Image.Image, px: int = 50) -> np.ndarray:
    """SEMANTICS.md section 2, written out independently of decode.py."""
    if img.getbands() != ("R", "G", "B"):
        img = img.convert("RGB")
    return np.asarray(img.resize((px, px), Image.Resampling.BICUBIC))


@pytest.fixture(autouse=True)
def _plugins_registered():
    saved = Image.MAX_IMAGE_PIXELS
    init_worker(DEFAULT_MAX_PIXELS)
    yield
    init_worker(DEFAULT_MAX_PIXELS)
    Image.MAX_IMAGE_PIXELS = saved


def photo(seed: int, width: int, height: int) -> Image.Image:
    """A picture with detail at every scale (smooth shapes plus fine texture)."""
    base = factory.synthetic_array(seed, width, height).astype(np.float64)
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    texture = 25 * np.sin(x / (2 + seed % 5)) * np.cos(y / (3 + seed % 3))
    noise = rng.normal(0, 6, base.shape)
    arr = np.clip(base + texture[..., None] + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


# --------------------------------------------------------------------- RAW (DNG) writer
def _dng_tags(orientation: int) -> list[tuple]:
    matrix: list[int] = []
    for v in (1, 0, 0, 0, 1, 0, 0, 0, 1):
        matrix += [v * 10000, 10000]
    return [
        (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
        (50708, "s", 0, "difpy-index test camera", True),  # UniqueCameraModel
        (271, "s", 0, "difpy-index", True),
        (272, "s", 0, "test", True),
        (274, "H", 1, orientation, True),
        (50721, "2i", 9, matrix, True),  # ColorMatrix1: identity
        (50778, "H", 1, 21, True),  # CalibrationIlluminant1: D65
        (50728, "2I", 3, (1, 1, 1, 1, 1, 1), True),  # AsShotNeutral
    ]


def write_dng(path: Path, rgb: np.ndarray, orientation: int = 1,
              preview: np.ndarray | None = None) -> Path:
    """A real DNG: an RGGB Bayer mosaic of ``rgb`` (linear light, 12 bit), optionally with
    an RGB preview in IFD 0 and the raw in a SubIFD, as cameras and converters write it."""
    tifffile = pytest.importorskip("tifffile", reason="tifffile writes the test DNGs")
    h, w, _ = rgb.shape
    lin = (rgb.astype(np.float64) / 255.0) ** 2.2 * 4000 + 64
    cfa = np.zeros((h, w), np.uint16)
    cfa[0::2, 0::2] = lin[0::2, 0::2, 0]
    cfa[0::2, 1::2] = lin[0::2, 1::2, 1]
    cfa[1::2, 0::2] = lin[1::2, 0::2, 1]
    cfa[1::2, 1::2] = lin[1::2, 1::2, 2]
    cfa_tags = [
        (33421, "H", 2, (2, 2), True),  # CFARepeatPatternDim
        (33422, "B", 4, (0, 1, 1, 2), True),  # CFAPattern: RGGB
        (50714, "H", 1, 64, True),  # BlackLevel
        (50717, "H", 1, 4095, True),  # WhiteLevel
    ]
    with tifffile.TiffWriter(path) as tif:
        if preview is None:
            tif.write(cfa, photometric=32803, extratags=_dng_tags(orientation) + cfa_tags)
        else:
            tif.write(preview, photometric="rgb", subfiletype=1, subifds=1,
                      extratags=_dng_tags(orientation))
            tif.write(cfa, photometric=32803, subfiletype=0, extratags=cfa_tags)
    return path


needs_heif = pytest.mark.skipif(not decode.PLUGINS[0].available(),
                                reason="pillow-heif not installed (extra 'heif')")
needs_avif = pytest.mark.skipif(not features.check("avif"),
                                reason="this Pillow has no AVIF support (extra 'avif')")
needs_raw = pytest.mark.skipif(not decode.PLUGINS[2].available(),
                               reason="rawpy not installed (extra 'raw')")
needs_jxl = pytest.mark.skipif(not decode.PLUGINS[3].available(),
                               reason="pillow-jxl-plugin not installed (extra 'jxl')")


# ------------------------------------------------------------- HEIC, AVIF, JPEG XL
@pytest.mark.parametrize(
    ("ext", "fmt", "mark"),
    [("heic", "HEIF", needs_heif), ("heif", "HEIF", needs_heif), ("avif", "AVIF", needs_avif),
     ("jxl", "JXL", needs_jxl)],
)
def test_optional_format_decodes_with_difpys_recipe(tmp_path, ext, fmt, mark):
    if mark.args[0]:
        pytest.skip(mark.kwargs["reason"])
    src = photo(3, 96, 64)
    p = tmp_path / f"pic.{ext}"
    src.save(p, quality=90)
    d = decode_file(b(p), (50, 16))
    assert d.error is None and not d.gone, d.error
    assert (d.width, d.height) == (96, 64)
    assert d.format == fmt
    assert ext in decode.image_extensions()
    # the exact recipe on the plugin's own decode, bit for bit
    with Image.open(p) as img:
        assert tensor(d).tobytes() == difpy_recipe(img).tobytes()
        assert tensor(d, 16).tobytes() == difpy_recipe(img, 16).tobytes()
    # and the picture is the source (lossy, chroma subsampled: close, not equal)
    same = mse(tensor(d), difpy_recipe(src))
    assert same < mse(tensor(d), difpy_recipe(photo(4, 96, 64))) / 20, same


@needs_heif
def test_heic_with_alpha_and_grey(tmp_path):
    rgba = photo(5, 40, 30).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(tmp_path / "a.heic")
    photo(6, 40, 30).convert("L").save(tmp_path / "g.heic")
    for name in ("a.heic", "g.heic"):
        d = decode_file(b(tmp_path / name), (50,))
        assert d.error is None, d.error
        with Image.open(tmp_path / name) as img:
            assert tensor(d).tobytes() == difpy_recipe(img).tobytes()


# ------------------------------------------------------------------------------ RAW
@needs_raw
def test_dng_demosaiced_when_no_preview(tmp_path):
    src = np.asarray(photo(7, 240, 160))
    p = write_dng(tmp_path / "shot.dng", src, orientation=6)
    d = decode_file(b(p), (50,))
    assert d.error is None and not d.gone, d.error
    # the size of the developed picture in sensor orientation; the tag is recorded
    assert (d.width, d.height) == (240, 160)
    assert d.orientation == 6
    assert d.format == "RAW"
    ours = tensor(d)
    # LibRaw's development (white balance, gamma, auto-bright) is not the source's encoding,
    # but the picture is the same one: far closer to its source than to any other picture
    same = mse(ours, difpy_recipe(Image.fromarray(src)))
    other = mse(ours, difpy_recipe(photo(8, 240, 160)))
    assert same < other / 4, (same, other)


@needs_raw
def test_dng_uses_full_frame_preview(tmp_path):
    src = np.asarray(photo(9, 240, 160))
    preview = np.asarray(Image.fromarray(src).resize((120, 80), Image.Resampling.LANCZOS))
    p = write_dng(tmp_path / "with_preview.dng", src, orientation=8, preview=preview)
    d = decode_file(b(p), (50,))
    assert d.error is None, d.error
    assert (d.width, d.height, d.orientation) == (240, 160, 8)
    # the tensor is the exact recipe on the camera's own rendering
    assert tensor(d).tobytes() == difpy_recipe(Image.fromarray(preview)).tobytes()


@needs_raw
def test_dng_letterboxed_or_tiny_preview_is_not_used(tmp_path):
    src = np.asarray(photo(10, 240, 160))
    boxed = np.zeros((120, 160, 3), np.uint8)  # 4:3 thumbnail with bars around a 3:2 picture
    boxed[13:107] = np.asarray(Image.fromarray(src).resize((160, 94)))
    tiny = np.asarray(Image.fromarray(src).resize((30, 20)))
    plain = decode_file(b(write_dng(tmp_path / "plain.dng", src)), (50,))
    for name, prev in (("boxed.dng", boxed), ("tiny.dng", tiny)):
        d = decode_file(b(write_dng(tmp_path / name, src, preview=prev)), (50,))
        assert d.error is None, d.error
        assert d.tensors == plain.tensors, f"{name}: the demosaic must be used"


@needs_raw
def test_raw_bomb_limit_and_broken_raw(tmp_path):
    p = write_dng(tmp_path / "big.dng", np.asarray(photo(11, 120, 80)))
    init_worker(5000)
    d = decode_file(b(p), (50,))
    assert d.error and "decompression bomb" in d.error and "\n" not in d.error
    init_worker(DEFAULT_MAX_PIXELS)
    broken = tmp_path / "broken.nef"
    broken.write_bytes(p.read_bytes()[:300])
    d = decode_file(b(broken), (50,))
    assert d.error and not d.gone and "\n" not in d.error
    assert decode_file(b(p), (50,)).error is None


# --------------------------------------------------------------------- EXIF orientation
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
def test_exif_orientation_recorded_never_applied(tmp_path, fmt):
    src = photo(12, 48, 32)
    plain = tmp_path / f"plain.{fmt.lower()}"
    src.save(plain, fmt, quality=95)
    ref = decode_file(b(plain), (50,))
    assert ref.orientation is None and ref.format == fmt
    for value in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = value
        p = tmp_path / f"o{value}.{fmt.lower()}"
        src.save(p, fmt, quality=95, exif=exif.tobytes())
        d = decode_file(b(p), (50,))
        assert d.error is None, d.error
        assert d.orientation == value
        with Image.open(p) as img:  # what difPy sees, bit for bit
            assert tensor(d).tobytes() == difpy_recipe(img).tobytes()
            assert (d.width, d.height) == img.size
        if fmt != "TIFF":  # Pillow itself transposes TIFFs on load (so difPy sees that)
            assert (d.width, d.height) == (48, 32)  # stored pixels, unrotated
            assert d.tensors == ref.tensors  # the tensor ignores the tag, as difPy does


def test_out_of_range_orientation_is_none(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 42
    p = tmp_path / "odd.jpg"
    photo(13, 40, 30).save(p, quality=90, exif=exif.tobytes())
    d = decode_file(b(p), (50,))
    assert d.error is None and d.orientation is None


# ------------------------------------------------------------------------ fast recipe
def test_recipe_tags_differ():
    assert decode.recipe(fast=True) != decode.recipe()
    assert decode.is_fast(decode.recipe(fast=True)) and not decode.is_fast(decode.recipe())


@pytest.mark.parametrize(
    ("fmt", "size"),
    [("JPEG", (2000, 1333)), ("JPEG", (1024, 768)), ("JPEG", (333, 500)), ("JPEG", (60, 40)),
     ("PNG", (1200, 900)), ("WEBP", (900, 1200))],
)
def test_fast_tensors_close_to_exact(tmp_path, fmt, size):
    p = tmp_path / f"big.{fmt.lower()}"
    photo(14 + size[0] % 7, *size).save(p, fmt, quality=88)
    exact = decode_file(b(p), (50, 32))
    fast = decode_file(b(p), (50, 32), fast=True)
    assert exact.error is None and fast.error is None
    # dimensions are the file's, never the reduced decode's
    assert (fast.width, fast.height) == (exact.width, exact.height) == size
    for px in (50, 32):
        assert mse(tensor(fast, px), tensor(exact, px)) <= FAST_MSE_BOUND
    if fmt == "JPEG" and min(size) >= 8 * 8 * 50:
        assert fast.tensors != exact.tensors  # a reduced decode really happened


def test_fast_draft_really_reduces_large_jpegs(tmp_path):
    p = tmp_path / "large.jpg"
    photo(20, 1800, 1600).save(p, quality=90)
    with open(p, "rb") as fh, decode.open_image(fh, b(p), fast=True, min_side=50) as op:
        assert (op.width, op.height) == (1800, 1600)
        assert op.image.size == (450, 400)  # 1/4 scale keeps >= 8 * 50 px per axis
    with open(p, "rb") as fh, decode.open_image(fh, b(p), fast=False, min_side=50) as op:
        assert op.image.size == (1800, 1600)
