"""Answers are never stale: `search DIR` and `query` bring what they read up to date first
(unless --no-update), an unreachable root's files are left out with one warning, `update`
without DIR refreshes every root, `forget` drops a root, and `update -v/--json` name the
invalid and skipped files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import imagefactory as imf
import pytest
from conftest import catalog_rows


def real(p: Path | str) -> str:
    return os.path.realpath(p)


@pytest.fixture
def two_roots(tmp_path: Path, cli) -> dict[str, Path]:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    imf.synthetic(1, 40, 30).save(a / "x.png")
    imf.synthetic(1, 40, 30).save(a / "x_copy.png")
    imf.synthetic(2, 40, 30).save(b / "y.png")
    imf.synthetic(2, 40, 30).save(b / "y_copy.png")
    (a / "notes.txt").write_text("not an image")
    (a / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    for root in (a, b):
        res = cli("update", root)
        assert res.exit_code == 0, res.stderr
    return {"a": a, "b": b}


def _lower(res) -> list[str]:
    assert res.exit_code == 0, res.stderr
    return json.loads(res.stdout)["lower_quality"]


def test_search_sees_new_and_deleted_files_unless_no_update(cli, two_roots):
    a = two_roots["a"]
    imf.synthetic(1, 40, 30).save(a / "x_new.png")  # a new copy, not indexed yet
    os.unlink(a / "x_copy.png")  # a deleted copy, still in the catalog
    stale = _lower(cli("search", a, "--json", "--no-update"))
    assert stale == [real(a / "x_copy.png")]
    fresh = _lower(cli("search", a, "--json"))
    assert fresh == [real(a / "x_new.png")]
    rows = {os.fsdecode(p) for p in catalog_rows(cli.catalog)}
    assert real(a / "x_new.png") in rows and real(a / "x_copy.png") not in rows
    # query too
    probe = a.parent / "probe.png"
    imf.synthetic(2, 40, 30).save(probe)
    os.unlink(two_roots["b"] / "y_copy.png")
    q = cli("query", probe, "--json")
    assert q.exit_code == 0, q.stderr
    assert [m[0] for m in json.loads(q.stdout)["queries"][0]["matches"]] == [real(two_roots["b"] / "y.png")]


def test_unreachable_root_is_left_out_with_one_warning(cli, two_roots, tmp_path):
    b = two_roots["b"]
    shutil.rmtree(b)
    b.mkdir()  # an empty mount point: the drive is unmounted
    for args in (("search", "--json"), ("search", "--json", "--no-update")):
        res = cli(*args)
        assert res.exit_code == 0, res.stderr
        out = json.loads(res.stdout)
        assert not any(p.startswith(real(b) + "/") for p in out["lower_quality"] + list(out["result"]))
        assert out["lower_quality"] == [real(two_roots["a"] / "x_copy.png")]
        assert res.stderr.count(real(b)) == 1, res.stderr
        assert out["stats"]["process"]["search"]["unreachable_roots"] == [real(b)]
    # the rows are kept for when the drive comes back
    assert any(os.fsdecode(p).startswith(real(b) + "/") for p in catalog_rows(cli.catalog))
    res = cli("update", b)
    assert res.exit_code == 0 and res.stderr.count("missing or empty") == 1, res.stderr


def test_update_without_dir_refreshes_every_root_and_forget(cli, two_roots, tmp_path):
    imf.synthetic(3, 40, 30).save(two_roots["a"] / "z.png")
    imf.synthetic(4, 40, 30).save(two_roots["b"] / "w.png")
    res = cli("update", "--json")
    assert res.exit_code == 0, res.stderr
    rep = json.loads(res.stdout)
    assert rep["decoded"] == 2 and sorted(rep["roots"]) == sorted(real(r) for r in two_roots.values())
    res = cli("forget", two_roots["b"])
    assert res.exit_code == 0, res.stderr
    status = json.loads(cli("status", "--json").stdout)
    assert status["roots"] == [real(two_roots["a"])]
    assert not any(os.fsdecode(p).startswith(real(two_roots["b"]) + "/") for p in catalog_rows(cli.catalog))
    assert two_roots["b"].exists() and len(list(two_roots["b"].iterdir())) == 3  # files untouched
    bad = cli("forget", two_roots["b"])
    assert bad.exit_code == 2 and "not an indexed root" in bad.stderr
    empty = tmp_path / "empty.sqlite"
    cli.catalog = empty
    assert cli("update", two_roots["a"]).exit_code == 0
    cli("forget", two_roots["a"])
    res = cli("update")
    assert res.exit_code == 2 and "update DIR" in res.stderr


def test_update_names_invalid_and_skipped_files(cli, two_roots):
    a = two_roots["a"]
    res = cli("update", a, "--json")
    rep = json.loads(res.stdout)
    assert [f["path"] for f in rep["invalid_files"]] == [real(a / "broken.png")]
    assert rep["invalid_files"][0]["reason"]
    assert [f["path"] for f in rep["skipped_files"]] == [real(a / "notes.txt")]
    assert ".txt" in rep["skipped_files"][0]["reason"]
    res = cli("-v", "update", a)
    assert f"invalid: {real(a / 'broken.png')}: " in res.stderr
    assert f"skipped: {real(a / 'notes.txt')}: " in res.stderr
    quiet = cli("update", a)
    assert "invalid:" not in quiet.stderr and "skipped:" not in quiet.stderr


def test_is_current_sees_every_change_and_costs_no_write(cli, two_roots, tmp_path):
    from difpy_index import Index

    a = two_roots["a"]
    with Index.open(cli.catalog) as idx:
        roots = idx.owning_roots([a])
        assert idx.is_current(roots)
        (a / ".hidden.png").write_bytes((a / "x.png").read_bytes())  # out of scope
        (a / "more.txt").write_text("not an image")
        assert idx.is_current(roots)
        assert not idx.is_current(roots, px_size=32)  # no tensors of that size yet
        for change in ("new", "touched", "gone"):
            if change == "new":
                imf.synthetic(9, 40, 30).save(a / "new.png")
            elif change == "touched":
                os.utime(a / "x.png", ns=(1, 1))
            else:
                os.unlink(a / "x_copy.png")
            assert not idx.is_current(roots), change
            assert idx.refresh([a]) is not None
            assert idx.is_current(roots) and idx.refresh([a]) is None, change
    # an unchanged search never imports SQLAlchemy (the refresh is a stat walk and a read)
    code = ("import sys; from difpy_index.cli import app\n"
            "try:\n    app(sys.argv[1:])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "assert 'sqlalchemy' not in sys.modules, 'sqlalchemy imported'\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    res = subprocess.run([sys.executable, "-c", code, "--catalog", str(cli.catalog), "search", str(a),
                          "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["lower_quality"] == []  # x_copy.png was deleted above
