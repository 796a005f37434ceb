"""Shared fixtures: a real catalog file in tmp_path, deterministic images, the real CLI."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

PathLike = str | bytes | os.PathLike[str]


def image_array(seed: int, size: tuple[int, int] = (32, 24)) -> np.ndarray:
    """uint8 (h, w, 3) noise from ``seed``: unrelated seeds are never near-duplicates."""
    w, h = size
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_image(
    path: PathLike,
    seed: int = 0,
    size: tuple[int, int] = (32, 24),
    mode: str = "RGB",
    fmt: str | None = None,
) -> Path | bytes:
    """Write a deterministic image; ``path`` may be bytes (non-UTF-8 names). Returns path."""
    img = Image.fromarray(image_array(seed, size), "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    if fmt is None:
        name = os.fsdecode(os.path.basename(os.fspath(path)))
        fmt = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "gif": "GIF", "webp": "WEBP",
               "bmp": "BMP", "tif": "TIFF", "tiff": "TIFF"}.get(name.rsplit(".", 1)[-1].lower(), "PNG")
    parent = os.path.dirname(os.fspath(path))
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(os.fspath(path), "wb") as fh:  # open() takes bytes paths; Pillow's save may not
        img.save(fh, fmt)
    return path if isinstance(path, bytes) else Path(path)


@pytest.fixture
def catalog_path(tmp_path: Path) -> Path:
    return tmp_path / "catalog.sqlite"


@pytest.fixture
def pg_url():
    """A fresh, empty database on the PostgreSQL test server, dropped afterwards.

    The server: ``DIFPY_INDEX_TEST_PG_URL`` (``.ci/run`` starts a throw-away cluster and
    sets it), e.g. ``postgresql+psycopg://difpy@127.0.0.1:55433/postgres``."""
    import uuid

    base = os.environ.get("DIFPY_INDEX_TEST_PG_URL")
    if not base:
        pytest.skip("no PostgreSQL server: set DIFPY_INDEX_TEST_PG_URL (.ci/run starts one)")
    psycopg = pytest.importorskip("psycopg", reason="the cluster extra is not installed")
    admin = "postgresql://" + base.split("://", 1)[1]
    name = f"difpy_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield base.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The catalog suite's tests that go through ``Index`` run on both backends."""
    if request.param == "sqlite":
        return str(tmp_path / "catalog.sqlite")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def make_image() -> Callable[..., Path | bytes]:
    """``make_image(path, seed, size=(w, h), mode="RGB", fmt=None)`` writes a real image."""
    return write_image


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


class Cli:
    """Runs ``difpy_index.cli.app`` in-process with ``--catalog`` set; stdout/stderr apart."""

    def __init__(self, catalog: Path) -> None:
        self.catalog = catalog

    def __call__(self, *args: str | os.PathLike[str], catalog: bool = True) -> CliResult:
        from difpy_index.cli import app

        runner = CliRunner()  # typer's runner keeps stdout and stderr apart
        argv = (["--catalog", str(self.catalog)] if catalog else []) + [os.fspath(a) for a in args]
        res = runner.invoke(app, argv, catch_exceptions=True)
        stderr = res.stderr
        if res.exception is not None and not isinstance(res.exception, SystemExit):
            raise AssertionError(f"CLI raised {res.exception!r}\n{stderr}") from res.exception
        return CliResult(res.exit_code, res.stdout, stderr)


@pytest.fixture
def cli(catalog_path: Path) -> Cli:
    return Cli(catalog_path)


def catalog_rows(catalog: Path) -> dict[bytes, tuple[int, int, str]]:
    """{path: (size, mtime_ns, status)} straight from the SQLite file (read-only)."""
    conn = sqlite3.connect(Path(catalog).resolve().as_uri() + "?mode=ro", uri=True)
    try:
        return {bytes(r[0]): (r[1], r[2], r[3]) for r in
                conn.execute("SELECT path, size, mtime_ns, status FROM files")}
    finally:
        conn.close()


def disk_files(root: PathLike, suffixes: Sequence[str] = (".png", ".jpg")) -> dict[bytes, tuple[int, int]]:
    """{real path: (size, mtime_ns)} of the non-hidden image files under ``root``."""
    out: dict[bytes, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
        dirnames[:] = [d for d in dirnames if not d.startswith(b".")]
        for f in filenames:
            if f.startswith(b".") or not f.lower().endswith(tuple(s.encode() for s in suffixes)):
                continue
            p = os.path.realpath(os.path.join(dirpath, f))
            st = os.stat(p)
            out[p] = (st.st_size, st.st_mtime_ns)
    return out
