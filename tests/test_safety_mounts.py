"""Issue 13, class 1: one folder seen twice through a pass-through filesystem.

bindfs, mergerfs and NFS/SMB/sshfs mounts of a local folder show the same files under
another device number, so "same file?" by ``(st_dev, st_ino)`` says no. Indexing both the
folder and its mirror puts each photo in the catalog twice, as a byte-identical "duplicate"
of itself; an action must never remove a file because its "key" is itself seen elsewhere.

Two ways to build the mirror, so the logic is always tested:

* a real FUSE mount (``bindfs``), where the machine has /dev/fuse and bindfs (CI installs it
  and runs as root); skipped with the reason otherwise;
* a simulation that needs nothing: the mirror is a symlink to the folder, and ``os.stat``,
  ``os.lstat``, ``os.fstat`` and ``os.path.realpath`` are patched so the mirror looks like
  another filesystem (its own st_dev and st_ino, its paths not resolved) - exactly what the
  action code sees on a pass-through mount.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import write_image
from safety_helpers import bindfs, bindfs_unavailable, contents, copy, hashes, run

from difpy_index import Index


def make_photos(root: Path) -> dict[str, Path]:
    """a.png and b.png (byte copies of one picture), c.png (another picture, alone)."""
    a = write_image(root / "a.png", seed=1)
    assert isinstance(a, Path)
    return {"a": a, "b": copy(a, root / "b.png"), "c": write_image(root / "c.png", seed=2)}  # type: ignore[dict-item]


def check_nothing_lost(photos: Path, before: dict[str, str], acted: dict[str, Any]) -> None:
    """Every picture still has a copy in the real folder; c.png, which only has itself
    through the mirror as a 'duplicate', is untouched; the skip says why."""
    assert contents(photos) == set(before.values()), (hashes(photos), acted)
    assert hashes(photos).get("c.png") == before["c.png"], acted
    assert hashes(photos).get("a.png") == before["a.png"], acted
    skipped = {s["path"]: s["reason"] for s in acted["skipped"]}
    own = [p for p in skipped if os.path.basename(p) == "c.png"]
    assert own and "same file" in skipped[own[0]], skipped


# ----------------------------------------------------------------------- a real FUSE mount
needs_fuse = pytest.mark.skipif(bindfs_unavailable() is not None, reason=str(bindfs_unavailable()))


@needs_fuse
@pytest.mark.parametrize("action", ["delete", "move"])
def test_bindfs_mirror_never_loses_the_only_copy(action: str, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    make_photos(photos)
    before = hashes(photos)
    cat = tmp_path / "c.sqlite"
    with bindfs(photos, tmp_path / "mirror") as mirror:
        st_a, st_m = os.stat(photos / "c.png"), os.stat(mirror / "c.png")
        assert st_a.st_dev != st_m.st_dev  # what makes the naive identity test lie
        assert run(cat, "update", photos, mirror).returncode == 0
        listed = json.loads(run(cat, "search", "--json").stdout)
        assert len(listed["lower_quality"]) >= 3  # each file and its mirror image "match"
        dest = tmp_path / "dups"
        args = ["--delete", "--yes"] if action == "delete" else ["--move-to", dest]
        res = run(cat, "search", "--json", *args)
        assert "Traceback" not in res.stderr, res.stderr
        acted = json.loads(res.stdout)["actions"]
        check_nothing_lost(photos, before, acted)
        # b.png is a real second copy of a.png: it may go (through either path), once
        assert sum(1 for name in ("a.png", "b.png") if (photos / name).exists()) >= 1


@needs_fuse
def test_bindfs_mirror_move_aside_proof_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Any) -> None:
    """Even with the cheap identity heuristics switched off (a FUSE filesystem that invents
    inode numbers), moving the member aside and re-opening the key proves they are one file.
    bindfs also keeps answering ``stat`` for the vanished name from the kernel's cache: the
    proof must open and read the key, not stat it."""
    from difpy_index import verify

    monkeypatch.setattr(verify, "looks_like_same_file", lambda a, b: False)
    photos = tmp_path / "photos"
    make_photos(photos)
    before = hashes(photos)
    with bindfs(photos, tmp_path / "mirror") as mirror:
        assert cli("update", photos, mirror).exit_code == 0
        res = cli("search", "--json", "--delete", "--yes")
        acted = json.loads(res.stdout)["actions"]
        check_nothing_lost(photos, before, acted)
        assert not [p for p in photos.iterdir() if p.name.startswith(".difpy")]


# ------------------------------------------------------------------------- the simulation
class LyingMount:
    """``mirror`` (a symlink to ``target``) made to look like a pass-through mount."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, mirror: Path, lie_about_inode: bool) -> None:
        self.mirror = str(mirror)
        self.mirror_b = os.fsencode(self.mirror)
        self.ino_shift = 10**9 if lie_about_inode else 0
        self.fds: set[int] = set()
        real_stat, real_lstat, real_fstat = os.stat, os.lstat, os.fstat
        real_open, real_realpath = os.open, os.path.realpath

        def stat(path: Any, *a: Any, **kw: Any) -> Any:
            if self.under(path) and not kw.get("dir_fd"):
                return Lied(real_stat(path, *a, **kw), self.ino_shift)
            return real_stat(path, *a, **kw)

        def lstat(path: Any, *a: Any, **kw: Any) -> Any:
            if self.under(path) and not kw.get("dir_fd"):
                # the mount point is a folder, never a symlink
                return Lied(real_stat(path) if self.is_top(path) else real_lstat(path, *a, **kw), self.ino_shift)
            return real_lstat(path, *a, **kw)

        def fstat(fd: int) -> Any:
            st = real_fstat(fd)
            return Lied(st, self.ino_shift) if fd in self.fds else st

        def open_(path: Any, flags: int, mode: int = 0o777, **kw: Any) -> int:
            fd = real_open(path, flags, mode, **kw)
            if self.under(path) and not kw.get("dir_fd"):
                self.fds.add(fd)
            else:
                self.fds.discard(fd)
            return fd

        def realpath(path: Any, **kw: Any) -> Any:
            if self.under(path):
                return os.path.normpath(os.path.abspath(path))
            return real_realpath(path, **kw)

        monkeypatch.setattr(os, "stat", stat)
        monkeypatch.setattr(os, "lstat", lstat)
        monkeypatch.setattr(os, "fstat", fstat)
        monkeypatch.setattr(os, "open", open_)
        monkeypatch.setattr(os.path, "realpath", realpath)

    def under(self, path: Any) -> bool:
        if isinstance(path, int):
            return False
        p = os.path.abspath(os.fspath(path))
        top = self.mirror_b if isinstance(p, bytes) else self.mirror
        sep = b"/" if isinstance(p, bytes) else "/"
        return p == top or p.startswith(top + sep)  # type: ignore[operator]

    def is_top(self, path: Any) -> bool:
        p = os.path.abspath(os.fspath(path))
        return p == (self.mirror_b if isinstance(p, bytes) else self.mirror)


