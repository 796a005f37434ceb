"""Output files and folders, checked before anything is touched.

Every command that writes something besides the catalog (the review page, difPy's JSON
files, a move destination) first asks this module whether it can: the folder exists or can
be made, is a folder, and takes a new file (probed by creating and removing one, since
``os.access`` is wrong for root and on some network filesystems). An output never replaces
a file that is not an earlier output of ours: the review page carries a marker, and any
other existing file in its place is refused. All refusals are ``UsageError`` (exit 2),
raised before the first image is moved or deleted.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from .errors import UsageError

#: The review page's ``<meta name="generator">``: a file holding it in its first bytes is
#: an earlier page of ours and may be replaced.
REPORT_MARK = '<meta name="generator" content="difpy-index">'
_MARK_WINDOW = 4096


def _name(path: str | os.PathLike[str] | bytes) -> Path:
    return Path(os.fsdecode(os.fspath(path))).expanduser()


def probe_folder(folder: Path, what: str) -> None:
    """Can a new file be created in the existing ``folder``? Raises UsageError if not.
    Linux: an unnamed ``O_TMPFILE`` file, so nothing is left behind even on a kill."""
    tmpfile = getattr(os, "O_TMPFILE", 0)
    if tmpfile:
        try:
            os.close(os.open(folder, tmpfile | os.O_WRONLY, 0o600))
            return
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOTSUP):
                raise UsageError(f"cannot write {what} into {folder}: {exc.strerror or exc}") from None
    for i in range(100):
        probe = folder / f".difpy-probe-{os.getpid()}-{i}"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        except OSError as exc:
            raise UsageError(f"cannot write {what} into {folder}: {exc.strerror or exc}") from None
        os.close(fd)
        os.unlink(probe)
        return
    raise UsageError(f"cannot write {what} into {folder}: no free probe name")


def check_folder(path: str | os.PathLike[str] | bytes, what: str) -> Path:
    """``path`` as an absolute folder that exists (writable) or can be created below a
    writable existing folder. Nothing is created. Returns the absolute path."""
    folder = _name(path).absolute()
    probe = folder
    for _ in range(4096):  # bounded: a path has far fewer components
        try:
            st = os.stat(probe)
        except FileNotFoundError:
            if probe.parent == probe:
                break
            probe = probe.parent
            continue
        except NotADirectoryError:
            raise UsageError(f"cannot use {folder} for {what}: a part of it is a file") from None
        except OSError as exc:
            raise UsageError(f"cannot use {folder} for {what}: {exc.strerror or exc}") from None
        if not _is_dir(st.st_mode):
            if probe == folder:
                raise UsageError(f"{what} {folder} exists and is not a folder")
            raise UsageError(f"cannot use {folder} for {what}: {probe} is not a folder")
        probe_folder(probe, what)
        return folder
    raise UsageError(f"cannot use {folder} for {what}: no existing parent folder")


def _is_dir(mode: int) -> bool:
    import stat

    return stat.S_ISDIR(mode)


def is_our_report(path: Path) -> bool:
    """Does this existing file start like a review page written by difpy-index?"""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_MARK_WINDOW)
    except OSError:
        return False
    return REPORT_MARK.encode() in head


def check_report(path: str | os.PathLike[str] | bytes) -> Path:
    """The review page's path: a new file, or an earlier page of ours; its folder writable."""
    out = _name(path).absolute()
    try:
        st = os.stat(out)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:
            raise UsageError(f"cannot write the report {out}: a part of its folder is a file") from None
        raise UsageError(f"cannot write the report {out}: {exc.strerror or exc}") from None
    if st is not None:
        if _is_dir(st.st_mode):
            raise UsageError(f"--report needs a file name, not a folder: {out}")
        if not is_our_report(out):
            raise UsageError(
                f"refusing to overwrite {out}: it exists and is not a review page written by "
                "difpy-index (choose a new file name)"
            )
    check_folder(out.parent, "the report")
    return out


__all__ = ["REPORT_MARK", "check_folder", "check_report", "is_our_report", "probe_folder"]
