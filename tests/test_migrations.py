"""The schema policy at open: create, back up then upgrade, refuse newer, never touch others."""

from __future__ import annotations

import hashlib
import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from difpy_index.errors import NotACatalogError, SchemaTooNewError
from difpy_index.index import Index
from difpy_index.store import migrate
from difpy_index.store.db import make_engine
from difpy_index.store.models import Base


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_migrations_and_models_agree(catalog_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    Index.open(catalog_path).close()
    engine = make_engine(catalog_path)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_alembic_check_passes_on_fresh_catalog(catalog_path: Path) -> None:
    from alembic import command

    Index.open(catalog_path).close()
    engine = make_engine(catalog_path)
    try:
        with engine.connect() as conn:
            command.check(migrate.alembic_config(conn))  # raises on any pending diff
    finally:
        engine.dispose()


def test_revisions_match_script_directory() -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrate.alembic_config())
    assert script.get_heads() == [migrate.HEAD]
    chain = [r.revision for r in script.walk_revisions()][::-1]  # oldest first
    assert tuple(chain) == migrate.REVISIONS


def test_empty_file_becomes_catalog(catalog_path: Path) -> None:
    catalog_path.touch()
    with Index.open(catalog_path) as idx:
        assert idx.status()["schema"] == migrate.HEAD
    assert migrate.inspect_file(catalog_path) == migrate.HEAD


def test_new_catalog_in_missing_folder(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "cat.sqlite"
    with Index.open(path) as idx:
        assert idx.status()["files"] == 0
    assert path.is_file()


def test_wal_mode_and_application_id(catalog_path: Path) -> None:
    Index.open(catalog_path).close()
    conn = sqlite3.connect(catalog_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA application_id").fetchone()[0] == 0x64696649
    finally:
        conn.close()


def test_newer_schema_is_refused_and_file_untouched(catalog_path: Path) -> None:
    Index.open(catalog_path).close()
    conn = sqlite3.connect(catalog_path)
    conn.execute("UPDATE alembic_version SET version_num='9999'")
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    before = digest(catalog_path)
    with pytest.raises(SchemaTooNewError, match="9999"):
        Index.open(catalog_path)
    assert digest(catalog_path) == before
    assert not list(catalog_path.parent.glob("*.bak-*"))  # refused before any backup/upgrade


@pytest.mark.parametrize(
    "content",
    [b"hello, I am a text file\n", b"SQLite format 3\x00" + b"\x00" * 200, bytes(range(256))],
    ids=["text", "corrupt-sqlite", "binary"],
)
def test_non_catalog_file_is_refused_untouched(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    with pytest.raises(NotACatalogError):
        Index.open(path)
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_other_sqlite_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE people(name TEXT)")
    conn.execute("INSERT INTO people VALUES ('ada')")
    conn.commit()
    conn.close()
    before = digest(path)
    with pytest.raises(NotACatalogError, match="another program"):
        Index.open(path)
    assert digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]


def test_directory_as_catalog_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotACatalogError):
        Index.open(tmp_path)


def test_check_revision_policy(catalog_path: Path) -> None:
    assert migrate.check_revision(catalog_path, None) is True
    assert migrate.check_revision(catalog_path, migrate.HEAD) is False
    for older in migrate.REVISIONS[:-1]:
        assert migrate.check_revision(catalog_path, older) is True
    with pytest.raises(SchemaTooNewError):
        migrate.check_revision(catalog_path, "zzzz")


def test_backup_is_a_consistent_copy(catalog_path: Path, tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "imgs" / "a.png", 1)
    with Index.open(catalog_path) as idx:
        idx.update([tmp_path / "imgs"], processes=1)
        # the row is still in the WAL (not checkpointed): backup() must include it anyway
        target = migrate.backup(catalog_path, migrate.HEAD)
    assert target.name.startswith(f"{catalog_path.name}.bak-{migrate.HEAD}-")
    conn = sqlite3.connect(target)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM files").fetchone()[0] == 1
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] == migrate.HEAD
    finally:
        conn.close()


