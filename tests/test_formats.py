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

#: the test images' fast tensors stay within this MSE of the exact ones (docs/formats.md:
#: on the 4,000-file benchmark corpus median 0.22, 99% below 1.4, worst 6.3)
FAST_MSE_BOUND = 4.0


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


def _png_with_late_exif(src: Image.Image, orientation: int) -> bytes:
    """A PNG whose eXIf chunk follows the image data (Pillow writes it before)."""
    import io
    import zlib

    buf = io.BytesIO()
    src.save(buf, "PNG")
    data = buf.getvalue()
    exif = Image.Exif()
    exif[0x0112] = orientation
    body = exif.tobytes()[6:]  # without the b"Exif\0\0" prefix, as PNG stores it
    chunk = len(body).to_bytes(4, "big") + b"eXIf" + body + zlib.crc32(b"eXIf" + body).to_bytes(4, "big")
    iend = data.rindex(b"IEND") - 4
    return data[:iend] + chunk + data[iend:]


def codec_cases(root: Path) -> dict[str, bool]:
    """PNG and WEBP files of every kind -> whether imagecodecs should decode them (8-bit
    RGB/RGBA, still) or leave them to Pillow."""
    rgb = photo(31, 301, 207)
    rgba = rgb.copy()
    rgba.putalpha(Image.fromarray(np.tile(np.arange(301, dtype=np.uint8), (207, 1))))
    cases: dict[str, bool] = {}

    def save(name: str, img: Image.Image, codec: bool, **kw: object) -> None:
        img.save(root / name, **kw)
        cases[name] = codec

    save("rgb.png", rgb, True)
    save("rgba.png", rgba, True)
    save("interlaced.png", rgb, True, interlace=1)  # Pillow can write Adam7 since 11
    save("trns.png", rgb, True, transparency=(10, 20, 30))
    save("grey.png", rgb.convert("L"), False)
    save("greya.png", rgba.convert("LA"), False)
    save("palette.png", rgb.convert("P"), False)
    save("bilevel.png", rgb.convert("1"), False)
    arr16 = np.asarray(rgb).astype(np.uint16) * 257
    (root / "rgb16.png").write_bytes(__import__("imagecodecs").png_encode(arr16))
    cases["rgb16.png"] = False
    (root / "late-exif.png").write_bytes(_png_with_late_exif(rgb, 6))
    cases["late-exif.png"] = True
    exif = Image.Exif()
    exif[0x0112] = 8
    save("early-exif.png", rgb, True, exif=exif.tobytes())
    save("lossy.webp", rgb, True, quality=80)
    save("lossless.webp", rgb, True, lossless=True)
    save("alpha.webp", rgba, True, quality=70)
    save("alpha-lossless.webp", rgba, True, lossless=True)
    save("exif.webp", rgb, True, exif=exif.tobytes())
    save("animated.webp", rgb, False, save_all=True,
         append_images=[rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)], duration=100)
    save("animated.png", rgb, False, save_all=True,
         append_images=[rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)], duration=100)
    (root / "truncated.png").write_bytes((root / "rgb.png").read_bytes()[:3000])
    cases["truncated.png"] = False
    return cases


def test_fast_png_webp_through_imagecodecs_are_pillows_pixels(tmp_path, monkeypatch):
    """The fast recipe's imagecodecs decode (the ``fast`` extra) gives exactly what the
    same recipe gives through Pillow alone: tensors, orientation, size, errors."""
    pytest.importorskip("imagecodecs")
    cases = codec_cases(tmp_path)
    for name, codec in cases.items():
        path = b(tmp_path / name)
        monkeypatch.setattr(decode, "_codecs", None)  # imagecodecs, when it applies
        with open(path, "rb") as fh, Image.open(fh) as img:
            assert (decode._codec_decode(img, fh) is not None) == codec, name
        with_codecs = decode_file(path, (50, 32), fast=True)
        monkeypatch.setattr(decode, "_codecs", False)  # Pillow only
        pillow = decode_file(path, (50, 32), fast=True)
        assert (with_codecs.error is None) == (pillow.error is None), name
        assert with_codecs.tensors == pillow.tensors, name
        assert (with_codecs.width, with_codecs.height, with_codecs.orientation, with_codecs.format) == (
            pillow.width, pillow.height, pillow.orientation, pillow.format), name
    assert decode_file(b(tmp_path / "late-exif.png"), (50,), fast=True).orientation == 6
    assert decode_file(b(tmp_path / "early-exif.png"), (50,), fast=True).orientation == 8
    assert decode_file(b(tmp_path / "truncated.png"), (50,), fast=True).error is not None


