"""difpy_index.decode: bit-identity with difPy 4.2.1, bad input, and a decode fuzzer.

SEMANTICS.md section 2 / difpy-4.2.1.md section 4.
"""

from __future__ import annotations

import os
import threading
import time

import imagefactory as factory
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from difpy_index import decode as tensor
from difpy_index.decode import DEFAULT_MAX_PIXELS, Decoded, decode_file, init_worker

PX_SIZES = (50, 10, 64)


def b(path: object) -> bytes:
    return os.fsencode(path)


def arr(d: Decoded, px: int) -> np.ndarray:
    return np.frombuffer(d.tensors[px], dtype=np.uint8).reshape(px, px, 3)


@pytest.fixture(autouse=True)
def _restore_pillow_limit():
    """decode_file sets Image.MAX_IMAGE_PIXELS from the worker limit: undo both."""
    saved = Image.MAX_IMAGE_PIXELS
    yield
    init_worker(DEFAULT_MAX_PIXELS)
    Image.MAX_IMAGE_PIXELS = saved


def assert_one_line_error(d: Decoded) -> str:
    assert not d.gone
    assert d.tensors == {}
    assert isinstance(d.error, str) and d.error.strip()
    assert len(d.error.splitlines()) == 1 and "\n" not in d.error and "\r" not in d.error
    assert len(d.error) <= 500
    return d.error


# ----------------------------------------------------------------- 1. difPy identity
@pytest.fixture(scope="module")
def mode_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("modes")
    for name, writer in factory.MODE_WRITERS.items():
        writer(folder / name)
    return folder


@pytest.fixture(scope="module")
def difpy_builds(mode_folder):
    """{px: {basename: (tensor, shape)}, "invalid": {...}} from difPy's own build."""
    difPy = pytest.importorskip("difPy")
    out = {}
    invalid = {}
    for px in PX_SIZES:
        dif = difPy.build(str(mode_folder), show_progress=False, px_size=px, processes=1)
        out[px] = {
            os.path.basename(path): (dif._tensor_dictionary[i], dif._id_to_shape_dictionary[i])
            for i, path in dif._filename_dictionary.items()
        }
        invalid.update({os.path.basename(k): v for k, v in dif._invalid_files.items()})
    return out, invalid


@pytest.fixture(scope="module")
def ours(mode_folder):
    return {name: decode_file(b(mode_folder / name), PX_SIZES) for name in factory.MODE_WRITERS}


def test_difpy_sees_every_mode_file(difpy_builds):
    builds, invalid = difpy_builds
    expected = set(factory.MODE_WRITERS) - factory.DIFPY_REJECTS
    for px in PX_SIZES:
        assert set(builds[px]) == expected
    assert set(invalid) == set(factory.DIFPY_REJECTS)
    assert "Transparency expressed in bytes" in invalid["p_trns_bytes.png"]


@pytest.mark.parametrize("name", sorted(set(factory.MODE_WRITERS) - factory.DIFPY_REJECTS))
def test_bit_identical_to_difpy(name, difpy_builds, ours):
    builds, _ = difpy_builds
    d = ours[name]
    assert d.error is None and not d.gone, d.error
    assert set(d.tensors) == set(PX_SIZES)
    for px in PX_SIZES:
        ref, shape = builds[px][name]
        assert ref.dtype == np.uint8 and ref.shape == (px, px, 3)
        assert d.tensors[px] == ref.tobytes(), f"{name} differs from difPy at px={px}"
        assert (d.height, d.width, 3) == tuple(shape)


@pytest.mark.filterwarnings("ignore:Palette images with Transparency expressed in bytes")
def test_byte_transparency_palette_decodes_like_pillow(mode_folder, ours):
    """difPy rejects it (Pillow's warning is an error there); we decode it."""
    p = mode_folder / "p_trns_bytes.png"
    d = ours["p_trns_bytes.png"]
    assert d.error is None and not d.gone
    with Image.open(p) as img:
        assert img.mode == "P" and isinstance(img.info["transparency"], bytes)
        rgb = img.convert("RGB")
    assert (d.width, d.height) == rgb.size
    for px in PX_SIZES:
        expected = np.asarray(rgb.resize((px, px), Image.BICUBIC))
        assert d.tensors[px] == expected.tobytes()


