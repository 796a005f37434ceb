"""The CLI for update and status: JSON shapes, exit codes, one-line errors, no tracebacks."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Cli, write_image

UPDATE_KEYS = {"decoded", "reused", "removed", "invalid", "skipped", "files", "seconds"}
STATUS_KEYS = {"catalog", "schema", "roots", "files", "invalid", "px_sizes", "bytes"}


def one_line_error(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    for i in range(3):
        write_image(root / f"{i}.png", i)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (root / "readme.txt").write_text("skip me")
    return root


def test_update_json_shape_and_counts(cli: Cli, folder: Path) -> None:
    res = cli("update", folder, "--json", "--processes", "1")
    assert res.exit_code == 0, res.stderr
    rep = json.loads(res.stdout)
    assert UPDATE_KEYS <= rep.keys()
    assert (rep["decoded"], rep["files"], rep["invalid"], rep["skipped"], rep["reused"]) == (4, 3, 1, 1, 0)
    assert rep["decoded"] + rep["reused"] == rep["files"] + rep["invalid"]
    assert isinstance(rep["seconds"], float)
    again = json.loads(cli("update", folder, "--json").stdout)
    assert (again["decoded"], again["reused"], again["invalid"]) == (0, 4, 1)


def test_status_json_shape(cli: Cli, folder: Path, catalog_path: Path) -> None:
    cli("update", folder, "--json", "--px-size", "20")
    res = cli("status", "--json")
    assert res.exit_code == 0, res.stderr
    info = json.loads(res.stdout)
    assert STATUS_KEYS <= info.keys()
    assert info["catalog"] == str(catalog_path)
    assert info["roots"] == [os.path.realpath(folder)]
    assert (info["files"], info["invalid"], info["px_sizes"]) == (3, 1, [20])
    assert info["bytes"] > 0 and isinstance(info["schema"], str)


def test_status_human(cli: Cli, folder: Path) -> None:
    cli("update", folder)
    res = cli("status")
    assert res.exit_code == 0
    assert "3 images, 1 invalid" in res.stdout
    assert os.path.realpath(folder) in res.stdout


def test_update_human_summary_on_stderr(cli: Cli, folder: Path) -> None:
    res = cli("update", folder)
    assert res.exit_code == 0
    assert res.stdout == ""
    assert "3 images (4 decoded, 0 reused" in res.stderr


def test_missing_folder_exit_2(cli: Cli, tmp_path: Path) -> None:
    res = cli("update", tmp_path / "nope")
    assert res.exit_code == 2
    assert "does not exist" in one_line_error(res.stderr)


def test_file_instead_of_folder_exit_2(cli: Cli, folder: Path) -> None:
    res = cli("update", folder / "0.png")
    assert res.exit_code == 2
    assert "not a folder" in one_line_error(res.stderr)


@pytest.mark.parametrize("px", ["9", "5001", "-3", "abc"])
def test_bad_px_size_exit_2(cli: Cli, folder: Path, px: str) -> None:
    res = cli("update", folder, "--px-size", px)
    assert res.exit_code == 2
    assert "Traceback" not in res.stderr
    if px != "abc":  # typer's own usage error is a framed box; ours is one line
        assert "px" in one_line_error(res.stderr).lower()


def test_bad_processes_exit_2(cli: Cli, folder: Path) -> None:
    res = cli("update", folder, "--processes", "0")
    assert res.exit_code == 2
    one_line_error(res.stderr)


def test_missing_known_root_reported_not_purged(cli: Cli, folder: Path, tmp_path: Path) -> None:
    cli("update", folder)
    folder.rename(tmp_path / "moved-away")
    res = cli("update", folder, "--json")
    assert res.exit_code == 0
    rep = json.loads(res.stdout)
    assert rep["removed"] == 0
    assert rep["missing_roots"] == [os.path.realpath(folder)]
    assert "missing" in res.stderr


def test_update_without_args_is_usage_error(cli: Cli) -> None:
    assert cli("update").exit_code == 2


@pytest.mark.parametrize("kind", ["text", "sqlite"])
def test_non_catalog_file_exit_2_untouched(tmp_path: Path, folder: Path, kind: str) -> None:
    path = tmp_path / "thing"
    if kind == "text":
        path.write_text("my shopping list\n")
    else:
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE t(x)")
        conn.commit()
        conn.close()
    before = path.read_bytes()
    for args in (["status"], ["update", str(folder)]):
        res = Cli(path)(*args)
        assert res.exit_code == 2
        assert "not a difpy-index catalog" in one_line_error(res.stderr)
    assert path.read_bytes() == before


def test_newer_schema_exit_1_one_line(cli: Cli, catalog_path: Path, folder: Path) -> None:
    cli("update", folder)  # status never creates a catalog
    conn = sqlite3.connect(catalog_path)
    conn.execute("UPDATE alembic_version SET version_num='9999'")
    conn.commit()
    conn.close()
    res = cli("status")
    assert res.exit_code == 1
    assert "newer" in one_line_error(res.stderr)


def test_catalog_from_environment(tmp_path: Path, folder: Path) -> None:
    env_cat = tmp_path / "env.sqlite"
    env = {**os.environ, "DIFPY_INDEX_CATALOG": str(env_cat)}
    out = subprocess.run([sys.executable, "-m", "difpy_index", "update", str(folder), "--json",
                          "--processes", "1"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["files"] == 3
    assert env_cat.is_file()


def test_non_utf8_paths_in_json(cli: Cli, tmp_path: Path) -> None:
    root = os.fsencode(tmp_path / "nasty")
    write_image(os.path.join(root, b"caf\xe9.png"), 1)
    res = cli("update", os.fsdecode(root), "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["files"] == 1
    assert json.loads(cli("status", "--json").stdout)["files"] == 1
