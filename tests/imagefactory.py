"""Deterministic image writers for the test-suite.

Everything here is a pure function of its arguments (seed, size, ...), so tests can
rebuild the same bytes on every run and on every machine with the same Pillow.

* ``synthetic(seed, width, height)``: a smooth RGB picture with a few shapes, different
  enough between seeds that unrelated seeds never look like duplicates.
* near-duplicate makers (``Image -> Image``): :func:`jpeg_reencode`, :func:`resized`,
  :func:`rotated`, :func:`brightness`, :func:`noisy`.
* mode writers (``write_<kind>(path, seed)``), one per Pillow mode/format difPy meets,
  collected in :data:`MODE_WRITERS`.
* corrupt-file makers: :func:`write_truncated`, :func:`write_zero_bytes`,
  :func:`write_text_as_image`, :func:`write_garbage`, :func:`png_bomb_bytes` /
  :func:`write_png_bomb` (a tiny PNG that declares huge dimensions).
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

PathLike = str | os.PathLike[str]


# --------------------------------------------------------------------------- synthetic
def synthetic_array(seed: int, width: int = 64, height: int = 48) -> np.ndarray:
    """uint8 (height, width, 3): random-coefficient gradients plus random rectangles."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    x /= max(width - 1, 1)
    y /= max(height - 1, 1)
    chans = []
    for _ in range(3):
        a, b, c, f, ph = rng.uniform(-1, 1, 5)
        v = 128 + 90 * a * x + 90 * b * y + 40 * c * np.sin(2 * np.pi * (1 + 3 * abs(f)) * (x + y) + 3 * ph)
        chans.append(v)
    arr = np.stack(chans, axis=-1)
    for _ in range(int(rng.integers(2, 6))):
        x0, x1 = sorted(rng.integers(0, width + 1, 2))
        y0, y1 = sorted(rng.integers(0, height + 1, 2))
        arr[y0:y1, x0:x1] = rng.integers(0, 256, 3)
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def synthetic(seed: int, width: int = 64, height: int = 48, mode: str = "RGB") -> Image.Image:
    """A deterministic RGB image (converted to ``mode`` if given)."""
    img = Image.fromarray(synthetic_array(seed, width, height), "RGB")
    return img if mode == "RGB" else img.convert(mode)


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    """Encode ``img`` in memory (``fmt`` is a Pillow format name: PNG, JPEG, GIF, WEBP...)."""
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def save(img: Image.Image, path: PathLike, **params: object) -> str:
    """Save (format from the suffix) and return the path as str."""
    img.save(path, **params)
    return os.fspath(path)


def write_synthetic(path: PathLike, seed: int, width: int = 64, height: int = 48, **params: object) -> str:
    return save(synthetic(seed, width, height), path, **params)


# ------------------------------------------------------------------ near duplicates
def jpeg_reencode(img: Image.Image, quality: int = 75) -> Image.Image:
    """Round-trip through JPEG at ``quality`` (the classic 'same photo, saved again')."""
    out = Image.open(io.BytesIO(encode(img.convert("RGB"), "JPEG", quality=quality)))
    out.load()
    return out


def resized(img: Image.Image, scale: float = 0.5, resample: int = Image.LANCZOS) -> Image.Image:
    w, h = img.size
    return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), resample=resample)


def rotated(img: Image.Image, degrees: int = 90) -> Image.Image:
    """Lossless counter-clockwise rotation by a multiple of 90 degrees."""
    ops = {0: None, 90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180,
           270: Image.Transpose.ROTATE_270}
    op = ops[degrees % 360]
    return img.copy() if op is None else img.transpose(op)


def brightness(img: Image.Image, delta: int = 10) -> Image.Image:
    """Add ``delta`` to every channel (clipped)."""
    arr = np.asarray(img.convert("RGB"), dtype=np.int16) + delta
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def noisy(img: Image.Image, sigma: float = 3.0, seed: int = 0) -> Image.Image:
    """Add deterministic Gaussian noise of standard deviation ``sigma``."""
    rng = np.random.default_rng(seed)
    arr = np.asarray(img.convert("RGB"), dtype=np.float64)
    arr = arr + rng.normal(0.0, sigma, arr.shape)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")


# ---------------------------------------------------------------------- mode writers
def _palette_image(seed: int, width: int = 40, height: int = 30, colors: int = 16) -> Image.Image:
    return synthetic(seed, width, height).quantize(colors=colors, method=Image.Quantize.MEDIANCUT)


def write_rgb_png(path: PathLike, seed: int = 1) -> str:
    return save(synthetic(seed, 41, 33), path)


def write_rgb_jpeg(path: PathLike, seed: int = 2) -> str:
    return save(synthetic(seed, 57, 43), path, quality=90)


def write_progressive_jpeg(path: PathLike, seed: int = 3) -> str:
    return save(synthetic(seed, 60, 45), path, quality=80, progressive=True, subsampling=2)