def test_animated_gif_uses_first_frame(mode_folder, ours):
    with Image.open(mode_folder / "animated.gif") as img:
        first = np.asarray(img.convert("RGB").resize((50, 50), Image.BICUBIC))
        img.seek(1)
        second = np.asarray(img.convert("RGB").resize((50, 50), Image.BICUBIC))
    assert not np.array_equal(first, second)
    assert ours["animated.gif"].tensors[50] == first.tobytes()


def test_exif_orientation_not_applied(ours):
    d = ours["exif_rot6.jpg"]
    assert (d.width, d.height) == (48, 24)


def test_metadata_and_extreme_shapes(mode_folder, ours):
    d = ours["wide_4000x3.png"]
    assert (d.width, d.height) == (4000, 3)
    assert (ours["tall_3x4000.jpg"].width, ours["tall_3x4000.jpg"].height) == (3, 4000)
    assert (ours["tiny_1x1.png"].width, ours["tiny_1x1.png"].height) == (1, 1)
    # a 1x1 image becomes a flat tensor of its single pixel
    with Image.open(mode_folder / "tiny_1x1.png") as img:
        pixel = img.getpixel((0, 0))
    assert np.all(arr(ours["tiny_1x1.png"], 10) == np.array(pixel, np.uint8))
    st_ = os.stat(mode_folder / "wide_4000x3.png")
    assert (d.size, d.mtime_ns, d.inode) == (st_.st_size, st_.st_mtime_ns, st_.st_ino)
    assert d.path == b(mode_folder / "wide_4000x3.png")


def test_decode_batch_preserves_order(mode_folder):
    names = ["l.png", "rgb.jpg", "missing.png", "cmyk.tif"]
    out = tensor.decode_batch([b(mode_folder / n) for n in names], (10,))
    assert [d.path for d in out] == [b(mode_folder / n) for n in names]
    assert [d.gone for d in out] == [False, False, True, False]


# -------------------------------------------------------------------- 2. bad input
@pytest.fixture(scope="module")
def valid_bytes():
    return {
        "jpg": factory.encode(factory.synthetic(31, 120, 90), "JPEG", quality=90),
        "png": factory.encode(factory.synthetic(32, 120, 90), "PNG"),
    }


@pytest.mark.parametrize("fmt", ["jpg", "png"])
@pytest.mark.parametrize("keep", [0.6, 0.2, 40])
def test_truncated(tmp_path, valid_bytes, fmt, keep):
    p = factory.write_truncated(tmp_path / f"trunc.{fmt}", valid_bytes[fmt], keep)
    err = assert_one_line_error(decode_file(b(p), (50,)))
    if isinstance(keep, float) and keep > 0.5:
        assert "truncated" in err.lower() or "broken" in err.lower(), err


def test_truncated_jpeg_reason(tmp_path, valid_bytes):
    p = factory.write_truncated(tmp_path / "t.jpg", valid_bytes["jpg"], 0.6)
    d = decode_file(b(p), (50,))
    assert "image file is truncated" in assert_one_line_error(d)
    assert d.size == os.path.getsize(p) and d.mtime_ns > 0 and d.inode > 0


def test_zero_bytes(tmp_path):
    d = decode_file(b(factory.write_zero_bytes(tmp_path / "empty.png")), (50,))
    assert assert_one_line_error(d) == "UnidentifiedImageError: file could not be identified as image."
    assert d.size == 0


def test_text_named_jpg(tmp_path):
    d = decode_file(b(factory.write_text_as_image(tmp_path / "notes.jpg")), (50,))
    assert assert_one_line_error(d) == "UnidentifiedImageError: file could not be identified as image."