def test_older_schema_is_backed_up_then_upgraded(
    catalog_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Simulate a newer difpy-index (one more revision) opening this HEAD catalog."""
    Index.open(catalog_path).close()
    newer = (*migrate.REVISIONS, "0999")
    monkeypatch.setattr(migrate, "REVISIONS", newer)
    monkeypatch.setattr(migrate, "HEAD", "0999")
    calls: list[str] = []

    def fake_upgrade(cfg: object, target: str) -> None:  # the script dir knows no 0999
        calls.append(target)
        conn = cfg.attributes["connection"]  # type: ignore[attr-defined]
        conn.exec_driver_sql("UPDATE alembic_version SET version_num='0999'")

    import alembic.command

    monkeypatch.setattr(alembic.command, "upgrade", fake_upgrade)
    Index.open(catalog_path).close()
    assert calls == ["head"]
    backups = list(catalog_path.parent.glob(f"{catalog_path.name}.bak-{newer[-2]}-*"))
    assert len(backups) == 1
    assert migrate.inspect_file(backups[0]) == newer[-2]
    assert migrate.inspect_file(catalog_path) == "0999"


def _open_and_count(path: str) -> int:
    with Index.open(path) as idx:
        return int(idx.status()["files"])


def test_two_processes_create_one_catalog_concurrently(catalog_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        results = pool.map(_open_and_count, [str(catalog_path)] * 2)
    assert results == [0, 0]
    assert migrate.inspect_file(catalog_path) == migrate.HEAD
    assert not list(catalog_path.parent.glob("*.bak-*"))


@pytest.mark.parametrize("journal", ["WAL", "DELETE"])
def test_foreign_sqlite_leaves_no_sidecar_files(tmp_path: Path, journal: str) -> None:
    """Refusing another program's database must not even create -wal/-shm files beside it."""
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA journal_mode={journal}")
    conn.execute("CREATE TABLE notes(body TEXT)")
    conn.commit()
    conn.close()
    before = digest(path)
    with pytest.raises(NotACatalogError):
        Index.open(path)
    assert digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]


def test_fresh_catalog_with_pending_wal_is_still_recognised(catalog_path: Path) -> None:
    """Our own catalog whose header change still sits in the WAL is not 'another program's'."""
    idx = Index.open(catalog_path)
    try:
        assert Path(f"{catalog_path}-wal").exists()
        assert migrate.inspect_file(catalog_path) == migrate.HEAD
        Index.open(catalog_path).close()
    finally:
        idx.close()


def test_schema_0004_fills_near_features_of_an_older_catalog(tmp_path: Path) -> None:
    """A catalog written at schema 0003 (real update, real files) gets every tensor's
    ``near`` features on upgrade, from its stored tensor (the migration reads no file:
    the images are emptied before it runs), and a search reads them."""
    import numpy as np
    from alembic import command

    from difpy_index import near

    path = tmp_path / "old.sqlite"
    engine = make_engine(path)
    with engine.begin() as conn:
        command.upgrade(migrate.alembic_config(conn), "0003")  # type: ignore[arg-type]
    engine.dispose()
    from PIL import Image

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for p in range(3):  # three pictures, each with a mirrored, darker copy
        rng = np.random.default_rng(p)
        base = np.kron(rng.uniform(0, 255, (8, 8, 3)), np.ones((12, 12, 1)))
        base = np.clip(base + rng.normal(0, 12, base.shape), 0, 255)
        Image.fromarray(base.astype(np.uint8)).save(imgs / f"{2 * p}.png")
        Image.fromarray((base[:, ::-1] * 0.8).astype(np.uint8)).save(imgs / f"{2 * p + 1}.png")
    conn = sqlite3.connect(path)
    # what difpy-index at 0003 wrote: files and tensors (these columns only)
    conn.execute("INSERT INTO roots(id, path, added_ns) VALUES (1, ?, 0)", (str(imgs).encode(),))
    from difpy_index.decode import decode_file, recipe

    for i in range(6):
        d = decode_file(str(imgs / f"{i}.png").encode(), (50, 32))
        conn.execute(
            "INSERT INTO files(id, root_id, path, size, mtime_ns, inode, ctime_ns, status, width,"
            " height, updated_ns) VALUES (?, 1, ?, ?, ?, ?, ?, 'ok', ?, ?, 0)",
            (i + 1, d.path, d.size, d.mtime_ns, d.inode, d.ctime_ns, d.width, d.height))
        for px, blob in d.tensors.items():
            conn.execute("INSERT INTO tensors(file_id, px_size, recipe, data, pixel_sum) "
                         "VALUES (?, ?, ?, ?, 0)", (i + 1, px, recipe(), blob))
    conn.commit()
    conn.close()
    saved = {p: p.read_bytes() for p in imgs.iterdir()}
    for p in saved:
        p.write_bytes(b"")
    assert migrate.inspect_file(path) == "0003"
    with Index.open(path) as idx:
        assert idx.status()["schema"] == migrate.HEAD
    for p, data in saved.items():
        p.write_bytes(data)
    with Index.open(path) as idx:
        result = idx.search(similarity="near")
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT px_size, data, near, near_version FROM tensors").fetchall()
    conn.close()
    assert len(rows) == 12
    for px, data, blob, version in rows:
        t = np.frombuffer(data, np.uint8).reshape(1, px, px, 3)
        assert version == near.NEAR_VERSION
        assert blob == near.blob_of(t[0])
    # the three pictures with their mirrored copies, by the correlation rule
    assert len(result.groups) == 3
    assert all(m.measure == "correlation" and m.mirror for g in result.groups for m in g.members)


