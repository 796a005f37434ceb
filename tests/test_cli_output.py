"""What `search` shows a person: the groups on stdout (text), --format json|csv (--json an
alias), difPy's three files only with -Z (never overwriting), and a dry run that lists every
file and its fate."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import imagefactory as imf
import pytest
from conftest import disk_files

T0 = 1_600_000_000 * 10**9


def real(p: Path | str) -> str:
    return os.path.realpath(p)


@pytest.fixture
def photos(tmp_path: Path, cli) -> dict[str, Path]:
    """roll/a.jpg with a later copy and a PNG conversion; roll/b.jpg with a rotated copy;
    an unrelated c.jpg; and a name holding a newline."""
    root = tmp_path / "photos"
    (root / "roll").mkdir(parents=True)
    (root / "copies").mkdir()
    f = {"root": root}
    a, b = imf.synthetic(11, 64, 48), imf.synthetic(12, 64, 48)
    f["a"] = Path(imf.save(a, root / "roll" / "a.jpg", quality=90))
    f["b"] = Path(imf.save(b, root / "roll" / "b.png"))
    f["c"] = Path(imf.save(imf.synthetic(13, 64, 48), root / "roll" / "c.png"))
    f["a_copy"] = Path(imf.save(imf.Image.open(f["a"]), root / "copies" / "a.png"))
    f["b_rot"] = Path(imf.save(imf.rotated(b, 90), root / "copies" / "b\nrot.png"))
    for i, p in enumerate(v for k, v in f.items() if k != "root"):
        os.utime(p, ns=(T0 + i * 10**9,) * 2)
    res = cli("update", root)
    assert res.exit_code == 0, res.stderr
    return f


def test_default_text_shows_groups_key_first(cli, photos, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = cli("search", photos["root"])
    assert res.exit_code == 0, res.stderr
    lines = res.stdout.splitlines()
    keep = [ln for ln in lines if ln.startswith("keep ")]
    members = [ln for ln in lines if ln.startswith("  -  ")]
    assert len(keep) == 2 and len(members) == 2
    a_key = next(i for i, ln in enumerate(lines) if ln.endswith(real(photos["a"])))
    assert lines[a_key].startswith("keep ") and "64x48" in lines[a_key]
    assert lines[a_key + 1].endswith(real(photos["a_copy"]))
    assert "mse 0 " in lines[a_key + 1] and "rot   0" in lines[a_key + 1]
    assert f"{os.path.getsize(photos['a_copy']) / 1000:.1f} kB" in lines[a_key + 1]
    rot = next(ln for ln in members if "rot.png" in ln)
    assert "\\n" in rot and "48x64" in rot and ("rot  90" in rot or "rot 270" in rot)
    assert "3 groups" not in res.stdout and "2 groups, 2 lower-quality files" in res.stdout
    assert "keep: pixels,format,oldest,shallow,path" in res.stdout
    # no difPy files unless -Z
    assert not list(tmp_path.glob("difPy_*"))
    quiet = cli("-q", "search", photos["root"])
    assert quiet.stdout.splitlines() == lines[: len(quiet.stdout.splitlines())]
    assert "groups," not in quiet.stdout


def test_json_alias_and_csv(cli, photos):
    j1 = cli("search", photos["root"], "--json")
    j2 = cli("search", photos["root"], "--format", "json")
    assert j1.exit_code == j2.exit_code == 0
    o1, o2 = json.loads(j1.stdout), json.loads(j2.stdout)
    assert set(o1) >= {"result", "lower_quality", "stats"}
    assert o1["result"] == o2["result"] and o1["lower_quality"] == o2["lower_quality"]
    res = cli("search", photos["root"], "--format", "csv")
    assert res.exit_code == 0, res.stderr
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert len(rows) == len(o1["lower_quality"]) == 2
    by_path = {r["path"]: r for r in rows}
    a = by_path[real(photos["a_copy"])]
    assert a["key"] == real(photos["a"]) and float(a["mse"]) == 0 and a["rotation"] == "0"
    assert (a["width"], a["height"], a["size"]) == ("64", "48", str(os.path.getsize(photos["a_copy"])))
    assert a["key_size"] == str(os.path.getsize(photos["a"]))
    assert "groups," in res.stderr  # the summary stays off stdout
    bad = cli("search", photos["root"], "--json", "--format", "csv")
    assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_output_dir_writes_three_files_that_never_overwrite(cli, photos, tmp_path):
    out = tmp_path / "out"
    for _ in range(2):  # twice in the same second: two sets, nothing overwritten
        res = cli("search", photos["root"], "-Z", out)
        assert res.exit_code == 0, res.stderr
    files = sorted(p.name for p in out.iterdir())
    assert len(files) == 6
    results = [p for p in out.iterdir() if p.name.endswith("_results.json")]
    assert all(json.loads(p.read_text()) == json.loads(results[0].read_text()) for p in results)
    assert real(photos["a"]) in json.loads(results[0].read_text())


def test_dry_run_lists_every_file_and_its_fate(cli, photos, tmp_path):
    before = disk_files(photos["root"])
    res = cli("search", photos["root"], "--move-to", tmp_path / "dups", "--dry-run")
    assert res.exit_code == 0, res.stderr
    moves = [ln for ln in res.stdout.splitlines() if ln.startswith("would move")]
    assert len(moves) == 2
    line = next(ln for ln in moves if real(photos["a_copy"]) in ln)
    assert line.endswith(real(tmp_path / "dups" / "photos" / "copies" / "a.png"))
    res = cli("search", photos["root"], "--delete", "--dry-run")
    dels = [ln for ln in res.stdout.splitlines() if ln.startswith("would delete")]
    assert sorted(ln.split("  ", 1)[1] for ln in dels) == sorted(
        [real(photos["a_copy"]), real(photos["b_rot"]).replace("\n", "\\n")])
    assert disk_files(photos["root"]) == before and not (tmp_path / "dups").exists()
    res = cli("search", photos["root"], "--dry-run")
    assert res.exit_code == 2 and "--dry-run needs" in res.stderr


def test_in_folder_text_names_each_folder(cli, photos):
    res = cli("search", photos["root"] / "roll", photos["root"] / "copies", "--in-folder")
    assert res.exit_code == 0, res.stderr
    assert "0 groups" in res.stdout
    res = cli("search", photos["root"], "--in-folder")
    assert f"in {real(photos['root'])}:" in res.stdout