def test_random_garbage(tmp_path):
    d = decode_file(b(factory.write_garbage(tmp_path / "noise.webp", seed=5)), (50,))
    assert_one_line_error(d)


@pytest.mark.parametrize("side", [10_000, 30_000])  # warning zone (<2x) and error zone (>2x)
def test_decompression_bomb_default_limit(tmp_path, side):
    init_worker(DEFAULT_MAX_PIXELS)
    p = factory.write_png_bomb(tmp_path / "bomb.png", side, side)
    assert os.path.getsize(p) < 200
    err = assert_one_line_error(decode_file(b(p), (50,)))
    # Pillow quotes the limit it checked: the setting (warning zone) or twice it (error zone)
    limit = DEFAULT_MAX_PIXELS if side * side <= 2 * DEFAULT_MAX_PIXELS else 2 * DEFAULT_MAX_PIXELS
    assert f"Image size ({side * side} pixels) exceeds limit of {limit} pixels" in err
    assert "decompression bomb" in err


def test_decompression_bomb_custom_limit(tmp_path):
    small = factory.write_synthetic(tmp_path / "small.png", 3, 40, 40)  # 1600 pixels
    huge = factory.write_synthetic(tmp_path / "huge.png", 4, 100, 100)  # 10000 pixels
    init_worker(1000)
    for p, pixels, quoted in ((small, 1600, 1000), (huge, 10000, 2000)):
        err = assert_one_line_error(decode_file(b(p), (10,)))
        assert f"Image size ({pixels} pixels) exceeds limit of {quoted} pixels" in err
    assert Image.MAX_IMAGE_PIXELS == 1000
    init_worker(2000)
    assert decode_file(b(small), (10,)).error is None
    assert decode_file(b(huge), (10,)).error is not None
    init_worker(None)  # limit disabled
    assert decode_file(b(huge), (10,)).error is None
    init_worker(DEFAULT_MAX_PIXELS)
    assert decode_file(b(huge), (10,)).error is None
    assert Image.MAX_IMAGE_PIXELS == DEFAULT_MAX_PIXELS


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads mode-000 files")
def test_unreadable_file(tmp_path):
    p = factory.write_synthetic(tmp_path / "locked.png", 1)
    os.chmod(p, 0)
    try:
        d = decode_file(b(p), (50,))
    finally:
        os.chmod(p, 0o644)
    assert "Permission denied" in assert_one_line_error(d)
    assert d.size == os.path.getsize(p)


def test_unreadable_file_simulated(tmp_path, monkeypatch):
    """Same path as chmod 000, also when running as root: opening raises EACCES."""
    p = factory.write_synthetic(tmp_path / "locked.png", 1)
    real_open = os.open

    def deny(path, *args, **kwargs):
        if os.fsencode(path) == b(p):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(tensor.os, "open", deny)
    d = decode_file(b(p), (50,))
    monkeypatch.undo()
    assert assert_one_line_error(d) == "PermissionError: Permission denied"
    assert d.size == os.path.getsize(p) and d.inode == os.stat(p).st_ino


def test_directory_is_an_error_not_gone(tmp_path):
    (tmp_path / "dir.png").mkdir()
    d = decode_file(b(tmp_path / "dir.png"), (50,))
    assert assert_one_line_error(d) == "not a regular file"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_fifo_does_not_hang(tmp_path):
    """A path swapped for a FIFO between scan and decode must not block the worker."""
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    released = threading.Event()

    def release_reader():  # if decode_file blocks in open(), a writer unblocks it
        if not released.wait(5):
            with open(fifo, "wb"):
                pass

    guard = threading.Thread(target=release_reader, daemon=True)
    guard.start()
    t0 = time.monotonic()
    d = decode_file(b(fifo), (50,))
    released.set()
    guard.join()
    assert time.monotonic() - t0 < 4, "decode_file blocked on a FIFO"
    assert assert_one_line_error(d) == "not a regular file"


