"""The catalog repository: path ranges, batches, renames, recipes, concurrent access."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import write_image
from hypothesis import given
from hypothesis import strategies as st

from difpy_index.decode import Decoded
from difpy_index.index import Index
from difpy_index.store.catalog import prefix_bounds

segment = st.binary(min_size=1, max_size=4).filter(lambda b: b"/" not in b and b"\0" not in b)
paths = st.lists(segment, min_size=1, max_size=4).map(lambda parts: b"/" + b"/".join(parts))


@given(folder=paths, others=st.lists(paths, max_size=30))
def test_prefix_bounds_select_exactly_the_paths_below(folder: bytes, others: list[bytes]) -> None:
    lo, hi = prefix_bounds(folder)
    for p in [*others, folder, folder + b"/x", folder + b"x", folder + b"0", folder + b".png"]:
        below = p.startswith(folder + b"/")
        assert (lo <= p < hi) == below, (folder, p)


def test_prefix_bounds_in_sql(catalog_url: str) -> None:
    """The same range through the database's byte ordering (memcmp; SQLite and PostgreSQL)."""
    with Index.open(catalog_url) as idx:
        cat = idx._catalog
        (rid,) = cat.ensure_roots([b"/r"]).values()
        names = [b"/r/a/x.png", b"/r/a", b"/r/a0/y.png", b"/r/a.png", b"/r/a/\xff.png", b"/r/ab/z.png"]
        cat.record([Decoded(n, 1, 1, 1, 4, 4, {50: bytes(7500)}) for n in names],
                   dict.fromkeys(names, rid), idx.recipe)
        got = {k.path for k in cat.files_in([b"/r/a"])}
    assert got == {b"/r/a/x.png", b"/r/a/\xff.png"}


def test_record_and_rerecord(catalog_url: str) -> None:
    with Index.open(catalog_url) as idx:
        cat = idx._catalog
        (rid,) = cat.ensure_roots([b"/r"]).values()
        t50, t20 = bytes(range(250)) * 30, bytes(1200)
        cat.record([Decoded(b"/r/a.png", 10, 100, 5, 8, 6, {50: t50, 20: t20})], {b"/r/a.png": rid},
                   idx.recipe)
        assert cat.tensor_sizes([cat.files_by_path([b"/r/a.png"])[b"/r/a.png"].id], idx.recipe)
        assert np.array_equal(idx.tensor(b"/r/a.png"), np.frombuffer(t50, np.uint8).reshape(50, 50, 3))
        # the same file changed: its other sizes are dropped, not left stale
        cat.record([Decoded(b"/r/a.png", 11, 200, 5, 8, 6, {50: bytes(7500)})], {b"/r/a.png": rid},
                   idx.recipe)
        assert idx.tensor(b"/r/a.png", 20) is None
        assert not idx.tensor(b"/r/a.png").any()
        # now invalid: no tensor at all, a reason kept
        cat.record([Decoded(b"/r/a.png", 12, 300, 5, error="broken")], {b"/r/a.png": rid}, idx.recipe)
        assert idx.tensor(b"/r/a.png") is None
        assert cat.invalid_in() == {b"/r/a.png": "broken"}
        assert idx.status()["files"] == 0


def test_move_row_keeps_tensors_and_replaces_clash(catalog_url: str) -> None:
    with Index.open(catalog_url) as idx:
        cat = idx._catalog
        (rid,) = cat.ensure_roots([b"/r"]).values()
        a, b = bytes([1]) * 7500, bytes([2]) * 7500
        cat.record([Decoded(b"/r/a.png", 1, 1, 1, 4, 4, {50: a}), Decoded(b"/r/b.png", 1, 1, 2, 4, 4, {50: b})],
                   {b"/r/a.png": rid, b"/r/b.png": rid}, idx.recipe)
        assert cat.move_row(b"/r/a.png", b"/r/b.png", 1, 1, 1)
        assert idx.tensor(b"/r/a.png") is None
        assert idx.tensor(b"/r/b.png").tobytes() == a
        assert not cat.move_row(b"/r/missing.png", b"/r/c.png", 1, 1, 1)
        assert len(cat.files_in([b"/r"])) == 1


def test_other_recipe_is_re_decoded(catalog_path: Path, tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    write_image(root / "a.png", 1)
    with Index.open(catalog_path) as idx:
        idx.update([root], processes=1)
    conn = sqlite3.connect(catalog_path)
    conn.execute("UPDATE tensors SET recipe='some-older-recipe'")
    conn.commit()
    conn.close()
    with Index.open(catalog_path) as idx:
        rep = idx.update([root], processes=1)
        assert (rep.decoded, rep.reused) == (1, 0)
        assert idx.tensor(root / "a.png") is not None


def test_search_input_matrix(catalog_url: str, tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    for i in range(3):
        write_image(root / f"{i}.png", i, size=(10 + i, 7))
    (root / "bad.png").write_bytes(b"x")
    with Index.open(catalog_url) as idx:
        idx.update([root], processes=1)
        data = idx._catalog.search_input(50, idx.recipe)
        assert data.tensors.shape == (3, 50, 50, 3)
        assert list(data.widths) == [10, 11, 12] and list(data.heights) == [7, 7, 7]
        assert data.paths == sorted(data.paths)
        for i, p in enumerate(data.paths):
            assert np.array_equal(data.tensors[i], idx.tensor(p))
        assert len(idx._catalog.search_input(50, idx.recipe, [os.fsencode(tmp_path / "nothing")]).paths) == 0


def test_reader_not_blocked_by_writer(catalog_path: Path, tmp_path: Path) -> None:
    """WAL: a reader sees the last commit while another connection holds the write lock."""
    root = tmp_path / "imgs"
    write_image(root / "a.png", 1)
    with Index.open(catalog_path) as idx:
        idx.update([root], processes=1)
    writer = sqlite3.connect(catalog_path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("DELETE FROM tensors")
    try:
        with Index.open(catalog_path) as idx:
            assert idx.tensor(root / "a.png") is not None
            assert idx.status()["files"] == 1
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_writers_wait_for_each_other(catalog_path: Path, tmp_path: Path) -> None:
    """BEGIN IMMEDIATE + busy timeout: a second writer waits instead of failing."""
    root = tmp_path / "imgs"
    write_image(root / "a.png", 1)
    Index.open(catalog_path).close()
    blocker = sqlite3.connect(catalog_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    done = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with Index.open(catalog_path) as idx:
                idx.update([root], processes=1)
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    t = threading.Thread(target=run)
    t.start()
    assert not done.wait(0.5)  # blocked on the write lock, not failed
    blocker.execute("COMMIT")
    blocker.close()
    assert done.wait(30)
    t.join()
    assert errors == []
    with Index.open(catalog_path) as idx:
        assert idx.status()["files"] == 1


@pytest.mark.parametrize("n", [0, 3])
def test_status_counts(catalog_url: str, tmp_path: Path, n: int) -> None:
    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(n):
        write_image(root / f"{i}.png", i)
    with Index.open(catalog_url) as idx:
        idx.update([root], processes=1)
        info = idx.status()
    assert info["files"] == n
    assert info["roots"] == [os.path.realpath(root)]
    assert info["px_sizes"] == ([50] if n else [])
