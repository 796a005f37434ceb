"""Index.search through the partitioned search (tensors read band by band from the real
catalog) gives the very same result as the in-memory search, for every parameter set."""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import imagefactory as imf
import numpy as np
import pytest
from PIL import Image

from difpy_index import Index
from difpy_index.store import migrate


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """Two folders of 30 images: copies, rotations, resized and brightened copies (pairs
    on the pixel-sum bound), a copy pair spanning the folders, unrelated images."""
    root = tmp_path_factory.mktemp("banded")
    a, b = root / "a", root / "b"
    a.mkdir()
    b.mkdir()
    for i in range(6):
        base = imf.synthetic(100 + i, 64 + 8 * (i % 3), 48)
        base.save(a / f"orig{i}.png")
        base.save(a / f"copy{i}.png")
        imf.rotated(base, 90 * (1 + i % 3)).save(a / f"rot{i}.png")
        imf.resized(base, 0.5).save(b / f"half{i}.png")
        arr = np.asarray(base).astype(np.int16)
        Image.fromarray(np.clip(arr + 2, 0, 255).astype(np.uint8)).save(b / f"bright{i}.png")
        imf.noisy(base, 2.0, seed=i).save(b / f"noisy{i}.png")
    imf.synthetic(7, 80, 80).save(a / "twin.png")
    imf.synthetic(7, 80, 80).save(b / "twin.png")
    for i in range(4):
        imf.synthetic(200 + i, 50, 50).save(b / f"other{i}.png")
    catalog = root / "catalog.sqlite"
    with Index.open(catalog) as idx:
        idx.update([a, b], processes=1)
    return catalog, [a, b]


CASES = [
    {"similarity": "duplicates"},
    {"similarity": "duplicates", "rotate": False},
    {"similarity": "similar"},
    {"similarity": "similar", "same_dim": False},
    {"similarity": 4, "rotate": False, "same_dim": False},
    {"similarity": 60, "same_dim": False},
    {"similarity": "similar", "in_folder": True},
    {"similarity": 0, "in_folder": True, "same_dim": False},
    {"similarity": 1e6},
    {"similarity": "similar", "keep": "difpy"},
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_banded_equals_in_memory(library, case) -> None:
    catalog, dirs = library
    with Index.open(catalog) as idx:
        dirs_arg = dirs if case.get("in_folder") else None
        want = idx.search(dirs_arg, **case)
        assert want.groups  # every case finds something
        for rows in (2, 3, 7):
            got = idx.search(dirs_arg, max_band_rows=rows, **case)
            assert got.result == want.result
            assert got.groups == want.groups  # rotations too
            assert got.lower_quality == want.lower_quality
        with ThreadPoolExecutor(2) as ex:
            got = idx.search(dirs_arg, executor=ex, max_band_rows=5, **case)
        assert got.groups == want.groups


def test_banded_non_recursive_and_subfolder(library) -> None:
    catalog, dirs = library
    with Index.open(catalog) as idx:
        want = idx.search([dirs[1]], similarity=60, same_dim=False, recursive=False)
        got = idx.search([dirs[1]], similarity=60, same_dim=False, recursive=False,
                         max_band_rows=2)
        assert want.groups and got.groups == want.groups
        assert got.stats["process"]["search"]["files_searched"] == 23


def test_banded_with_reference_folder(library) -> None:
    catalog, dirs = library
    with Index.open(catalog) as idx:
        want = idx.search(similarity=60, same_dim=False, reference=[dirs[1]])
        got = idx.search(similarity=60, same_dim=False, reference=[dirs[1]], max_band_rows=3)
        assert want.groups and got.groups == want.groups


def test_max_band_rows_is_checked(library) -> None:
    from difpy_index import UsageError

    with Index.open(library[0]) as idx, pytest.raises(UsageError, match="max_band_rows"):
        idx.search(max_band_rows=1)


def test_schema_0003_fills_pixel_sums_of_an_older_catalog(tmp_path: Path) -> None:
    """A catalog written at schema 0002 gets every tensor's pixel sum on upgrade."""
    from alembic import command

    from difpy_index.store.db import make_engine

    path = tmp_path / "old.sqlite"
    engine = make_engine(path)
    with engine.begin() as conn:
        command.upgrade(migrate.alembic_config(conn), "0002")  # type: ignore[arg-type]
    engine.dispose()
    rng = np.random.default_rng(0)
    blobs = [rng.integers(0, 256, 50 * 50 * 3, dtype=np.uint8).tobytes() for _ in range(5)]
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO roots(id, path, added_ns) VALUES (1, x'2f61', 0)")
    for i, blob in enumerate(blobs):
        conn.execute(
            "INSERT INTO files(id, root_id, path, size, mtime_ns, status, width, height, updated_ns)"
            " VALUES (?, 1, ?, 10, 0, 'ok', 50, 50, 0)", (i + 1, b"/a/%d.png" % i))
        conn.execute("INSERT INTO tensors(file_id, px_size, recipe, data) VALUES (?, 50, 'r', ?)",
                     (i + 1, blob))
    conn.commit()
    conn.close()
    assert migrate.inspect_file(path) == "0002"
    Index.open(path).close()
    assert migrate.inspect_file(path) == migrate.HEAD
    conn = sqlite3.connect(path)
    got = dict(conn.execute("SELECT file_id, pixel_sum FROM tensors"))
    conn.close()
    assert got == {i + 1: int(np.frombuffer(b, np.uint8).sum()) for i, b in enumerate(blobs)}


def test_update_records_pixel_sums(library) -> None:
    catalog, _ = library
    conn = sqlite3.connect(catalog)
    rows = conn.execute("SELECT data, pixel_sum FROM tensors").fetchall()
    conn.close()
    assert len(rows) == 6 * 6 + 2 + 4
    assert all(s == int(np.frombuffer(d, np.uint8).sum()) for d, s in rows)


@pytest.mark.parametrize("case", [{"similarity": "duplicates"}, {"similarity": "similar"},
                                  {"similarity": 60, "same_dim": False},
                                  {"similarity": 4, "rotate": False}])
def test_banded_query_equals_in_memory(library, case, monkeypatch) -> None:
    """Above the band size, query reads only rows within the pixel-sum bound, in chunks:
    the same matches, order and rotations."""
    from difpy_index import partition

    catalog, dirs = library
    images = sorted(dirs[0].glob("*.png"))[:6] + sorted(dirs[1].glob("*.png"))[:4]
    with Index.open(catalog) as idx:
        want = idx.query(images, **case)
        assert any(m.matches for m in want)
        monkeypatch.setattr(partition, "DEFAULT_MAX_BAND_ROWS", 3)
        got = idx.query(images, **case)
    assert got == want
