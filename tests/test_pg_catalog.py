"""The catalog on PostgreSQL: a URL is never a path; the same models, migrations and open
policy as SQLite; update and search give the very same results on both.

The PostgreSQL tests need a server: ``DIFPY_INDEX_TEST_PG_URL`` (``.ci/run`` starts a
throw-away cluster and sets it), e.g. ``postgresql+psycopg://difpy@127.0.0.1:55433/postgres``;
each test gets a fresh database of its own there.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_cluster import SEARCHES, _library

from difpy_index import Index
from difpy_index.errors import NotACatalogError, SchemaTooNewError
from difpy_index.store import migrate

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(REPO))


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    return subprocess.run([sys.executable, "-m", "difpy_index", *args], capture_output=True,
                          text=True, env=env or ENV, cwd=cwd, timeout=300)


# --------------------------------------------------------------------------- no server needed


@pytest.mark.parametrize("how", ["option", "env"])
def test_url_is_never_taken_as_a_path(tmp_path: Path, how: str) -> None:
    url = "postgresql+psycopg://u:secret@nohost.invalid:5999/db"
    env = dict(ENV, DIFPY_INDEX_CATALOG=url) if how == "env" else ENV
    args = ("status",) if how == "env" else ("--catalog", url, "status")
    res = cli(*args, env=env, cwd=tmp_path)
    assert res.returncode == 1
    assert res.stderr.count("\n") == 1 and "nohost.invalid" in res.stderr
    assert "secret" not in res.stderr  # the password is never printed
    assert list(tmp_path.iterdir()) == []  # no nested folders, no SQLite file named 'db'


def test_url_without_the_cluster_extra_is_one_line(tmp_path: Path) -> None:
    fake = tmp_path / "fake"
    (fake / "psycopg").mkdir(parents=True)
    (fake / "psycopg" / "__init__.py").write_text("raise ImportError('no psycopg here')\n")
    work = tmp_path / "work"
    work.mkdir()
    env = dict(ENV, PYTHONPATH=os.pathsep.join([str(fake), str(REPO)]))
    res = cli("--catalog", "postgresql+psycopg://u:p@host:5999/db", "status", env=env, cwd=work)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "cluster" in res.stderr
    assert list(work.iterdir()) == []


def test_unknown_url_scheme_is_a_usage_error(tmp_path: Path) -> None:
    res = cli("--catalog", "mysql://u:p@h/db", "status", cwd=tmp_path)
    assert res.returncode == 2 and "postgresql+psycopg://" in res.stderr
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- a real server


def _pg(url: str, sql: str) -> list[tuple]:
    import psycopg

    with psycopg.connect("postgresql://" + url.split("://", 1)[1], autocommit=True) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else []


def test_pg_schema_matches_the_models(pg_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from difpy_index.store.db import make_pg_engine
    from difpy_index.store.models import Base

    with Index.open(pg_url) as idx:
        assert idx.status()["schema"] == migrate.HEAD
        assert "difpy_test_" in str(idx.path)
    engine = make_pg_engine(pg_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                    Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_pg_open_policy(pg_url: str) -> None:
    Index.open(pg_url).close()
    Index.open(pg_url).close()  # already at HEAD: nothing to do
    assert _pg(pg_url, "SELECT version_num FROM alembic_version") == [(migrate.HEAD,)]
    _pg(pg_url, "UPDATE alembic_version SET version_num = '0999'")
    with pytest.raises(SchemaTooNewError):
        Index.open(pg_url)
    assert _pg(pg_url, "SELECT version_num FROM alembic_version") == [("0999",)]


def test_pg_database_of_another_program_is_refused_untouched(pg_url: str) -> None:
    _pg(pg_url, "CREATE TABLE people (name text)")
    with pytest.raises(NotACatalogError):
        Index.open(pg_url)
    tables = {r[0] for r in _pg(pg_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert tables == {"people"}


def test_pg_older_schema_is_upgraded(pg_url: str) -> None:
    from alembic import command

    from difpy_index.store.db import make_pg_engine

    engine = make_pg_engine(pg_url)
    with engine.begin() as conn:
        command.upgrade(migrate.alembic_config(conn), "0002")  # type: ignore[arg-type]
    engine.dispose()
    with Index.open(pg_url) as idx:
        assert idx.status()["schema"] == migrate.HEAD


def _open_status(url: str) -> str:
    with Index.open(url) as idx:
        return str(idx.status()["schema"])


def test_pg_concurrent_openers_create_one_schema(pg_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(3) as pool:
        assert pool.map(_open_status, [pg_url] * 3) == [migrate.HEAD] * 3


def _rows_sqlite(path: Path) -> dict[bytes, tuple]:
    conn = sqlite3.connect(path)
    try:
        return {bytes(r[0]): tuple(bytes(x) if isinstance(x, bytes | memoryview) else x for x in r[1:])
                for r in conn.execute(
                    "SELECT f.path, f.status, f.error, f.width, f.height, f.size, f.format, "
                    "t.px_size, t.data, t.pixel_sum FROM files f LEFT JOIN tensors t ON t.file_id = f.id")}
    finally:
        conn.close()


def _rows_pg(url: str) -> dict[bytes, tuple]:
    return {bytes(r[0]): tuple(bytes(x) if isinstance(x, bytes | memoryview) else x for x in r[1:])
            for r in _pg(url,
                         "SELECT f.path, f.status, f.error, f.width, f.height, f.size, f.format, "
                         "t.px_size, t.data, t.pixel_sum FROM files f LEFT JOIN tensors t ON t.file_id = f.id")}


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("pglib")
    lib = _library(root)
    sqlite_cat = root / "ref.sqlite"
    with Index.open(sqlite_cat) as idx:
        idx.update([lib], processes=1)
    return lib, sqlite_cat


def test_pg_update_and_search_equal_sqlite(pg_url: str, library) -> None:
    folder, ref = library
    with Index.open(pg_url) as idx:
        rep = idx.update([folder], processes=1)
        assert (rep.decoded, rep.files, rep.invalid) == (41, 40, 1)
        assert idx.update([folder], processes=1).reused == 41
    assert _rows_pg(pg_url) == _rows_sqlite(ref)
    with Index.open(ref) as lite, Index.open(pg_url) as idx:
        assert {k: v for k, v in idx.status().items() if k not in ("catalog", "bytes")} == {
            k: v for k, v in lite.status().items() if k not in ("catalog", "bytes")}
        for case in SEARCHES:
            dirs = [folder, folder / "sub"] if case.get("in_folder") else None
            want = lite.search(dirs, **case)
            got = idx.search(dirs, **case)
            assert got.groups == want.groups and got.result == want.result
            assert got.stats["process"]["build"]["invalid_files"] == \
                want.stats["process"]["build"]["invalid_files"]
        assert [m.matches for m in idx.query(folder / "o1.png", similarity="similar")] == \
            [m.matches for m in lite.query(folder / "o1.png", similarity="similar")] != [()]
        gone = os.fsencode(os.path.realpath(folder / "o2.png"))
        assert idx.forget([gone]) == 1
        assert idx.status()["files"] == 39


def _update(url: str, folder: str) -> int:
    with Index.open(url) as idx:
        return idx.update([folder], processes=1).files


def test_pg_concurrent_writers(pg_url: str, library) -> None:
    folder, _ref = library
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        counts = pool.starmap(_update, [(pg_url, str(folder)), (pg_url, str(folder / "sub"))])
    assert counts == [40, 16]
    with Index.open(pg_url) as idx:
        assert idx.status()["files"] == 40 and len(idx.roots()) == 2


def test_pg_cli_end_to_end(pg_url: str, library, tmp_path: Path) -> None:
    folder, ref = library
    up = cli("--catalog", pg_url, "update", str(folder), "--json")
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout)["files"] == 40
    got = cli("--catalog", pg_url, "search", "-s", "similar", "--format", "json")
    want = cli("--catalog", str(ref), "search", "-s", "similar", "--format", "json")
    assert got.returncode == want.returncode == 0, got.stderr
    assert json.loads(got.stdout)["result"] == json.loads(want.stdout)["result"] != {}
    st = cli("--catalog", pg_url, "status", "--json")
    assert json.loads(st.stdout)["schema"] == migrate.HEAD


def test_pg_search_on_executors(pg_url: str, library) -> None:
    """Band tasks on other threads and on a Dask cluster read their bands from PostgreSQL
    themselves (PgTensorLoader): the same groups as the local run."""
    from concurrent.futures import ThreadPoolExecutor

    folder, _ref = library
    with Index.open(pg_url) as idx:
        idx.update([folder], processes=1)
        want = idx.search(similarity="similar", same_dim=False)
        assert want.groups
        with ThreadPoolExecutor(2) as ex:
            got = idx.search(similarity="similar", same_dim=False, executor=ex, max_band_rows=6)
        assert got.groups == want.groups
        distributed = pytest.importorskip("distributed", reason="the cluster extra is not installed")
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                      dashboard_address=None) as cluster, \
                distributed.Client(cluster, set_as_default=False) as client:
            got = idx.search(similarity="similar", same_dim=False,
                             executor=client.get_executor(), max_band_rows=6)
        assert got.groups == want.groups


def test_pg_near_reads_stored_features(pg_url: str, library, tmp_path: Path) -> None:
    """``near`` on PostgreSQL reads the features ``update`` stored (near_blobs), and finds
    what the same search finds on a SQLite catalog of the same folder."""
    from difpy_index import near

    folder, _ref = library
    with Index.open(pg_url) as idx, Index.open(tmp_path / "lite.sqlite") as lite:
        idx.update([folder], processes=1)
        lite.update([folder], processes=1)
        meta = idx._catalog.search_meta(50, idx.search_recipe(50))
        blobs = idx._catalog.near_blobs(meta.ids, 50, idx.search_recipe(50))
        assert blobs and all(b is not None for b in blobs)
        tensors = idx._catalog.tensor_loader(50, idx.search_recipe(50))(meta.ids)
        lum, fine, extra = near.stored_features(blobs, tensors)
        assert np.array_equal(lum, near.lumas(tensors))
        assert np.array_equal(fine, near.fine_features(tensors))
        assert np.array_equal(extra, near.search_features(tensors))
        got, want = idx.search(similarity="near"), lite.search(similarity="near")
    assert got.groups == want.groups
