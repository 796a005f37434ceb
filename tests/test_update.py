"""Incremental update against real files: what is decoded, reused, removed, kept."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import catalog_rows, disk_files, write_image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from difpy_index.index import Index
from difpy_index.update import UpdateReport


def update(idx: Index, *dirs: object, **kw: object) -> UpdateReport:
    kw.setdefault("processes", 1)
    rep = idx.update(list(dirs), **kw)  # type: ignore[arg-type]
    assert rep.decoded + rep.reused == rep.files + rep.invalid, rep
    return rep


def expected_tensor(path: object, px: int = 50) -> np.ndarray:
    with open(os.fspath(path), "rb") as fh, Image.open(fh) as img:  # type: ignore[arg-type]
        img = img.convert("RGB") if img.getbands() != ("R", "G", "B") else img
        return np.asarray(img.resize((px, px), Image.BICUBIC), dtype=np.uint8)


def bump(path: Path, seconds: int = 5) -> None:
    st_ = path.stat()
    os.utime(path, ns=(st_.st_atime_ns, st_.st_mtime_ns + seconds * 1_000_000_000))


@pytest.fixture
def idx(catalog_path: Path):
    with Index.open(catalog_path) as index:
        yield index


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    for i in range(4):
        write_image(root / f"img{i}.png", i)
    write_image(root / "sub" / "deep.jpg", 10)
    return root


def test_second_update_decodes_nothing(idx: Index, folder: Path) -> None:
    first = update(idx, folder)
    assert (first.decoded, first.files, first.reused, first.removed) == (5, 5, 0, 0)
    second = update(idx, folder)
    assert (second.decoded, second.reused, second.files) == (0, 5, 5)
    t = idx.tensor(folder / "img1.png")
    assert t is not None and np.array_equal(t, expected_tensor(folder / "img1.png"))


def test_changed_deleted_and_renamed(idx: Index, folder: Path) -> None:
    update(idx, folder)
    write_image(folder / "img0.png", 99)  # new content
    bump(folder / "img0.png")
    (folder / "img1.png").unlink()
    os.rename(folder / "img2.png", folder / "sub" / "moved.png")
    rep = update(idx, folder)
    assert rep.decoded == 1
    assert rep.removed == 1
    assert rep.renamed == 1
    assert rep.files == 4
    assert np.array_equal(idx.tensor(folder / "img0.png"), expected_tensor(folder / "img0.png"))
    assert np.array_equal(idx.tensor(folder / "sub" / "moved.png"),
                          expected_tensor(folder / "sub" / "moved.png"))
    assert idx.tensor(folder / "img1.png") is None
    rows = catalog_rows(idx.path)
    assert set(rows) == set(disk_files(folder))


def test_invalid_files_recorded_and_not_retried(idx: Index, tmp_path: Path) -> None:
    root = tmp_path / "bad"
    write_image(root / "ok.png", 1)
    (root / "text.png").write_text("not an image")
    (root / "zero.jpg").write_bytes(b"")
    good = (root / "ok.png").read_bytes()
    (root / "trunc.png").write_bytes(good[: len(good) // 2])
    rep = update(idx, root)
    assert (rep.decoded, rep.invalid, rep.files) == (4, 3, 1)
    conn = sqlite3.connect(idx.path)
    reasons = {bytes(p): e for p, e in conn.execute("SELECT path, error FROM files WHERE status='invalid'")}
    conn.close()
    assert len(reasons) == 3
    for reason in reasons.values():
        assert reason and "\n" not in reason and "Traceback" not in reason
    rep2 = update(idx, root)
    assert (rep2.decoded, rep2.reused, rep2.invalid) == (0, 4, 3)
    # fixing the file makes it decode again
    write_image(root / "text.png", 5)
    bump(root / "text.png")
    rep3 = update(idx, root)
    assert (rep3.decoded, rep3.invalid, rep3.files) == (1, 2, 2)


def test_decompression_bomb_is_invalid_with_reason(catalog_path: Path, tmp_path: Path) -> None:
    root = tmp_path / "bomb"
    write_image(root / "big.png", 1, size=(200, 200))
    write_image(root / "small.png", 2, size=(10, 10))
    with Index.open(catalog_path, max_pixels=1000) as idx:  # 200x200 > 2 * 1000 px: an error
        rep = update(idx, root)
    assert (rep.invalid, rep.files) == (1, 1)
    conn = sqlite3.connect(catalog_path)
    (reason,) = conn.execute("SELECT error FROM files WHERE status='invalid'").fetchone()
    conn.close()
    assert "decompression bomb" in reason.lower()


def test_bomb_warning_range_is_invalid_too(catalog_path: Path, tmp_path: Path) -> None:
    """Between max_pixels and 2x Pillow only warns; the warning must still mean invalid."""
    root = tmp_path / "bomb"
    write_image(root / "warn.png", 1, size=(40, 40))  # 1600 px: above 1000, below 2000
    with Index.open(catalog_path, max_pixels=1000) as idx:
        rep = update(idx, root)
    assert (rep.invalid, rep.files) == (1, 0)


def test_px_size_adds_a_size_without_redecoding(idx: Index, folder: Path) -> None:
    update(idx, folder)
    rep = update(idx, folder, px_size=32)
    assert rep.decoded == 5  # only the new size is computed
    assert rep.files == 5
    rep2 = update(idx, folder, px_size=[50, 32])
    assert (rep2.decoded, rep2.reused) == (0, 5)
    assert np.array_equal(idx.tensor(folder / "img3.png", 32), expected_tensor(folder / "img3.png", 32))
    assert idx.status()["px_sizes"] == [32, 50]


def test_missing_known_root_keeps_rows(idx: Index, folder: Path, tmp_path: Path) -> None:
    update(idx, folder)
    shutil.move(folder, tmp_path / "elsewhere")
    rep = update(idx, folder)
    assert rep.missing_roots == [os.path.realpath(folder)]
    assert rep.removed == 0
    assert len(catalog_rows(idx.path)) == 5


def test_missing_unknown_root_is_usage_error(idx: Index, tmp_path: Path) -> None:
    from difpy_index.errors import UsageError

    with pytest.raises(UsageError, match="does not exist"):
        idx.update([tmp_path / "nope"], processes=1)


def test_emptied_root_keeps_rows_as_if_unmounted(idx: Index, folder: Path) -> None:
    update(idx, folder)
    shutil.rmtree(folder)
    folder.mkdir()
    rep = update(idx, folder)
    assert rep.missing_roots == [os.path.realpath(folder)]
    assert rep.removed == 0
    assert len(catalog_rows(idx.path)) == 5


NASTY = [b"caf\xe9.png", b"line\nbreak.png", b"with space.png", b"photos [2020].png", b"star*.png",
         b"q?.png", b"\xff\xfe.png"]


def test_any_filename_survives(idx: Index, tmp_path: Path) -> None:
    root = os.fsencode(tmp_path / "nasty")
    sub = os.path.join(root, b"dir [2020] *")
    for i, name in enumerate(NASTY):
        write_image(os.path.join(root, name), i)
    write_image(os.path.join(sub, b"x\xe9\n.png"), 50)
    rep = update(idx, root)
    assert (rep.files, rep.invalid) == (len(NASTY) + 1, 0)
    for name in [*NASTY]:
        p = os.path.join(root, name)
        t = idx.tensor(p)
        assert t is not None and np.array_equal(t, expected_tensor(p)), name
    assert idx.tensor(os.path.join(sub, b"x\xe9\n.png")) is not None
    assert set(catalog_rows(idx.path)) == set(disk_files(root))
    assert update(idx, root).decoded == 0


def test_symlink_loop_terminates(idx: Index, folder: Path) -> None:
    os.symlink(folder, folder / "sub" / "loop")
    os.symlink(folder / "sub", folder / "sub" / "self")
    rep = update(idx, folder)
    assert rep.files == 5
    assert any("loop" in r for _, r in rep.problems)


def test_overlapping_roots_and_symlinked_file(idx: Index, folder: Path, tmp_path: Path) -> None:
    os.symlink(folder / "img0.png", folder / "link.png")
    other = tmp_path / "other"
    other.mkdir()
    os.symlink(folder / "img1.png", other / "alias.png")
    rep = update(idx, folder, folder / "sub", str(folder) + "/", other)
    assert rep.files == 5
    rows = catalog_rows(idx.path)
    assert len(rows) == 5
    assert all(p == os.path.realpath(p) for p in rows)
    again = update(idx, folder / "sub")
    assert (again.decoded, again.removed, again.reused) == (0, 0, 1)
    assert len(catalog_rows(idx.path)) == 5


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder")
def test_unreadable_subfolder_keeps_rows(idx: Index, folder: Path) -> None:
    update(idx, folder)
    sub = folder / "sub"
    sub.chmod(0)
    try:
        rep = update(idx, folder)
    finally:
        sub.chmod(stat.S_IRWXU)
    assert rep.removed == 0
    assert any("cannot read" in r for _, r in rep.problems)
    assert len(catalog_rows(idx.path)) == 5


def test_unreadable_subfolder_keeps_rows_simulated(
    idx: Index, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same as above where we run as root: scandir of the subfolder fails with EACCES."""
    update(idx, folder)
    real_scandir = os.scandir
    sub = os.fsencode(os.path.realpath(folder / "sub"))

    def scandir(path: object) -> object:
        if os.fsencode(path) == sub:  # type: ignore[arg-type]
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", scandir)
    rep = update(idx, folder)
    assert rep.removed == 0
    assert rep.reused == 4
    assert any("cannot read" in r for _, r in rep.problems)
    assert len(catalog_rows(idx.path)) == 5


