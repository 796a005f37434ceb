"""No-overwrite file moves: a file lands under a free name and is in exactly one place.

A move is an atomic ``renameat2(RENAME_NOREPLACE)`` (Linux), else ``link(src, target)``
then ``unlink(src)`` (neither overwrites: both fail if the target exists), or across
filesystems a copy to an exclusive temp name in the target folder, ``fsync``, an
exclusive install, then ``unlink(src)``. If the source cannot be removed, the new copy is
removed again. A power loss between ``link`` and ``unlink`` can leave two copies, never
zero.
"""

from __future__ import annotations

import errno
import os
import re
import sys
from collections.abc import Iterable
from typing import Any

#: A target name and this many numbered alternatives are tried, then the move fails.
MAX_CANDIDATES = 100_000


def candidates(target: bytes) -> Iterable[bytes]:
    """``name.ext``, then ``name (1).ext``, ``name (2).ext``, ... (bounded)."""
    yield target
    head, tail = os.path.split(target)
    stem, ext = os.path.splitext(tail)
    if not stem:  # ".hidden" style name
        stem, ext = tail, b""
    for i in range(1, MAX_CANDIDATES + 1):
        yield os.path.join(head, stem + b" (%d)" % i + ext)
    raise OSError(errno.EEXIST, f"no free name after {MAX_CANDIDATES} tries", os.fsdecode(target))


AT_FDCWD = -100
RENAME_NOREPLACE = 1
_UNSUPPORTED = (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP)
_renameat2: Any = "unloaded"


def _load_renameat2() -> Any:
    global _renameat2
    if _renameat2 == "unloaded":
        _renameat2 = None
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                fn = ctypes.CDLL(None, use_errno=True).renameat2
                fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
                fn.restype = ctypes.c_int
                _renameat2 = fn
            except (OSError, AttributeError):
                pass
    return _renameat2


def rename_noreplace(src: bytes, dst: bytes) -> bool:
    """Atomic rename that fails with ``FileExistsError`` instead of overwriting (Linux
    ``renameat2(RENAME_NOREPLACE)``). False when the system or filesystem lacks it."""
    fn = _load_renameat2()
    if fn is None:
        return False
    if fn(AT_FDCWD, src, AT_FDCWD, dst, RENAME_NOREPLACE) == 0:
        return True
    import ctypes

    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), os.fsdecode(src), None, os.fsdecode(dst))


def move_file(src: bytes, target: bytes) -> bytes:
    """Move ``src`` to ``target`` or the first free ``target (n)``; never overwrites.

    Returns the path it arrived at. On failure the source is where it was. The atomic
    no-replace rename keeps the file in exactly one place even under SIGKILL; without it,
    ``link`` + ``unlink`` can leave two copies, never none.
    """
    os.makedirs(os.path.dirname(target), exist_ok=True)
    for cand in candidates(target):
        try:
            if rename_noreplace(src, cand):
                return cand
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                return _copy_move(src, target)
            raise
        try:
            os.link(src, cand)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                return _copy_move(src, target)
            raise
        _unlink_or_undo(src, cand)
        return cand
    raise AssertionError("unreachable")  # pragma: no cover