# ------------------------------------------------------------- through update and search
def run_cli(catalog: Path, *args: object, env: dict[str, str] | None = None):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "difpy_index", "--catalog", str(catalog), *map(os.fspath, args)],
        capture_output=True, text=True, timeout=300, env=env,
    )


def rows(catalog: Path) -> dict[str, tuple]:
    import sqlite3

    conn = sqlite3.connect(catalog)
    try:
        return {os.path.basename(os.fsdecode(bytes(r[0]))): tuple(r[1:]) for r in conn.execute(
            "SELECT path, status, format, orientation, width, height, error FROM files")}
    finally:
        conn.close()


def mixed_folder(root: Path) -> dict[str, str | None]:
    """One file of every kind; name -> Pillow's format name (None: not an image)."""
    root.mkdir(parents=True)
    src = photo(30, 120, 80)
    expected: dict[str, str | None] = {}
    src.save(root / "a.jpg", quality=90)
    expected["a.jpg"] = "JPEG"
    src.resize((60, 40)).save(root / "b.png")
    expected["b.png"] = "PNG"
    photo(31, 64, 64).save(root / "c.webp")
    expected["c.webp"] = "WEBP"
    if decode.PLUGINS[0].available():
        photo(32, 64, 48).save(root / "d.heic")
        expected["d.heic"] = "HEIF"
    if features.check("avif"):
        photo(33, 64, 48).save(root / "e.avif")
        expected["e.avif"] = "AVIF"
    if decode.PLUGINS[3].available():
        photo(34, 64, 48).save(root / "f.jxl")
        expected["f.jxl"] = "JXL"
    if decode.PLUGINS[2].available():
        write_dng(root / "g.dng", np.asarray(photo(35, 120, 80)), orientation=6)
        expected["g.dng"] = "RAW"
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    expected["broken.jpg"] = None
    (root / "notes.txt").write_text("not an image")
    return expected


def test_mixed_folder_every_file_indexed_or_named(tmp_path):
    import json

    root = tmp_path / "lib"
    expected = mixed_folder(root)
    cat = tmp_path / "cat.sqlite"
    out = run_cli(cat, "update", root, "--json", "--processes", "1")
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    got = rows(cat)
    assert set(got) == set(expected)  # notes.txt: not tried for its extension
    assert rep["skipped"] == 1 and rep["needs_extra"] == {}
    assert rep["files"] == len(expected) - 1 and rep["invalid"] == 1
    for name, fmt in expected.items():
        status, f, _orientation, w, h, error = got[name]
        if fmt is None:
            assert status == "invalid" and error and f is None
        else:
            assert (status, f) == ("ok", fmt), (name, got[name])
            assert w > 0 and h > 0
    if "g.dng" in got:
        assert got["g.dng"][2:5] == (6, 120, 80)


HIDE_PLUGINS = """
import sys
for name in {names!r}:
    sys.modules[name] = None  # import raises ImportError: as if not installed
"""


