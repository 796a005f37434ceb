"""Issue 13, class 3: a change that keeps size and mtime is still a change.

BMP, TIFF and PPM sizes are fixed by the dimensions, and ``touch -r`` (or a careless copy
tool) sets the mtime back; ctime cannot be set back and a replaced file has another inode,
so ``update`` compares all four. Rows from before schema 0002 have no ctime: "not seen
yet", decoded once and then filled in.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from conftest import Cli, write_image


def same_size_same_mtime_edit(path: Path, seed: int, replace: bool) -> None:
    """Rewrite ``path`` with another picture of the same format and dimensions (BMP: the
    same size in bytes), then set its mtime back (``touch -r``). ``replace``: write a new
    file and rename it over (a new inode) instead of editing in place."""
    st = os.stat(path)
    target = path.with_name(path.name + ".new") if replace else path
    write_image(target, seed=seed, fmt="BMP")
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    if replace:
        os.replace(target, path)
    now = os.stat(path)
    assert (now.st_size, now.st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert now.st_ctime_ns != st.st_ctime_ns or now.st_ino != st.st_ino


@pytest.mark.parametrize("replace", [False, True], ids=["in-place", "renamed-over"])
def test_update_sees_an_edit_that_keeps_size_and_mtime(replace: bool, tmp_path: Path, cli: Cli) -> None:
    root = tmp_path / "bmp"
    keep = write_image(root / "keep.bmp", seed=1, fmt="BMP")
    assert isinstance(keep, Path)
    dup = root / "zdup.bmp"
    dup.write_bytes(keep.read_bytes())
    assert cli("update", root).exit_code == 0
    assert len(json.loads(cli("search", root, "--json").stdout)["lower_quality"]) == 1
    same_size_same_mtime_edit(dup, seed=9, replace=replace)
    res = cli("update", root, "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["decoded"] == 1, res.stdout
    assert json.loads(cli("search", root, "--json").stdout)["result"] == {}
    # and then it is unchanged again: reused
    assert json.loads(cli("update", root, "--json").stdout)["reused"] == 2


def test_rows_without_ctime_are_checked_once_then_filled(tmp_path: Path, cli: Cli) -> None:
    """Rows from before schema 0002 have no ctime: 'not seen yet'. The next update decodes
    them again once (their content is unknown) and fills ctime in; then they are reused."""
    root = tmp_path / "pics"
    for i in range(3):
        write_image(root / f"p{i}.png", seed=i)
    assert cli("update", root).exit_code == 0
    conn = sqlite3.connect(cli.catalog)
    with conn:
        filled = conn.execute("SELECT count(*) FROM files WHERE ctime_ns IS NOT NULL").fetchone()[0]
        conn.execute("UPDATE files SET ctime_ns = NULL")
    conn.close()
    assert filled == 3
    first = json.loads(cli("update", root, "--json").stdout)
    second = json.loads(cli("update", root, "--json").stdout)
    assert (first["decoded"], second["decoded"], second["reused"]) == (3, 0, 3)
    conn = sqlite3.connect(cli.catalog)
    got = dict(conn.execute("SELECT path, ctime_ns FROM files").fetchall())
    conn.close()
    for p, ctime in got.items():
        assert ctime == os.stat(p).st_ctime_ns


def test_a_rename_is_still_followed_without_a_decode(tmp_path: Path, cli: Cli) -> None:
    """A rename moves ctime too; size, mtime and inode vouch for it (no decode), and the
    row takes the new ctime, so the next update reuses it."""
    root = tmp_path / "pics"
    write_image(root / "a.png", seed=1)
    assert cli("update", root).exit_code == 0
    os.rename(root / "a.png", root / "b.png")
    first = json.loads(cli("update", root, "--json").stdout)
    assert (first["renamed"], first["decoded"]) == (1, 0)
    assert json.loads(cli("update", root, "--json").stdout)["reused"] == 1
