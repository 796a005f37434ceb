"""The review page as a person decides from it: "keep this one instead" (recorded in the
plan, honoured by apply after verification), pictures that open the file, labelled
difference maps, upright EXIF thumbnails; and apply reading old plans."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import imagefactory as F
import pytest
from PIL import Image
from test_report import CHROMIUM, _chromium, parse

from difpy_index import Index
from difpy_index.report import make_thumb, write_report

T0 = 1_600_000_000 * 10**9


@pytest.fixture
def story(tmp_path: Path, catalog_path: Path):
    """One group: an original, its byte copy (later) and a JPEG re-save (later still)."""
    root = tmp_path / "pics"
    (root / "roll").mkdir(parents=True)
    (root / "backup").mkdir()
    img = F.synthetic(7, 120, 90)
    orig = Path(F.save(img, root / "roll" / "a.png"))
    copy = Path(F.save(img, root / "backup" / "a.png"))
    resave = Path(F.save(img, root / "backup" / "a.jpg", quality=95))
    for i, p in enumerate((orig, copy, resave)):
        os.utime(p, ns=(T0 + i * 10**9,) * 2)
    idx = Index.open(catalog_path)
    idx.update([root], processes=1)
    found = idx.search([root], similarity=50, keep="pixels,oldest")
    assert [g.key for g in found.groups] == [os.path.realpath(orig)]
    yield {"root": root, "orig": orig, "copy": copy, "resave": resave, "idx": idx, "found": found}
    idx.close()


def real(p: Path) -> str:
    return os.path.realpath(p)


def test_page_labels_identical_and_difference_maps(story, tmp_path):
    out = tmp_path / "r.html"
    write_report(story["found"], out, processes=1)
    page = parse(out.read_text(encoding="utf-8"))
    assert len(page.sames) == 1 and "identical" in page.sames[0]["aria-label"]
    assert len(page.heats) == 1  # the JPEG re-save differs a little
    text = out.read_text(encoding="utf-8")
    assert "Difference maps:" in text and "pale yellow where it differs more" in text
    assert "keep this one instead" in text and "pixels,oldest,path" in text


def test_thumbnail_is_upright_for_exif_orientation(tmp_path):
    path = F.write_exif_rotated_jpeg(tmp_path / "exif.jpg")  # stored 48x24, orientation 6
    with Image.open(path) as im:
        assert im.size == (48, 24) and im.getexif().get(0x0112) == 6
    t = make_thumb(os.fsencode(path))
    with Image.open(io.BytesIO(t.data or b"")) as thumb:
        assert thumb.size == (24, 48)  # shown turned, as a photo viewer does
    assert (t.width, t.height) == (48, 24)  # the facts stay the file's own


def _plan(found, tmp_path, keep_instead: str | None = None):
    """The plan the page would download, with 'keep this one instead' applied to the
    first group the way the page's script does."""
    out = tmp_path / "r.html"
    write_report(found, out, processes=1)
    plan = json.loads(parse(out.read_text(encoding="utf-8")).textarea)
    if keep_instead is not None:
        key = found.groups[0].key
        files = [key, *(m.path for m in found.groups[0].members)]
        plan["keep"] = [keep_instead]
        plan["actions"] = [{"path": f, "key": keep_instead} for f in files if f != keep_instead]
    return plan


def test_apply_honours_keep_this_one_instead(story, tmp_path, cli):
    found = story["found"]
    plan = _plan(found, tmp_path, keep_instead=real(story["copy"]))
    # a hand-edited plan that also lists the kept file is refused for that file
    plan["actions"].append({"path": real(story["copy"]), "key": real(story["orig"])})
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan), encoding="utf-8")
    res = cli("apply", path, "--move-to", tmp_path / "dups", "--json", "-s", "50")  # not a preset: repeated
    assert res.exit_code == 0, res.stderr
    acts = json.loads(res.stdout)["actions"]
    moved = sorted(src for src, _ in acts["moved"])
    assert moved == sorted([real(story["orig"]), real(story["resave"])])
    assert story["copy"].exists() and not story["orig"].exists()
    assert {"path": real(story["copy"]), "reason": "the reviewer chose to keep it"} in acts["skipped"]


def test_apply_never_touches_reference_files_and_reads_old_plans(story, tmp_path, cli):
    idx = story["idx"]
    ref = story["root"] / "backup"
    found = idx.search([story["root"] / "roll"], similarity=50, reference=[ref], keep="pixels,oldest")
    assert {g.key for g in found.groups} == {real(story["copy"])}
    plan = _plan(found, tmp_path)
    assert plan["reference"] == [real(ref)] and plan["keep"] == []
    # a hand-edited plan that asks to delete a reference file: refused for that file
    plan["actions"].append({"path": real(story["resave"]), "key": real(story["copy"])})
    old = {k: v for k, v in plan.items() if k not in ("reference", "keep")}  # a plan from before
    for p, body in (("new.json", plan), ("old.json", old)):
        (tmp_path / p).write_text(json.dumps(body), encoding="utf-8")
    res = cli("apply", tmp_path / "new.json", "--delete", "--yes", "--dry-run", "--json", "-s", "50")
    assert res.exit_code == 0, res.stderr
    acts = json.loads(res.stdout)["actions"]
    assert acts["deleted"] == [real(story["orig"])]
    assert any(s["path"] == real(story["resave"]) and "reference" in s["reason"] for s in acts["skipped"])
    res = cli("apply", tmp_path / "old.json", "--delete", "--yes", "--dry-run", "--json", "-s", "50")
    assert res.exit_code == 0, res.stderr  # an old plan (no reference, no keep) still loads
    assert sorted(json.loads(res.stdout)["actions"]["deleted"]) == sorted(
        [real(story["orig"]), real(story["resave"])])


@pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason="headless Chromium not installed "
                    "(/usr/bin/chromium; apt-get install -y chromium)")
def test_chromium_keep_this_one_instead_changes_the_plan(story, tmp_path):
    out = tmp_path / "r.html"
    write_report(story["found"], out, processes=1)
    page = parse(out.read_text(encoding="utf-8"))
    radio = next(r for r in page.radios.values() if r.get("id") == "k1_1")
    data = json.loads(page.plan_data)
    chosen = data["candidates"][int(radio["data-i"] or 0)][0]
    res = _chromium(["--dump-dom", out.as_uri() + "#keep=k1_1"], tmp_path)
    plan = json.loads(parse(res.stdout).textarea)
    assert plan["keep"] == [chosen]
    key = story["found"].groups[0].key
    others = {key, *(m.path for m in story["found"].groups[0].members)} - {chosen}
    assert sorted(a["path"] for a in plan["actions"]) == sorted(others)
    assert {a["key"] for a in plan["actions"]} == {chosen}