def test_missing_plugin_files_are_skipped_and_named(tmp_path):
    """Without pillow-heif and rawpy, HEIC and RAW files are skipped (never invalid),
    named with the extra that reads them; installing the extra indexes them next time."""
    import json

    if not (decode.PLUGINS[0].available() and decode.PLUGINS[2].available()):
        pytest.skip("needs pillow-heif and rawpy to write and later read the files")
    root = tmp_path / "lib"
    root.mkdir()
    photo(40, 64, 48).save(root / "phone.heic")
    photo(41, 64, 48).save(root / "phone2.HEIC")
    write_dng(root / "cam.dng", np.asarray(photo(42, 120, 80)))
    photo(43, 64, 48).save(root / "plain.jpg")
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(HIDE_PLUGINS.format(names=["pillow_heif", "rawpy"]))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(hide), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    cat = tmp_path / "cat.sqlite"
    for flags in ((), ("--all-extensions",)):
        out = run_cli(cat, "-v", "update", root, "--json", *flags, env=env)
        assert out.returncode == 0, out.stderr
        rep = json.loads(out.stdout)
        assert sorted(map(os.path.basename, rep["needs_extra"]["heif"])) == ["phone.heic", "phone2.HEIC"]
        assert list(map(os.path.basename, rep["needs_extra"]["raw"])) == ["cam.dng"]
        assert rep["files"] == 1 and rep["invalid"] == 0 and rep["skipped"] >= 3
        assert set(rows(cat)) == {"plain.jpg"}
        lines = [ln for ln in out.stderr.splitlines() if ln.startswith("warning:")]
        assert any("2 HEIC/HEIF file(s) skipped" in ln and "difpy-index[heif]" in ln for ln in lines)
        assert any("1 camera RAW file(s) skipped" in ln and "difpy-index[raw]" in ln for ln in lines)
        skipped = {os.path.basename(f["path"]): f["reason"] for f in rep["skipped_files"]}
        assert "difpy-index[heif]" in skipped["phone2.HEIC"]
    # -v names every file, with the extra that reads it
    out = run_cli(cat, "-v", "update", root, env=env)
    assert (f"skipped: {root / 'cam.dng'}: camera RAW needs an optional plugin: "
            "pip install 'difpy-index[raw]'") in out.stderr
    # quiet without -v: the count lines only
    out = run_cli(cat, "update", root, env=env)
    assert f"skipped: {root}" not in out.stderr and "HEIC/HEIF file(s) skipped" in out.stderr
    # with the plugins: indexed on the next update
    out = run_cli(cat, "update", root, "--json")
    rep = json.loads(out.stdout)
    assert rep["needs_extra"] == {} and rep["decoded"] == 3 and rep["files"] == 4
    assert {n: r[1] for n, r in rows(cat).items()} == {
        "plain.jpg": "JPEG", "phone.heic": "HEIF", "phone2.HEIC": "HEIF", "cam.dng": "RAW"}
    # and a plugin lost again later keeps their rows (skipped, not purged)
    out = run_cli(cat, "update", root, "--json", env=env)
    assert json.loads(out.stdout)["removed"] == 0 and len(rows(cat)) == 4


def test_orientations_recorded_and_in_search_json(tmp_path, cli):
    import json

    root = tmp_path / "lib"
    root.mkdir()
    src = photo(50, 64, 40)
    src.save(root / "none.jpg", quality=92)
    with Image.open(root / "none.jpg") as img:
        pixels = img.copy()
    for value in range(1, 9):  # the same pixels, eight orientation tags
        exif = Image.Exif()
        exif[0x0112] = value
        pixels.save(root / f"o{value}.png", exif=exif.tobytes())
    assert cli("update", root).exit_code == 0
    got = rows(cli.catalog)
    assert got["none.jpg"][2] is None
    assert {n: got[n][2] for n in got if n.startswith("o")} == {f"o{v}.png": v for v in range(1, 9)}
    res = cli("search", root, "--json", "-s", "duplicates")
    assert res.exit_code == 0, res.stderr
    payload = json.loads(res.stdout)
    (group,) = payload["details"]
    seen = {os.path.basename(group["key"]): group["key_orientation"]}
    seen.update({os.path.basename(m["path"]): m["orientation"] for m in group["members"]})
    assert seen == {"none.jpg": None, **{f"o{v}.png": v for v in range(1, 9)}}
    assert all(m["mse"] == 0 and m["rotation"] == 0 for m in group["members"])
    # the banded search (large catalogs, PostgreSQL) carries the tags too
    from difpy_index import Index

    with Index.open(cli.catalog) as idx:
        banded = idx.search(root, max_band_rows=2)
    (g,) = banded.groups
    tags = {os.path.basename(g.key): g.key_orientation}
    tags.update({os.path.basename(m.path): m.orientation for m in g.members})
    assert tags == seen