def test_hidden_files_skipped_by_default(idx: Index, folder: Path) -> None:
    write_image(folder / ".hidden.png", 7)
    write_image(folder / ".cache" / "thumb.png", 8)
    assert update(idx, folder).files == 5
    rep = update(idx, folder, include_hidden=True)
    assert (rep.files, rep.decoded) == (7, 2)
    # a plain update again leaves the hidden rows alone (out of scope, not deleted)
    rep = update(idx, folder)
    assert (rep.files, rep.removed) == (5, 0)


def test_extension_filter_counts_skipped(idx: Index, folder: Path) -> None:
    (folder / "notes.txt").write_text("x")
    write_image(folder / "noext", 3)
    rep = update(idx, folder)
    assert (rep.skipped, rep.files) == (2, 5)
    rep = update(idx, folder, limit_extensions=False)
    assert (rep.files, rep.invalid) == (6, 1)


def test_vanishing_mid_scan_is_not_recorded(idx: Index, folder: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from difpy_index import update as update_mod

    real_scan = update_mod.scan

    def scan_then_delete(roots, options):  # type: ignore[no-untyped-def]
        found = real_scan(roots, options)
        (folder / "img3.png").unlink()
        return found

    monkeypatch.setattr(update_mod, "scan", scan_then_delete)
    rep = idx.update([folder], processes=1)
    assert rep.deferred == 1
    assert rep.files == 4
    assert set(catalog_rows(idx.path)) == set(disk_files(folder))


def test_pool_decodes_same_as_inline(catalog_path: Path, tmp_path: Path) -> None:
    root = tmp_path / "many"
    for i in range(20):
        write_image(root / f"{i:02}.png", i, size=(20 + i, 20))
    (root / "bad.png").write_bytes(b"junk")
    with Index.open(catalog_path) as idx:
        rep = idx.update([root], processes=2)
        assert (rep.decoded, rep.files, rep.invalid) == (21, 20, 1)
        for i in (0, 19):
            assert np.array_equal(idx.tensor(root / f"{i:02}.png"), expected_tensor(root / f"{i:02}.png"))


# --------------------------------------------------------------------------- property
OPS = st.lists(
    st.tuples(st.sampled_from(["add", "modify", "delete", "rename", "corrupt", "update"]),
              st.integers(0, 7), st.integers(0, 1000)),
    min_size=1, max_size=12,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_catalog_matches_disk_after_any_sequence(tmp_path_factory: pytest.TempPathFactory, ops) -> None:  # type: ignore[no-untyped-def]
    base = tmp_path_factory.mktemp("prop")
    root = base / "root"
    root.mkdir()
    names = [root / f"f{i}.png" if i % 3 else root / "d" / f"f{i}.png" for i in range(8)]
    with Index.open(base / "cat.sqlite") as idx:
        for op, i, seed in [*ops, ("update", 0, 0)]:
            p = names[i]
            if op == "add" and not p.exists():
                write_image(p, seed, size=(8 + seed % 5, 8))
            elif op == "modify" and p.exists():
                write_image(p, seed + 1, size=(9, 8 + seed % 3))
                bump(p, 1 + seed % 7)
            elif op == "delete" and p.exists():
                p.unlink()
            elif op == "rename" and p.exists():
                target = names[(i + 1 + seed) % 8]
                if not target.exists():
                    target.parent.mkdir(exist_ok=True)
                    os.rename(p, target)
            elif op == "corrupt" and p.exists():
                p.write_bytes(b"garbage" * (1 + seed % 4))
                bump(p, 2)
            elif op == "update":
                rep = update(idx, root)
                on_disk = disk_files(root)
                rows = catalog_rows(idx.path)
                if on_disk or not rows:  # an emptied root is kept (unmount heuristic)
                    assert {p: v[:2] for p, v in rows.items()} == on_disk
                    assert rep.files + rep.invalid == len(on_disk)
                for path, (_, _, status) in rows.items():
                    if status == "ok" and os.path.exists(path):
                        t = idx.tensor(path)
                        assert t is not None and np.array_equal(t, expected_tensor(path))
                    if status == "invalid":
                        assert idx.tensor(path) is None


# --------------------------------------------------------------------- crashes and kills
def _run_cli(catalog: Path, *args: object, env: dict[str, str] | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "difpy_index", "--catalog", str(catalog), *map(os.fspath, args)],
        capture_output=True, text=True, timeout=timeout, env=env,
    )


def _integrity(catalog: Path) -> str:
    conn = sqlite3.connect(catalog)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


@pytest.mark.slow
def test_sigkill_mid_update_then_rerun_finishes(catalog_path: Path, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    root = tmp_path / "many"
    root.mkdir()
    src = root / "seed.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (900, 900, 3), dtype=np.uint8)).save(
        src, quality=95)
    for i in range(400):
        shutil.copyfile(src, root / f"c{i:03}.jpg")
    Index.open(catalog_path).close()
    proc = subprocess.Popen(
        [sys.executable, "-m", "difpy_index", "--catalog", str(catalog_path), "update", str(root),
         "--processes", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    committed = 0
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                committed = len(catalog_rows(catalog_path))
            except sqlite3.OperationalError:
                committed = 0
            if committed:
                break
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its decode workers
        proc.wait()
    if not 0 < committed < 401:
        pytest.skip(f"update finished before it could be killed ({committed} rows)")
    assert proc.returncode == -signal.SIGKILL
    assert _integrity(catalog_path) == "ok"
    kept = len(catalog_rows(catalog_path))
    assert 0 < kept < 401
    out = _run_cli(catalog_path, "update", root, "--processes", "2", "--json")
    assert out.returncode == 0, out.stderr
    import json

    rep = json.loads(out.stdout)
    assert rep["reused"] >= kept and rep["decoded"] == 401 - rep["reused"]
    assert rep["files"] == 401
    assert _integrity(catalog_path) == "ok"
    assert {p: v[:2] for p, v in catalog_rows(catalog_path).items()} == disk_files(root)


CRASHER = '''
"""Stands in for the optional HEIF plugin: registers a Pillow opener that kills its process."""
import os
from PIL import Image, ImageFile


class _Crash(ImageFile.ImageFile):
    format = "CRASH"

    def _open(self):
        os._exit(7)


def register_heif_opener():
    Image.register_open("CRASH", _Crash, lambda prefix: prefix[:7] == b"CRASHME")
'''


@pytest.mark.slow
def test_worker_crash_marks_only_the_culprit_invalid(catalog_path: Path, tmp_path: Path) -> None:
    """A decoder that kills its worker: the pool is rebuilt, the others are decoded."""
    import json

    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "pillow_heif.py").write_text(CRASHER)
    root = tmp_path / "imgs"
    for i in range(30):
        write_image(root / f"{i:02}.png", i)
    (root / "13x.png").write_bytes(b"CRASHME" + b"\0" * 100)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(plugin), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    out = _run_cli(catalog_path, "update", root, "--processes", "2", "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    rep = json.loads(out.stdout)
    assert (rep["files"], rep["invalid"], rep["decoded"]) == (30, 1, 31)
    conn = sqlite3.connect(catalog_path)
    (path, reason), = conn.execute("SELECT path, error FROM files WHERE status='invalid'").fetchall()
    conn.close()
    assert bytes(path).endswith(b"13x.png") and "crash" in reason
