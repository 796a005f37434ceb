"""The proof an action makes right before it moves or deletes a file (SEMANTICS.md 6).

Nothing is taken on trust, neither the catalog nor the filesystem's own idea of identity:

* **the member** (the file to go) must lie under an indexed root (its real path: a link
  target outside every root is never touched), be a regular file reached without a
  symbolic link, and be unchanged since it was catalogued (size, mtime, inode and ctime;
  a row without ctime or inode only vouches for size and mtime). It is then read and
  decoded *now*: the picture compared is the picture on disk.
* **the key** (the file kept for it) is read and decoded now as well, and its SHA-256
  noted. It must still match the member (same dimensions when ``same_dim``, exact MSE within
  the threshold, rotations when ``rotate``); for a plan (a request from outside), it must
  also have at least as many pixels as the member, so a swapped plan cannot trade an
  original for its thumbnail.
* **different files**: equal ``(st_dev, st_ino)`` (hard link, bind mount) or an equal inode
  number, size, mtime and ctime under another device (one file seen through a bind,
  pass-through or network mount) is "the same file". Device numbers lie on such mounts,
  so that test alone proves nothing: the action then moves the member aside (a rename into
  ``.difpy-aside-<pid>/`` in its own folder) and re-checks the key *by opening and reading
  it*. A key that was the member seen through another path is gone now (a ``stat`` may
  still answer from a cache; an ``open`` asks the filesystem); a key that is really another
  file still reads back with the same SHA-256. Only then is the member deleted or moved on;
  on any doubt it is put back.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .paths import owning_root

if TYPE_CHECKING:
    import numpy as np

    from .index import KnownFile  # the façade hands out the store's rows

#: A file larger than this is not read into memory to be verified (it is skipped).
MAX_VERIFY_BYTES = 1 << 30
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True, slots=True)
class Identity:
    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> Identity:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(frozen=True, slots=True)
class Picture:
    """A file as read and decoded by the proof."""

    path: bytes
    ident: Identity
    digest: bytes  # SHA-256 of exactly the bytes decoded
    width: int
    height: int
    tensor: np.ndarray


def looks_like_same_file(a: Identity, b: Identity) -> bool:
    """One file seen through two mounts: the same inode number, size, mtime and ctime
    (a bind or pass-through mount keeps them; only the device number differs)."""
    return (a.ino, a.size, a.mtime_ns, a.ctime_ns) == (b.ino, b.size, b.mtime_ns, b.ctime_ns)


def path_shape(path: bytes) -> str | None:
    """Why ``path`` is no longer a plain file at its catalogued real path, or None."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return "no longer exists"
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    if stat.S_ISLNK(st.st_mode):
        return "is now a symbolic link"
    if not stat.S_ISREG(st.st_mode):
        return "is no longer a regular file"
    if os.path.realpath(path) != path:
        return "is now reached through a symbolic link (a folder of its path was replaced)"
    return None


