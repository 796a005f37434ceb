"""``duplicates`` grouped in SQL by the tensors' digests (schema 0005) gives the engine's
result over every tensor: planted copies across folders, rotated copies, a
rotation-symmetric picture (its smallest matching rotation), one flat colour at several
dimensions (the same tensor: ``same_dim`` decides), a pixel swap (same sums, not equal),
``in_folder``, references, keep rules, chunks of whole digest classes; on SQLite and on
PostgreSQL. The engine's result is the search with the SQL grouping switched off."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import imagefactory as imf
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from difpy_index import Index
from difpy_index.store import migrate
from difpy_index.store.catalog import Catalog
from difpy_index.tensorhash import tensor_digests

ROT = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180,
       270: Image.Transpose.ROTATE_270}


def _symmetric(seed: int) -> Image.Image:
    """A 50 px picture equal to itself turned by 180 degrees (not by 90)."""
    top = imf.synthetic_array(seed, 50, 25)
    return Image.fromarray(np.concatenate([top, top[::-1, ::-1]], axis=0))


def _library(root: Path) -> list[Path]:
    a, b = root / "a", root / "b"
    (a / "sub").mkdir(parents=True)
    b.mkdir()
    for i in range(5):
        base = imf.synthetic(400 + i, 50, 50)  # 50 px: the tensor is the pixels themselves
        base.save(a / f"orig{i}.png")
        base.save((a / "sub" if i % 2 else b) / f"copy{i}.png")
        base.transpose(ROT[90 * (1 + i % 3)]).save(b / f"rot{i}.png")
        arr = np.asarray(base).copy()
        arr[0, 0], arr[0, 1] = arr[0, 1].copy(), arr[0, 0].copy()  # same sums, other tensor
        Image.fromarray(arr).save(a / f"swap{i}.png")
    sym = _symmetric(7)
    sym.save(a / "sym.png")
    sym.transpose(ROT[90]).save(b / "sym90.png")
    sym.transpose(ROT[180]).save(a / "sub" / "sym180.png")
    for w, h, where in ((50, 50, a), (80, 60, a), (60, 80, b), (120, 90, b / "..")):
        Image.new("RGB", (w, h), (90, 140, 30)).save(where / f"flat_{w}x{h}.png")
    for i in range(4):
        imf.synthetic(500 + i, 64, 48).save(b / f"other{i}.png")
    return [a, b]


@pytest.fixture
def no_sql_grouping(monkeypatch: pytest.MonkeyPatch):
    """A context in which every search is the engine's over all tensors."""
    import contextlib

    @contextlib.contextmanager
    def off():
        with monkeypatch.context() as m:
            m.setattr(Catalog, "twin_candidates", lambda *a, **k: None)
            yield

    return off


CASES = [
    {},
    {"rotate": False},
    {"same_dim": False},
    {"rotate": False, "same_dim": False},
    {"in_folder": True},
    {"in_folder": True, "same_dim": False},
    {"keep": "difpy"},
    {"keep": "newest"},
    {"max_band_rows": 2},
    {"max_band_rows": 3, "same_dim": False},
]


def test_sql_grouping_equals_the_engine(catalog_url: str, tmp_path: Path, no_sql_grouping) -> None:
    dirs = _library(tmp_path)
    with Index.open(catalog_url) as idx:
        idx.update([tmp_path], processes=1)
        calls = []
        real = Catalog.twin_candidates

        def spy(self, *a, **k):
            out = real(self, *a, **k)
            calls.append(out)
            return out

        for case in CASES:
            folders = dirs if case.get("in_folder") else None
            calls.clear()
            with pytest.MonkeyPatch.context() as m:
                m.setattr(Catalog, "twin_candidates", spy)
                got = idx.search(folders, similarity="duplicates", **case)
            assert len(calls) == 1 and calls[0] is not None  # the SQL path was taken
            with no_sql_grouping():
                want = idx.search(folders, similarity="duplicates", **case)
            assert want.groups, case
            assert got.groups == want.groups, case  # keys, members, rotations, folders
            assert got.result == want.result and got.lower_quality == want.lower_quality
        # the smallest rotation of a 180-degree symmetric picture, and the flat colour
        plain = idx.search(similarity="duplicates")
        sym = next(g for g in plain.groups if g.key.endswith("sym.png"))
        assert [(Path(m.path).name, m.rotation) for m in sym.members] == \
            [("sym180.png", 0), ("sym90.png", 90)]
        flat = {Path(g.key).name: sorted(Path(m.path).name for m in g.members)
                for g in plain.groups if "flat" in g.key}
        assert flat == {"flat_80x60.png": ["flat_60x80.png"]}  # same_dim: 50x50, 120x90 alone
        flat_any = [g for g in idx.search(similarity="duplicates", same_dim=False).groups
                    if "flat" in g.key]
        assert len(flat_any) == 1 and len(flat_any[0].members) == 3
        assert not any("swap" in m.path for g in plain.groups for m in g.members)