def _copy_move(src: bytes, target: bytes) -> bytes:
    """Across filesystems: copy to an exclusive temp name, fsync, install exclusively."""
    import shutil

    folder = os.path.dirname(target)
    tmp = None
    for i in range(1000):
        name = os.path.join(folder, b".difpy-move-%d-%d.tmp" % (os.getpid(), i))
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
        except FileExistsError:
            continue
        tmp = name
        break
    if tmp is None:
        raise OSError(errno.EEXIST, "no free temporary name", os.fsdecode(folder))
    try:
        with open(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        shutil.copystat(src, tmp)
        if os.path.getsize(tmp) != os.path.getsize(src):
            raise OSError(errno.EIO, "copy is incomplete", os.fsdecode(src))
        final = _install(tmp, target)
    except BaseException:
        _quiet_unlink(tmp)
        raise
    try:
        _fsync_dir(folder)  # the new name is durable before the old one goes
    except BaseException:
        _quiet_unlink(final)
        raise
    _unlink_or_undo(src, final)
    return final


def _install(tmp: bytes, target: bytes) -> bytes:
    """Give ``tmp`` the first free name from ``target``; exclusive via link when possible."""
    for cand in candidates(target):
        try:
            if rename_noreplace(tmp, cand):
                return cand
            os.link(tmp, cand)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            # a filesystem without hard links: check, then rename (a narrow race, documented)
            if os.path.lexists(cand):
                continue
            os.rename(tmp, cand)
            return cand
        os.unlink(tmp)
        return cand
    raise AssertionError("unreachable")  # pragma: no cover


def _unlink_or_undo(src: bytes, arrived: bytes) -> None:
    """Remove the source; if that fails, remove the new copy so the file is in one place."""
    try:
        os.unlink(src)
    except BaseException:
        _quiet_unlink(arrived)
        raise


def _quiet_unlink(path: bytes | None) -> None:
    if path is None:
        return
    try:
        os.unlink(path)
    except OSError:
        pass


def _fsync_dir(folder: bytes) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- leftovers of a killed run ---------------------------------------------------------
#: An action moves each file into ``<its folder>/.difpy-aside-<pid>/`` (same name) before
#: it proves the key is another file; a kill there leaves it in that folder.
ASIDE_PREFIX = b".difpy-aside-"
_MOVE_TMP = re.compile(rb"^\.difpy-move-(\d+)-\d+\.tmp$")
#: The most directory entries a leftover sweep looks at (a bound on a huge DEST).
SWEEP_LIMIT = 1_000_000


def pid_alive(pid: int) -> bool:
    """Is a process with this id running (here)? Unknown counts as alive: never undo the
    half-done work of a process that may still be at it."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def rename_exact(src: bytes, dst: bytes) -> None:
    """Rename to exactly ``dst``, never replacing a file there (``FileExistsError``)."""
    if rename_noreplace(src, dst):
        return
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV):
            raise
        if os.path.lexists(dst):  # no hard links here: check, then rename (a narrow race)
            raise FileExistsError(errno.EEXIST, "File exists", os.fsdecode(dst)) from None
        os.rename(src, dst)
        return
    _unlink_or_undo(src, dst)


def recover_aside(folder: bytes) -> list[tuple[bytes, str]]:
    """Put back what a killed action left in ``folder/.difpy-aside-<pid>/`` (a process that
    is gone): each file returns to its name in ``folder``, unless that name is taken again,
    then it stays and is reported. Returns (path, what happened) for each file found."""
    out: list[tuple[bytes, str]] = []
    try:
        names = [n for n in os.listdir(folder) if n.startswith(ASIDE_PREFIX)]
    except OSError:
        return out
    for name in names:
        pid = name[len(ASIDE_PREFIX):]
        if not pid.isdigit() or pid_alive(int(pid)):
            continue
        aside = os.path.join(folder, name)
        if os.path.islink(aside) or not os.path.isdir(aside):
            continue
        try:
            inside = os.listdir(aside)
        except OSError:
            continue
        for entry in inside[:SWEEP_LIMIT]:
            src, dst = os.path.join(aside, entry), os.path.join(folder, entry)
            try:
                rename_exact(src, dst)
                out.append((dst, "put back where it was (left aside by an interrupted action)"))
            except OSError as exc:
                out.append((src, f"left aside by an interrupted action; not put back: {exc.strerror or exc}"))
        try:
            os.rmdir(aside)
        except OSError:
            pass
    return out


def clean_partial_moves(dest: bytes) -> int:
    """Remove the partial copies (``.difpy-move-<pid>-<n>.tmp``) that a cross-filesystem
    move killed half way left below ``dest``, if their process is gone. Returns how many."""
    removed = seen = 0
    for folder, dirs, files in os.walk(dest):
        seen += len(dirs) + len(files)
        for name in files:
            m = _MOVE_TMP.match(name)
            if m and not pid_alive(int(m.group(1))):
                try:
                    os.unlink(os.path.join(folder, name))
                    removed += 1
                except OSError:
                    pass
        if seen > SWEEP_LIMIT:
            break
    return removed