def read_picture(path: bytes, px: int) -> Picture | str:
    """Read the file once (never following a final symlink), hash those bytes and decode
    them with the exact recipe; a reason when it cannot."""
    import numpy as np

    from .decode import decode_bytes, one_line

    try:
        fd = os.open(path, _OPEN_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        return "no longer exists"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is now a symbolic link"
        return f"cannot be read: {exc.strerror or exc}"
    with open(fd, "rb") as fh:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            return "is no longer a regular file"
        if before.st_size > MAX_VERIFY_BYTES:
            return f"is too large to verify ({before.st_size} bytes)"
        data = fh.read(MAX_VERIFY_BYTES + 1)
        after = os.fstat(fd)
    if (len(data), after.st_mtime_ns, after.st_ctime_ns) != (before.st_size, before.st_mtime_ns,
                                                           before.st_ctime_ns):
        return "kept changing while being checked"
    try:
        width, height, tensors = decode_bytes(data, path, (px,))
    except Exception as exc:  # any decoder failure: it cannot be the matching picture
        return f"can no longer be decoded: {one_line(exc)}"
    tensor = np.frombuffer(tensors[px], dtype=np.uint8).reshape(px, px, 3)
    return Picture(path, Identity.of(before), hashlib.sha256(data).digest(), width, height, tensor)


def still_reads_back(path: bytes, digest: bytes) -> str | None:
    """Open ``path`` afresh (no final symlink) and compare its SHA-256; why not, or None.
    An ``open`` goes to the filesystem even where a ``stat`` is answered from a cache."""
    try:
        listed = os.path.basename(path) in os.listdir(os.path.dirname(path))
    except OSError:
        listed = False
    if not listed:
        return "is gone"
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        return "is gone" if exc.errno in (errno.ENOENT, errno.ENOTDIR) else f"cannot be read: {exc.strerror or exc}"
    h = hashlib.sha256()
    with open(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return "is no longer a regular file"
        for _ in range(MAX_VERIFY_BYTES // (1 << 20) + 2):
            chunk = fh.read(1 << 20)
            if not chunk:
                break
            h.update(chunk)
    return None if h.digest() == digest else "changed"


class Prover:
    """Checks members against keys for one action run (keys are read once per run)."""

    def __init__(self, rows: dict[bytes, KnownFile], roots: list[bytes], *, px: int,
                 threshold: float, rotate: bool, same_dim: bool, from_plan: bool = False) -> None:
        self.rows = rows
        self.roots = roots
        self.px = px
        self.threshold = threshold
        self.rotate = rotate
        self.same_dim = same_dim
        self.from_plan = from_plan
        self._keys: dict[bytes, Picture | str] = {}

    def member(self, path: bytes) -> Picture | str:
        """The member as it is now, or why it must not be touched."""
        if owning_root(path, self.roots) is None:
            return ("lies outside every indexed folder (a symbolic link's target?); "
                    "such files are never moved or deleted")
        shape = path_shape(path)
        if shape is not None:
            return f"file {shape}"
        row = self.rows.get(path)
        if row is None:
            return "is not in the catalog; run update first"
        if row.status != "ok":
            return "is not a valid image in the catalog"
        st = os.lstat(path)
        if row.inode is None or row.ctime_ns is None:
            then: tuple[int | None, ...] = (row.size, row.mtime_ns)
            now: tuple[int | None, ...] = (st.st_size, st.st_mtime_ns)
        else:
            then = (row.size, row.mtime_ns, row.inode, row.ctime_ns)
            now = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
        if then != now:
            return "changed since indexed (size, mtime, inode or ctime differ); run update and search again"
        pic = read_picture(path, self.px)
        if isinstance(pic, str):
            return f"file {pic}"
        if (pic.ident.ino, pic.ident.size, pic.ident.mtime_ns) != (st.st_ino, st.st_size, st.st_mtime_ns):
            return "file changed while being checked"
        return pic

    def key(self, path: bytes) -> Picture | str:
        if path not in self._keys:
            shape = path_shape(path)
            self._keys[path] = (f"key {os.fsdecode(path)} {shape}" if shape is not None
                                else self._read_key(path))
        return self._keys[path]

    def _read_key(self, path: bytes) -> Picture | str:
        pic = read_picture(path, self.px)
        return f"key {os.fsdecode(path)} {pic}" if isinstance(pic, str) else pic

    def forget_key(self, path: bytes) -> None:
        """After a key failed its re-check, read it again next time."""
        self._keys.pop(path, None)

    def pair(self, member: Picture, key: Picture) -> str | None:
        """Why ``member`` may not go for ``key``, or None when it may."""
        from .match import mse_exact

        k = os.fsdecode(key.path)
        if (member.ident.dev, member.ident.ino) == (key.ident.dev, key.ident.ino):
            return f"is the same file as its key {k} (hard link or bind mount)"
        if looks_like_same_file(member.ident, key.ident):
            return (f"is the same file as its key {k}, seen through another mount "
                    "(same inode number, size and times)")
        if self.same_dim and sorted((key.width, key.height)) != sorted((member.width, member.height)):
            return (f"no longer matches its key {k} (dimensions {member.width}x{member.height} "
                    f"and {key.width}x{key.height} differ)")
        if self.from_plan and key.width * key.height < member.width * member.height:
            return (f"has more pixels ({member.width}x{member.height}) than the file the plan "
                    f"keeps for it, {k} ({key.width}x{key.height}); a plan never trades a "
                    "picture for a smaller one")
        mse, _deg = mse_exact(key.tensor, member.tensor, self.rotate)
        if mse > self.threshold:
            return f"no longer matches its key {k} (mse {mse:g} > {self.threshold:g})"
        return None

    def check(self, member_path: bytes, keys: tuple[bytes, ...]) -> tuple[Picture, Picture] | str:
        """(member, the first key it provably duplicates) or why it must be skipped."""
        member = self.member(member_path)
        if isinstance(member, str):
            return member
        reasons: list[str] = []
        for kp in keys:
            key = self.key(kp)
            if isinstance(key, str):
                reasons.append(key)
                continue
            why = self.pair(member, key)
            if why is None:
                return member, key
            reasons.append(why)
        return "; ".join(reasons) or "has no key"


def after_aside(aside: bytes, member: Picture, key: Picture) -> str | None:
    """With the member moved aside: is it still the file checked, and does the key still
    read back unchanged (so it is another file)? Why not, or None."""
    try:
        st = os.lstat(aside)
    except OSError:
        return "vanished while being moved aside"
    if (st.st_ino, st.st_size, st.st_mtime_ns) != (member.ident.ino, member.ident.size, member.ident.mtime_ns):
        return "changed during the action"
    problem = still_reads_back(key.path, key.digest)
    if problem == "is gone":
        return (f"is the same file as its key {os.fsdecode(key.path)}: the key vanished when "
                "this file was moved aside (one folder seen through two paths: a bind, "
                "pass-through or network mount)")
    if problem is not None:
        return f"key {os.fsdecode(key.path)} {problem} during the action"
    return None


class Aside:
    """``<folder>/.difpy-aside-<pid>/``: where members wait while their key is re-checked."""

    def __init__(self) -> None:
        self._dirs: dict[bytes, bytes] = {}

    def put(self, member: bytes) -> bytes:
        """Move ``member`` into its folder's aside folder (same name); returns the new path."""
        from .fileops import ASIDE_PREFIX, rename_exact

        folder = os.path.dirname(member)
        aside = self._dirs.get(folder)
        if aside is None:
            aside = os.path.join(folder, ASIDE_PREFIX + b"%d" % os.getpid())
            try:
                os.mkdir(aside, 0o700)
            except FileExistsError:
                if os.path.islink(aside) or not os.path.isdir(aside):
                    raise
            self._dirs[folder] = aside
        target = os.path.join(aside, os.path.basename(member))
        rename_exact(member, target)
        return target

    def back(self, aside: bytes, member: bytes) -> str | None:
        """Put the file back; None when done, else where it stays and why."""
        from .fileops import rename_exact

        try:
            rename_exact(aside, member)
        except OSError as exc:
            return f"left in {os.fsdecode(aside)}: {exc.strerror or exc}"
        return None

    def close(self) -> None:
        for aside in self._dirs.values():
            try:
                os.rmdir(aside)
            except OSError:
                pass
        self._dirs.clear()


__all__ = ["Aside", "Identity", "Picture", "Prover", "after_aside", "looks_like_same_file",
           "read_picture", "still_reads_back"]