def near_library(root: Path) -> None:
    """Groups of near-duplicates (re-encodes, resizes, rotations) of large JPEGs, so the
    fast recipe's reduced decoding is exercised, plus unrelated pictures."""
    root.mkdir(parents=True)
    for i in range(4):
        img = photo(60 + i, 1600 - 200 * i, 1100)
        img.save(root / f"g{i}_orig.jpg", quality=92)
        img.save(root / f"g{i}_copy.png")
        img.save(root / f"g{i}_q70.jpg", quality=70)
        img.transpose(Image.Transpose.ROTATE_90).save(root / f"g{i}_rot.jpg", quality=92)
        img.resize((img.width // 2, img.height // 2), Image.Resampling.LANCZOS).save(
            root / f"g{i}_half.jpg", quality=92)
    for i in range(6):
        photo(80 + i, 900, 700).save(root / f"solo{i}.jpg", quality=90)


def group_sets(found) -> set[frozenset[str]]:
    return {frozenset([os.path.basename(g.key), *(os.path.basename(m.path) for m in g.members)])
            for g in found.groups}


def test_fast_update_is_searched_alone_and_finds_the_same_groups(tmp_path):
    from difpy_index import Index
    from difpy_index.errors import UsageError

    root = tmp_path / "lib"
    near_library(root)
    with Index.open(tmp_path / "exact.sqlite") as ex, Index.open(tmp_path / "fast.sqlite") as fa:
        r_exact = ex.update(root, processes=1)
        r_fast = fa.update(root, processes=1, fast=True)
        assert (r_exact.recipe, r_fast.recipe) == ("exact", "fast")
        assert r_fast.files == r_exact.files == 26
        for preset in ("duplicates", "similar", "near"):
            fe, ff = ex.search(similarity=preset), fa.search(similarity=preset)
            assert ff.stats["process"]["build"]["parameters"]["recipe"] == "fast"
            assert fe.stats["process"]["build"]["parameters"]["recipe"] == "exact"
            assert group_sets(ff) == group_sets(fe), preset
        assert len(group_sets(fa.search(similarity="near"))) == 4
        # every fast tensor within the documented bound of its exact twin
        de, df = ex.search_input(50), fa.search_input(50)
        assert de.paths == df.paths
        d = de.tensors.astype(np.int64) - df.tensors.astype(np.int64)
        per_file = (d.reshape(len(de.paths), -1) ** 2).mean(axis=1)
        assert per_file.max() <= FAST_MSE_BOUND and (per_file > 0).any()

        # a plain update keeps the fast recipe (nothing decoded again) ...
        again = fa.update(root, processes=1)
        assert (again.decoded, again.reused, again.recipe) == (0, 26, "fast")
        # ... a new file in a fast root is decoded fast
        photo(99, 500, 400).save(root / "new.jpg", quality=90)
        added = fa.update(root, processes=1)
        assert (added.decoded, added.recipe) == (1, "fast")
        # --exact converts every file; the search then reads exact tensors only
        back = fa.update(root, processes=1, fast=False)
        assert (back.decoded, back.recipe) == (27, "exact")
        assert np.array_equal(fa.tensor(root / "g0_orig.jpg"), ex.tensor(root / "g0_orig.jpg"))

        # two roots with different recipes: each searchable alone, never together
        other = tmp_path / "other"
        near_library(other)
        fa.update(other, processes=1, fast=True)
        assert fa.search(other).stats["process"]["build"]["parameters"]["recipe"] == "fast"
        assert fa.search(root).stats["process"]["build"]["parameters"]["recipe"] == "exact"
        with pytest.raises(UsageError, match="never mixes"):
            fa.search()
        with pytest.raises(UsageError, match="never mixes"):
            fa.query(root / "g1_orig.jpg")


def test_cli_fast_flag_and_actions_after_a_fast_search(tmp_path, cli):
    import json

    root = tmp_path / "lib"
    near_library(root)
    res = cli("update", root, "--fast", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["recipe"] == "fast"
    dest = tmp_path / "dups"
    res = cli("search", root, "-s", "near", "--json", "--move-to", dest, "--dry-run")
    assert res.exit_code == 0, res.stderr
    payload = json.loads(res.stdout)
    assert payload["stats"]["process"]["build"]["parameters"]["recipe"] == "fast"
    assert len(payload["actions"]["moved"]) == len(payload["lower_quality"]) == 16
    assert payload["actions"]["skipped"] == []
    # the search's own implicit update kept the fast tensors
    res = cli("update", root, "--json")
    assert json.loads(res.stdout)["decoded"] == 0
    res = cli("update", root, "--exact", "--json")
    assert json.loads(res.stdout)["decoded"] == 26