def write_exif_rotated_jpeg(path: PathLike, seed: int = 4) -> str:
    """Orientation tag 6 (rotate 90 CW on display): difPy ignores it, so must we."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return save(synthetic(seed, 48, 24), path, quality=90, exif=exif.tobytes())


def write_rgba_png(path: PathLike, seed: int = 5) -> str:
    """RGBA with fully transparent pixels that still store colour (alpha is dropped)."""
    arr = synthetic_array(seed, 37, 29)
    alpha = np.full(arr.shape[:2], 255, np.uint8)
    alpha[:, : arr.shape[1] // 2] = 0
    alpha[5:9, :] = 100
    return save(Image.fromarray(np.dstack([arr, alpha]), "RGBA"), path)


def write_la_png(path: PathLike, seed: int = 6) -> str:
    img = synthetic(seed, 35, 27, "L")
    alpha = Image.new("L", img.size, 0)
    ImageDraw.Draw(alpha).ellipse((4, 4, 30, 22), fill=255)
    img.putalpha(alpha)
    return save(img, path)


def write_l_png(path: PathLike, seed: int = 7) -> str:
    return save(synthetic(seed, 39, 31, "L"), path)


def write_l_jpeg(path: PathLike, seed: int = 8) -> str:
    return save(synthetic(seed, 39, 31, "L"), path, quality=85)


def write_1_png(path: PathLike, seed: int = 9) -> str:
    return save(synthetic(seed, 45, 23, "1"), path)


def write_p_png(path: PathLike, seed: int = 10) -> str:
    img = _palette_image(seed)
    assert "transparency" not in img.info
    return save(img, path)


def write_p_gif(path: PathLike, seed: int = 11) -> str:
    return save(_palette_image(seed, 33, 21), path)


def write_p_png_index_transparency(path: PathLike, seed: int = 12) -> str:
    """P with a single transparent palette index (converts fine in difPy)."""
    return save(_palette_image(seed), path, transparency=3)


def write_p_png_bytes_transparency(path: PathLike, seed: int = 13) -> str:
    """P with a multi-entry tRNS chunk (pngquant style). difPy rejects it (Pillow
    warns 'Palette images with Transparency expressed in bytes...'); we decode it."""
    img = _palette_image(seed)
    return save(img, path, transparency=bytes([0, 64, 128, 200, 255, 17]))


def write_cmyk_jpeg(path: PathLike, seed: int = 14) -> str:
    return save(synthetic(seed, 43, 35, "CMYK"), path, quality=90)


def write_cmyk_tiff(path: PathLike, seed: int = 15) -> str:
    return save(synthetic(seed, 43, 35, "CMYK"), path)


def write_rgb_tiff(path: PathLike, seed: int = 16) -> str:
    return save(synthetic(seed, 30, 50), path, compression="tiff_deflate")


def write_f_tiff(path: PathLike, seed: int = 17) -> str:
    """Mode F (32-bit float): clipped and truncated to 0..255 by convert('RGB')."""
    arr = synthetic_array(seed, 26, 22)[..., 0].astype(np.float32) * 1.7 - 60.25
    return save(Image.fromarray(arr, "F"), path)


def write_i16_png(path: PathLike, seed: int = 18) -> str:
    """16-bit grey spanning the full range: clipped (not scaled) to 0..255."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 65536, (24, 32), dtype=np.uint16)
    arr[:, :10] = rng.integers(0, 300, (24, 10), dtype=np.uint16)  # some values below 256
    return save(Image.frombytes("I;16", (arr.shape[1], arr.shape[0]), arr.astype("<u2").tobytes()), path)


def _frames(seed: int, n: int, width: int, height: int) -> list[Image.Image]:
    return [synthetic(seed + 1000 * i, width, height) for i in range(n)]