def test_sql_grouping_with_a_reference_folder(tmp_path: Path, no_sql_grouping) -> None:
    dirs = _library(tmp_path)
    with Index.open(tmp_path / "c.sqlite") as idx:
        idx.update([tmp_path], processes=1)
        got = idx.search(similarity="duplicates", reference=[dirs[1]])
        with no_sql_grouping():
            want = idx.search(similarity="duplicates", reference=[dirs[1]])
    assert want.groups and got.groups == want.groups
    assert not any(m.path.startswith(str(dirs[1])) for g in got.groups for m in g.members)


def test_only_rows_with_a_twin_are_candidates(tmp_path: Path) -> None:
    dirs = _library(tmp_path)
    with Index.open(tmp_path / "c.sqlite") as idx:
        idx.update(dirs, processes=1)
        cat = idx._catalog
        recipe = idx.search_recipe()
        turned = cat.twin_candidates(50, recipe, None, True, True)
        plain = cat.twin_candidates(50, recipe, None, False, False)
        paths = {f.id: Path(os.fsdecode(f.path)).name
                 for f in cat.files_in([os.fsencode(os.path.realpath(d)) for d in dirs])}
    assert turned is not None and plain is not None
    names = sorted(paths[i] for i in turned[0].tolist())
    # copies, rotations, the symmetric trio and the two flat images of one dimension pair
    assert names == sorted([f"orig{i}.png" for i in range(5)] + [f"copy{i}.png" for i in range(5)]
                           + [f"rot{i}.png" for i in range(5)]
                           + ["sym.png", "sym90.png", "sym180.png", "flat_80x60.png", "flat_60x80.png"])
    names = sorted(paths[i] for i in plain[0].tolist())
    assert names == sorted([f"orig{i}.png" for i in range(5)] + [f"copy{i}.png" for i in range(5)]
                           + ["sym.png", "sym180.png", "flat_50x50.png", "flat_80x60.png",
                              "flat_60x80.png"])


def test_update_records_the_digests(tmp_path: Path) -> None:
    _library(tmp_path)
    with Index.open(tmp_path / "c.sqlite") as idx:
        idx.update([tmp_path], processes=2)  # worker processes made them
    conn = sqlite3.connect(tmp_path / "c.sqlite")
    rows = conn.execute("SELECT px_size, data, digest, turned_digest FROM tensors").fetchall()
    conn.close()
    assert len(rows) == 5 * 4 + 3 + 4 + 4
    assert all(tensor_digests(d, px) == (h, t) for px, d, h, t in rows)


def test_digests_are_exact_content_keys() -> None:
    rng = np.random.default_rng(3)
    t = rng.integers(0, 256, (50, 50, 3), dtype=np.uint8)
    plain, turned = tensor_digests(t.tobytes(), 50)
    for k in range(4):
        r = np.ascontiguousarray(np.rot90(t, k))
        assert tensor_digests(r.tobytes(), 50)[1] == turned
        assert (tensor_digests(r.tobytes(), 50)[0] == plain) == (k == 0)
    t2 = t.copy()
    t2[10, 10, 1] ^= 1
    assert tensor_digests(t2.tobytes(), 50)[1] != turned


