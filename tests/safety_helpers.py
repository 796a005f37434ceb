"""Helpers shared by the issue-13 safety suites (test_safety*.py): the real CLI in a
subprocess, tree manifests, plans written by hand, and a read-only mount."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PY = sys.executable


def run(catalog: Path | str, *args: object, cwd: Path | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m difpy_index --catalog CATALOG ARGS`` in a real process."""
    argv = [PY, "-m", "difpy_index", "--catalog", os.fspath(catalog),
            *[a if isinstance(a, bytes) else os.fspath(a) for a in args]]  # type: ignore[misc]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)
    return subprocess.run(argv, capture_output=True, text=True, errors="replace",
                          timeout=timeout, cwd=cwd, env=env)  # type: ignore[call-overload]


def hashes(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file below ``root`` (hidden ones included)."""
    out: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def contents(root: Path) -> set[str]:
    """The distinct file contents (sha256) below ``root``: 'no picture lost' compares these."""
    return set(hashes(root).values())


def write_plan(path: Path, actions: list[tuple[str, str]], *, catalog: Path | None = None,
               threshold: float = 0.0, rotate: bool = True, same_dim: bool = True,
               px_size: int = 50, folders: list[str] | None = None, **extra: Any) -> Path:
    """A plan file as the review page downloads it (``actions``: (member, key) pairs)."""
    plan: dict[str, Any] = {
        "version": 1, "threshold": threshold, "rotate": rotate, "same_dim": same_dim,
        "px_size": px_size, "actions": [{"path": m, "key": k} for m, k in actions], **extra,
    }
    if catalog is not None:
        plan["catalog"] = str(catalog)
    if folders is not None:
        plan["folders"] = folders
    path.write_text(json.dumps(plan), encoding="utf-8")
    return path


def copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


@contextlib.contextmanager
def read_only_view(folder: Path, mountpoint: Path) -> Iterator[Path | None]:
    """``folder`` seen read-only at ``mountpoint`` (a read-only bind mount; root ignores
    mode bits, so chmod cannot make a folder read-only for the CI user). Yields None when
    mounting is not possible here (not root, no mount privilege)."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        yield None
        return
    ok = subprocess.run(["mount", "--bind", str(folder), str(mountpoint)], capture_output=True)
    if ok.returncode != 0:
        yield None
        return
    try:
        ro = subprocess.run(["mount", "-o", "remount,ro,bind", str(mountpoint)], capture_output=True)
        yield mountpoint if ro.returncode == 0 else None
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)


def bindfs_unavailable() -> str | None:
    """Why a real bindfs (FUSE pass-through) mount cannot be made here, or None."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse (FUSE is unavailable in this environment)"
    if shutil.which("bindfs") is None:
        return "bindfs is not installed (apt-get install bindfs)"
    if shutil.which("fusermount") is None and shutil.which("fusermount3") is None and os.geteuid() != 0:
        return "no fusermount to unmount with"
    return None


@contextlib.contextmanager
def bindfs(folder: Path, mountpoint: Path) -> Iterator[Path]:
    """``folder`` seen again at ``mountpoint`` through a real FUSE pass-through filesystem:
    the same files under other device numbers (and, for FUSE, other st_dev)."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["bindfs", "--no-allow-other", str(folder), str(mountpoint)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        import pytest

        pytest.skip(f"bindfs mount failed here: {res.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        for cmd in (["fusermount", "-u", str(mountpoint)], ["fusermount3", "-u", str(mountpoint)],
                    ["umount", "-l", str(mountpoint)]):
            if shutil.which(cmd[0]) and subprocess.run(cmd, capture_output=True).returncode == 0:
                break