def write_animated_gif(path: PathLike, seed: int = 19) -> str:
    frames = [f.quantize(colors=32) for f in _frames(seed, 3, 36, 28)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    return os.fspath(path)


def write_animated_png(path: PathLike, seed: int = 20) -> str:
    """APNG (first frame is what difPy sees)."""
    frames = _frames(seed, 3, 34, 26)
    frames[0].save(path, format="PNG", save_all=True, append_images=frames[1:], duration=50)
    return os.fspath(path)


def write_webp_lossy(path: PathLike, seed: int = 21) -> str:
    return save(synthetic(seed, 47, 39), path, quality=80)


def write_webp_lossless_rgba(path: PathLike, seed: int = 22) -> str:
    img = synthetic(seed, 31, 25).convert("RGBA")
    img.putalpha(Image.linear_gradient("L").resize(img.size))
    return save(img, path, lossless=True)


def write_tiny_1x1(path: PathLike, seed: int = 23) -> str:
    return save(synthetic(seed, 1, 1), path)


def write_tiny_2x3(path: PathLike, seed: int = 24) -> str:
    return save(synthetic(seed, 2, 3), path)


def write_wide_4000x3(path: PathLike, seed: int = 25) -> str:
    return save(synthetic(seed, 4000, 3), path)


def write_tall_3x4000(path: PathLike, seed: int = 26) -> str:
    return save(synthetic(seed, 3, 4000), path, quality=90)


#: file name -> writer(path, seed=default). The suffix is the one difPy must accept.
MODE_WRITERS: dict[str, Callable[..., str]] = {
    "rgb.png": write_rgb_png,
    "rgb.jpg": write_rgb_jpeg,
    "progressive.jpeg": write_progressive_jpeg,
    "exif_rot6.jpg": write_exif_rotated_jpeg,
    "rgba.png": write_rgba_png,
    "la.png": write_la_png,
    "l.png": write_l_png,
    "l.jpg": write_l_jpeg,
    "bilevel.png": write_1_png,
    "p.png": write_p_png,
    "p.gif": write_p_gif,
    "p_trns_index.png": write_p_png_index_transparency,
    "p_trns_bytes.png": write_p_png_bytes_transparency,
    "cmyk.jpg": write_cmyk_jpeg,
    "cmyk.tif": write_cmyk_tiff,
    "rgb.tiff": write_rgb_tiff,
    "float.tif": write_f_tiff,
    "i16.png": write_i16_png,
    "animated.gif": write_animated_gif,
    "animated.apng": write_animated_png,
    "lossy.webp": write_webp_lossy,
    "lossless_rgba.webp": write_webp_lossless_rgba,
    "tiny_1x1.png": write_tiny_1x1,
    "tiny_2x3.png": write_tiny_2x3,
    "wide_4000x3.png": write_wide_4000x3,
    "tall_3x4000.jpg": write_tall_3x4000,
}

#: Files difPy 4.2.1 itself rejects (a Pillow UserWarning becomes an error there).
DIFPY_REJECTS = frozenset({"p_trns_bytes.png"})


# ---------------------------------------------------------------------- corrupt files
def write_bytes(path: PathLike, data: bytes) -> str:
    with open(path, "wb") as fh:
        fh.write(data)
    return os.fspath(path)


def write_truncated(path: PathLike, data: bytes, keep: float | int = 0.5) -> str:
    """Write the first ``keep`` bytes (int) or fraction (float) of ``data``."""
    n = keep if isinstance(keep, int) else int(len(data) * keep)
    return write_bytes(path, data[:n])


def write_zero_bytes(path: PathLike) -> str:
    return write_bytes(path, b"")


def write_text_as_image(path: PathLike) -> str:
    """A text file, typically named ``something.jpg``."""
    return write_bytes(path, b"this is not an image\nreally, it is a text file\n")


def write_garbage(path: PathLike, seed: int = 0, size: int = 4096) -> str:
    return write_bytes(path, np.random.default_rng(seed).bytes(size))


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bomb_bytes(width: int, height: int) -> bytes:
    """A ~100-byte 8-bit RGB PNG that *declares* ``width x height``: Pillow's
    decompression-bomb check fires at open time, before any pixel is decoded. (If the
    check is disabled, decoding fails as truncated, after allocating the full image.)"""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def write_png_bomb(path: PathLike, width: int = 10_000, height: int = 10_000) -> str:
    return write_bytes(path, png_bomb_bytes(width, height))


def small_valid_files(seed: int = 0) -> dict[str, bytes]:
    """Small valid encodings (PNG, JPEG, GIF, WEBP) of one synthetic image, for fuzzing."""
    img = synthetic(seed, 16, 12)
    return {
        "png": encode(img, "PNG"),
        "jpg": encode(img, "JPEG", quality=80),
        "gif": encode(img.quantize(colors=8), "GIF"),
        "webp": encode(img, "WEBP", quality=70),
    }


def sky_and_grey_copy(seed: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """(50, 50, 3) uint8 pair for the ``near`` fine rule: a picture with a smooth sky band on
    top of a blocky ground, and its darker grey copy, whose sky is flat enough to trim as a
    border while the original's is not (so the trimmed pictures no longer line up)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:50, 0:50]
    sky = np.stack([150 + 0.6 * yy + 5 * np.sin(xx / 3.0)] * 3, axis=-1)
    ground = rng.uniform(0, 255, (13, 13, 3)).repeat(4, 0).repeat(4, 1)[:50, :50]
    pic = np.where((yy < 18)[..., None], sky, ground)
    grey = (pic @ np.array([0.299, 0.587, 0.114]))[..., None].repeat(3, -1) * 0.5 + 10
    return (np.clip(np.rint(pic), 0, 255).astype(np.uint8),
            np.clip(np.rint(grey), 0, 255).astype(np.uint8))
