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
import sys
from collections.abc import Iterable
from typing import Any


def candidates(target: bytes) -> Iterable[bytes]:
    """``name.ext``, then ``name (1).ext``, ``name (2).ext``, ..."""
    yield target
    head, tail = os.path.split(target)
    stem, ext = os.path.splitext(tail)
    if not stem:  # ".hidden" style name
        stem, ext = tail, b""
    i = 1
    while True:
        yield os.path.join(head, stem + b" (%d)" % i + ext)
        i += 1


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