def test_schema_0005_fills_digests_of_an_older_catalog(tmp_path: Path, no_sql_grouping) -> None:
    """A catalog written at schema 0003 gets its digests on upgrade, and its duplicates are
    the engine's; a row whose digest is missing makes the search read every tensor."""
    from alembic import command

    from difpy_index.store.db import make_engine

    lib = tmp_path / "lib"
    lib.mkdir()
    base = imf.synthetic(11, 50, 50)
    base.save(lib / "a.png")
    base.transpose(ROT[270]).save(lib / "b.png")
    imf.synthetic(12, 50, 50).save(lib / "c.png")
    new = tmp_path / "new.sqlite"
    with Index.open(new) as idx:
        idx.update([lib], processes=1)
        want = idx.search(similarity="duplicates")
    assert len(want.groups) == 1
    path = tmp_path / "old.sqlite"
    engine = make_engine(path)
    with engine.begin() as conn:
        command.upgrade(migrate.alembic_config(conn), "0003")  # type: ignore[arg-type]
    engine.dispose()
    src = sqlite3.connect(new)
    dst = sqlite3.connect(path)
    for table, cols in (("roots", "id, path, added_ns, updated_ns"),
                        ("files", "id, root_id, path, size, mtime_ns, inode, ctime_ns, status, "
                                  "error, width, height, orientation, format, updated_ns"),
                        ("tensors", "file_id, px_size, recipe, data, pixel_sum")):
        rows = src.execute(f"SELECT {cols} FROM {table}").fetchall()
        marks = ",".join("?" * len(rows[0]))
        dst.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks})", rows)
    dst.commit()
    dst.close()
    src.close()
    assert migrate.inspect_file(path) == "0003"
    with Index.open(path) as idx:
        assert idx.search(similarity="duplicates").result == want.result
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT px_size, data, digest, turned_digest FROM tensors").fetchall()
    conn.execute("UPDATE tensors SET turned_digest = NULL WHERE rowid = (SELECT min(rowid) FROM tensors)")
    conn.commit()
    conn.close()
    assert all(tensor_digests(d, px) == (h, t) for px, d, h, t in rows)
    with Index.open(path) as idx:
        assert idx._catalog.twin_candidates(50, idx.search_recipe(), None, True, True) is None
        assert idx.search(similarity="duplicates").result == want.result


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from([0, 90, 180, 270]),
                          st.integers(0, 2), st.booleans()), min_size=2, max_size=14),
       st.booleans(), st.booleans(), st.booleans())
def test_sql_grouping_equals_the_engine_on_random_libraries(
    tmp_path_factory: pytest.TempPathFactory, no_sql_grouping, files, rotate, same_dim, in_folder,
) -> None:
    """Random pictures drawn from four bases, each turned, in one of three folders, some
    stretched to another size (same tensor? only if it stays 50 px square)."""
    root = tmp_path_factory.mktemp("twins")
    dirs = [root / f"d{i}" for i in range(3)]
    for d in dirs:
        d.mkdir()
    for n, (b, deg, folder, wide) in enumerate(files):
        img = imf.synthetic(900 + b, 50, 50) if b < 3 else Image.new("RGB", (50, 50), (7, 8, 9))
        if deg:
            img = img.transpose(ROT[deg])
        if wide and b == 3:
            img = Image.new("RGB", (70, 50), (7, 8, 9))  # a flat picture: the same tensor
        img.save(dirs[folder] / f"f{n}.png")
    with Index.open(root / "c.sqlite") as idx:
        idx.update(dirs, processes=1)
        kw = {"rotate": rotate, "same_dim": same_dim, "in_folder": in_folder}
        got = idx.search(dirs if in_folder else None, similarity="duplicates", max_band_rows=3, **kw)
        with no_sql_grouping():
            want = idx.search(dirs if in_folder else None, similarity="duplicates", **kw)
    assert got.groups == want.groups
    assert got.result == want.result


def test_a_write_during_the_search_is_not_seen(catalog_url: str, tmp_path: Path) -> None:
    """The grouping, the rows and the candidates' tensors come from one state of the
    catalog: a file forgotten by another writer between the SQL grouping and the tensor
    reads changes nothing in this search (it would otherwise miss the row's tensor)."""
    _library(tmp_path)
    with Index.open(catalog_url) as idx:
        idx.update([tmp_path], processes=1)
        want = idx.search(similarity="duplicates")
        victim = os.fsencode(want.groups[0].members[0].path)
        real = Catalog.twin_candidates

        def racing(self, *a, **k):
            out = real(self, *a, **k)
            with Index.open(catalog_url) as other:
                assert other.forget([victim]) == 1
            return out

        with pytest.MonkeyPatch.context() as m:
            m.setattr(Catalog, "twin_candidates", racing)
            got = idx.search(similarity="duplicates")
        assert got.groups == want.groups
        after = idx.search(similarity="duplicates")
    assert after.groups != want.groups  # the next search sees the write