class Lied:
    """A stat result with another device (and maybe inode) number."""

    def __init__(self, st: os.stat_result, ino_shift: int) -> None:
        self._st = st
        self.st_dev = st.st_dev + 4242
        self.st_ino = st.st_ino + ino_shift

    def __getattr__(self, name: str) -> Any:
        return getattr(self._st, name)


@pytest.mark.parametrize("lie_about_inode", [False, True], ids=["same-ino", "other-ino"])
@pytest.mark.parametrize("action", ["delete", "move"])
def test_simulated_passthrough_mirror_never_loses_the_only_copy(
    action: str, lie_about_inode: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Any
) -> None:
    photos = tmp_path / "photos"
    make_photos(photos)
    before = hashes(photos)
    mirror = tmp_path / "mirror"
    mirror.symlink_to(photos, target_is_directory=True)
    LyingMount(monkeypatch, mirror, lie_about_inode)
    assert os.stat(mirror / "c.png").st_dev != os.stat(photos / "c.png").st_dev
    assert os.path.realpath(mirror / "c.png") == str(mirror / "c.png")
    assert cli("update", photos, mirror, "--processes", "1").exit_code == 0
    with Index.open(cli.catalog) as idx:
        assert len(idx.search().lower_quality) >= 3
    dest = tmp_path / "dups"
    args = ["--delete", "--yes"] if action == "delete" else ["--move-to", dest]
    res = cli("search", "--json", *args)
    acted = json.loads(res.stdout)["actions"]
    check_nothing_lost(photos, before, acted)
    if action == "move":  # nothing of the real folder reached DEST through the mirror's back door
        assert all(os.path.realpath(t).startswith(str(dest)) for _s, t in acted["moved"])
    assert not [p for p in photos.iterdir() if p.name.startswith(".difpy")]