def test_vanished_file_is_gone(tmp_path):
    p = tmp_path / "was_here.png"
    factory.write_synthetic(p, 1)
    p.unlink()
    d = decode_file(b(p), (50,))
    assert d.gone and d.error is None and d.tensors == {}
    assert decode_file(b(tmp_path / "no_dir" / "x.png"), (50,)).gone
    (tmp_path / "file").write_bytes(b"x")
    assert decode_file(b(tmp_path / "file" / "x.png"), (50,)).gone  # NotADirectoryError


def test_broken_symlink_is_gone(tmp_path):
    os.symlink(tmp_path / "target.png", tmp_path / "link.png")
    assert decode_file(b(tmp_path / "link.png"), (50,)).gone


def test_file_changing_during_decode_is_gone(tmp_path, monkeypatch):
    p = factory.write_synthetic(tmp_path / "growing.png", 1)
    real_fstat = os.fstat
    calls = []

    class Changed:
        def __init__(self, st):
            self.st_size, self.st_mtime_ns, self.st_ino = st.st_size + 1, st.st_mtime_ns, st.st_ino
            self.st_ctime_ns = st.st_ctime_ns

    def fstat(fd):
        calls.append(fd)
        st_ = real_fstat(fd)
        return st_ if len(calls) == 1 else Changed(st_)

    monkeypatch.setattr(tensor.os, "fstat", fstat)
    d = decode_file(b(p), (50,))
    assert d.gone and d.tensors == {}


def test_non_utf8_path(tmp_path):
    raw = b(tmp_path) + b"/caf\xe9-\xff.png"
    factory.synthetic(2).save(os.fsdecode(raw), format="PNG")
    d = decode_file(raw, (10,))
    assert d.error is None and d.path == raw and len(d.tensors[10]) == 300


def test_one_line_flattens_messages():
    msg = tensor.one_line(ValueError("first line\nsecond\r\n third\x0b"))
    assert msg == "ValueError: first line second third"
    assert len(tensor.one_line(RuntimeError("x" * 2000))) == 500
    assert tensor.one_line(KeyError()) == "KeyError"


# ------------------------------------------------------------------------ 3. fuzzing
SEEDS = factory.small_valid_files(seed=7)

mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 20), st.integers(0, 7)),
    st.tuples(st.just("set"), st.integers(0, 1 << 20), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 20), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 20), st.integers(1, 16)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 20)),
)


def mutate(data: bytes, ops: list[tuple]) -> bytes:
    buf = bytearray(data)
    for op in ops:
        n = len(buf)
        pos = op[1] % (n + 1)
        if op[0] == "flip" and n:
            buf[pos % n] ^= 1 << op[2]
        elif op[0] == "set" and n:
            buf[pos % n] = op[2]
        elif op[0] == "insert":
            buf[pos:pos] = op[2]
        elif op[0] == "delete":
            del buf[pos : pos + op[2]]
        elif op[0] == "truncate":
            del buf[pos:]
    return bytes(buf)


def test_fuzz_seeds_are_valid(tmp_path):
    for fmt, data in SEEDS.items():
        p = factory.write_bytes(tmp_path / f"seed.{fmt}", data)
        d = decode_file(b(p), (10,))
        assert d.error is None and (d.width, d.height) == (16, 12), (fmt, d.error)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fmt=st.sampled_from(sorted(SEEDS)), ops=st.lists(mutation, min_size=1, max_size=6))
def test_fuzz_decode_never_raises(tmp_path_factory, fmt, ops):
    # A small limit keeps headers mutated into huge dimensions cheap (bomb -> error).
    init_worker(1_000_000)
    path = tmp_path_factory.getbasetemp() / f"fuzz.{fmt}"
    factory.write_bytes(path, mutate(SEEDS[fmt], ops))
    d = decode_file(b(path), (10, 17))
    assert not d.gone
    if d.error is None:
        assert set(d.tensors) == {10, 17}
        assert len(d.tensors[10]) == 300 and len(d.tensors[17]) == 17 * 17 * 3
        assert d.width > 0 and d.height > 0
    else:
        assert_one_line_error(d)