def upgrade_without_files(path: Path, imgs: Path) -> int:
    """Open (so upgrade) the catalog at ``path`` with every image of ``imgs`` emptied, so
    that nothing can be decoded again, then check that every tensor row holds the current
    ``near`` blob made from its stored tensor alone. Returns the number of rows."""
    import numpy as np

    from difpy_index import near

    saved = {p: p.read_bytes() for p in imgs.iterdir()}
    for p in saved:
        p.write_bytes(b"")
    with Index.open(path) as idx:
        assert idx.status()["schema"] == migrate.HEAD
    for p, data in saved.items():
        p.write_bytes(data)
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT px_size, data, near, near_version FROM tensors").fetchall()
    conn.close()
    for px, data, blob, version in rows:
        t = np.frombuffer(data, np.uint8).reshape(1, px, px, 3)
        assert version == near.NEAR_VERSION == "near-4"
        assert blob == near.blob_of(t[0])
        assert np.array_equal(near.unpack([blob], px)[2], near.search_features(t))
    return len(rows)


def test_schema_0006_refills_near_features_with_the_fine_rules(tmp_path: Path) -> None:
    """A catalog whose ``near`` blobs are of the earlier layout (``lumas`` only, near-2) at
    schema 0004 gets every row refilled on upgrade, from its stored tensor (no file is read:
    the images are emptied first), and a search of the upgraded catalog finds the tone edit
    that only the fine rule matches."""
    import imagefactory
    import numpy as np
    from alembic import command
    from PIL import Image

    from difpy_index import near

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for name, arr in zip(("pic", "grey"), imagefactory.sky_and_grey_copy(), strict=True):
        Image.fromarray(arr).save(imgs / f"{name}.png")
    path = tmp_path / "cat.sqlite"
    with Index.open(path) as idx:
        idx.update([imgs], processes=1)
    engine = make_engine(path)
    with engine.begin() as conn:
        command.downgrade(migrate.alembic_config(conn), "0004")  # type: ignore[arg-type]
    engine.dispose()
    conn = sqlite3.connect(path)
    for fid, data in conn.execute("SELECT file_id, data FROM tensors").fetchall():
        t = np.frombuffer(data, np.uint8).reshape(1, 50, 50, 3)
        old = np.ascontiguousarray(near.lumas(t)[0], dtype="<f4").tobytes()
        conn.execute("UPDATE tensors SET near = ?, near_version = 'near-2' WHERE file_id = ?",
                     (old, fid))
    conn.commit()
    conn.close()
    assert migrate.inspect_file(path) == "0004"
    assert upgrade_without_files(path, imgs) == 2
    with Index.open(path) as idx:
        result = idx.search(similarity="near")
    assert [(g.key.endswith("pic.png"), [m.measure for m in g.members]) for g in result.groups] \
        == [(True, ["fine"])]


def test_schema_0007_stores_what_a_near_search_computed(tmp_path: Path) -> None:
    """A catalog at schema 0006 (``near`` blobs of near-3: ``lumas`` and ``fine_features``
    only) gets every row refilled on upgrade from its stored tensor (the images are emptied
    first, so nothing is decoded) with ``search_features`` appended, and a search of the
    upgraded catalog reads them and finds the mirrored copies it found before."""
    import numpy as np
    from alembic import command
    from PIL import Image

    from difpy_index import near

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(3)
    for p in range(3):
        base = np.kron(rng.uniform(0, 200, (8, 8, 3)), np.ones((12, 12, 1)))
        base = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(base).save(imgs / f"{p}a.png")
        Image.fromarray(base[:, ::-1]).save(imgs / f"{p}b.png")
    path = tmp_path / "cat.sqlite"
    with Index.open(path) as idx:
        idx.update([imgs], processes=1)
        before = idx.search(similarity="near").groups
    engine = make_engine(path)
    with engine.begin() as conn:
        command.downgrade(migrate.alembic_config(conn), "0006")  # type: ignore[arg-type]
    engine.dispose()
    conn = sqlite3.connect(path)
    for fid, data in conn.execute("SELECT file_id, data FROM tensors").fetchall():
        t = np.frombuffer(data, np.uint8).reshape(1, 50, 50, 3)
        old = (np.ascontiguousarray(near.lumas(t)[0], dtype="<f4").tobytes()
               + np.ascontiguousarray(near.fine_features(t)[0], dtype="<f4").tobytes())
        conn.execute("UPDATE tensors SET near = ?, near_version = 'near-3' WHERE file_id = ?",
                     (old, fid))
    conn.commit()
    conn.close()
    assert migrate.inspect_file(path) == "0006"
    assert migrate.HEAD == "0007"
    assert upgrade_without_files(path, imgs) == 6
    with Index.open(path) as idx:
        after = idx.search(similarity="near").groups
    assert after == before and len(after) == 3
