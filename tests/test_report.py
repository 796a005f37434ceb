"""The HTML review page (``search --report``) and ``apply PLAN.json``.

A real corpus (exact copies, JPEG re-encodes, lossless rotations) is indexed into a real
catalog, searched, and rendered; the page is parsed with ``html.parser`` and, where
Debian's ``chromium`` is installed, opened headless to take a screenshot and to check
that unticking a file changes the plan the page would download.
"""

from __future__ import annotations

import json
import os
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import imagefactory as F
import numpy as np
import pytest
from conftest import Cli
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from difpy_index import Index
from difpy_index.report import _CMAP, heat_map, write_report
from difpy_index.results import SearchResult

CHROMIUM = "/usr/bin/chromium"
GROUPS = 6


# ----------------------------------------------------------------------------- corpus
def make_corpus(root: Path, groups: int = GROUPS) -> dict[str, set[str]]:
    """Per group: a PNG key, an exact copy, a JPEG re-encode and a rotated copy (real paths)."""
    expected: dict[str, set[str]] = {}
    for i in range(groups):
        img = F.synthetic(100 + i, 120, 90)
        (root / "a").mkdir(parents=True, exist_ok=True)
        (root / "b").mkdir(parents=True, exist_ok=True)
        key = F.save(img, root / "a" / f"k{i}.png")
        copy = F.save(img, root / "b" / f"copy{i}.png")
        jpg = F.save(img, root / "b" / f"jpeg{i}.jpg", quality=95)
        rot = F.save(F.rotated(img, 90), root / "b" / f"rot{i}.png")
        expected[os.path.realpath(key)] = {os.path.realpath(p) for p in (copy, jpg, rot)}
    F.write_synthetic(root / "a" / "alone.png", 999, 120, 90)  # matches nothing
    return expected


def search(idx: Index, root: Path, expected: dict[str, set[str]], threshold: float = 50.0) -> SearchResult:
    """``Index.search`` over the corpus; its groups must be the ones the corpus planted
    (which file of a group is its key is the keep rule's business, not this corpus')."""
    found = idx.search([str(root)], similarity=threshold, rotate=True)
    got = sorted(sorted({g.key, *(m.path for m in g.members)}) for g in found.groups)
    assert got == sorted(sorted({k, *ms}) for k, ms in expected.items())
    return found


@pytest.fixture
def corpus(tmp_path: Path, catalog_path: Path) -> tuple[Path, Index, SearchResult]:
    root = tmp_path / "pics"
    expected = make_corpus(root)
    idx = Index.open(catalog_path)
    idx.update([str(root)], processes=1)
    found = search(idx, root, expected)
    assert len(found.groups) == GROUPS
    yield root, idx, found
    idx.close()


# ----------------------------------------------------------------------------- parsing
class Page(HTMLParser):
    """What the tests need from the page: groups, images, checkboxes, scripts, URLs."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.groups: list[str] = []
        self.pages: list[str] = []
        self.thumbs: list[dict[str, str]] = []
        self.placeholders: list[dict[str, str]] = []
        self.heats: list[str] = []
        self.sames: list[dict[str, str]] = []  # "identical" labels instead of a heat map
        self.order: list[str] = []  # ids of toolbar buttons and groups, in document order
        self.radios: dict[str, dict[str, str | None]] = {}
        self.boxes: dict[str, dict[str, str | None]] = {}
        self.urls: list[str] = []
        self.titles: list[str] = []
        self.external_tags: list[str] = []
        self._in: str | None = None
        self.plan_data = ""
        self.textarea = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        cls = (a.get("class") or "").split()
        for name in ("src", "href", "action", "poster"):
            if a.get(name):
                self.urls.append(a[name] or "")
        if tag in ("link", "iframe", "object", "embed") or (tag == "script" and a.get("src")):
            self.external_tags.append(tag)
        if a.get("title"):
            self.titles.append(a["title"] or "")
        if tag == "section" and "group" in cls:
            self.groups.append(a.get("id") or "")
        if tag == "section" and "page" in cls:
            self.pages.append(a.get("id") or "")
        if tag == "img" and "thumb" in cls:
            self.thumbs.append({k: v or "" for k, v in a.items()})
        if tag == "img" and "heat" in cls:
            self.heats.append(a.get("src") or "")
        if tag == "div" and "heat" in cls and "same" in cls:
            self.sames.append({k: v or "" for k, v in a.items()})
        if a.get("id") in ("download", "tick-all", "untick-all") or (tag == "section" and "group" in cls):
            self.order.append(a.get("id") or "")
        if tag == "input" and a.get("type") == "radio":
            self.radios[a.get("id") or ""] = a
        if tag == "div" and "thumb" in cls and "ph" in cls:
            self.placeholders.append({k: v or "" for k, v in a.items()})
        if tag == "input" and a.get("type") == "checkbox":
            self.boxes[a.get("id") or ""] = a
        if tag == "script" and a.get("id") == "plan-data":
            self._in = "plan-data"
        if tag == "textarea" and a.get("id") == "plan-json":
            self._in = "textarea"

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "textarea"):
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "plan-data":
            self.plan_data += data
        elif self._in == "textarea":
            self.textarea += data


def parse(html_text: str) -> Page:
    p = Page()
    p.feed(html_text)
    p.close()
    return p


# ----------------------------------------------------------------------------- the page
def test_page_has_every_group_thumbnail_and_no_external_url(corpus: Any, tmp_path: Path) -> None:
    _root, idx, found = corpus
    out = tmp_path / "out" / "review.html"
    info = found.report(out)
    page = parse(out.read_text(encoding="utf-8"))

    assert len(page.groups) == len(found.groups) == info.groups == GROUPS
    files = {g.key for g in found.groups} | {m.path for g in found.groups for m in g.members}
    assert info.files == len(files) == len(page.thumbs) and not page.placeholders
    assert set(page.titles) >= files  # every file named in full (title attribute)
    members = [m for g in found.groups for m in g.members]
    # a difference map per member; an exact copy gets an "identical" label instead
    assert len(page.heats) + len(page.sames) == len(members)
    assert len(page.sames) == sum(1 for m in members if m.mse == 0)
    assert "Difference maps:" in out.read_text(encoding="utf-8")
    for t in page.thumbs:
        assert t["src"].startswith(("data:image/jpeg;base64,", "data:image/png;base64,"))
    # no network: pictures are data URIs; a click opens the local file itself
    assert all(u.startswith(("data:", "#", "file:///")) for u in page.urls), [u[:40] for u in page.urls]
    assert sorted(u for u in page.urls if u.startswith("file:")) == sorted(Path(p).as_uri() for p in files)
    assert not page.external_tags
    # one real checkbox (with a label) per file: the lower-quality ones ticked, each key's
    # disabled until another file of its group is kept instead
    assert len(page.boxes) == len(found.lower_quality) + len(found.groups)
    assert sum("checked" in b for b in page.boxes.values()) == len(found.lower_quality)
    assert sum("disabled" in b for b in page.boxes.values()) == len(found.groups)
    assert len(page.radios) == len(files)
    # download and tick-all come before the first group
    assert page.order[:3] == ["download", "tick-all", "untick-all"] and page.order[3] == "g1"
    # counts at the top: bytes freed is the sum of the lower-quality files' sizes
    assert info.bytes_freed == sum(os.path.getsize(p) for p in found.lower_quality)
    assert f"{info.bytes_freed:,} bytes" in out.read_text(encoding="utf-8")
    # the no-JavaScript plan lists every lower-quality file with its key
    plan = json.loads(page.textarea)
    assert plan["version"] == 1 and plan["catalog"] == str(idx.path)
    assert plan["threshold"] == found.threshold and plan["px_size"] == found.px_size
    key_of = {m.path: g.key for g in found.groups for m in g.members}
    assert sorted((a["path"], a["key"]) for a in plan["actions"]) == sorted(key_of.items())


def test_unreadable_file_gets_placeholder_and_pages_split(corpus: Any, tmp_path: Path) -> None:
    _root, _idx, found = corpus
    victim = found.groups[0].members[0].path
    Path(victim).write_bytes(b"\xff\xd8 not a picture any more")
    out = tmp_path / "review.html"
    info = write_report(found, out, page_groups=4, processes=2)  # 25 files: the worker pool
    page = parse(out.read_text(encoding="utf-8"))
    assert info.previews_failed == 1 and len(page.placeholders) == 1
    assert "no preview" in page.placeholders[0]["aria-label"]
    assert len(page.thumbs) == info.files - 1
    assert page.pages == ["p1", "p2"] and len(page.groups) == GROUPS
    assert {"#p1", "#p2"} <= set(page.urls)


def test_heat_map_follows_the_members_rotation(corpus: Any) -> None:
    _root, idx, found = corpus
    import io

    from PIL import Image

    black = np.array(_CMAP[0][1], dtype=np.uint8)
    for g in found.groups:
        for m in g.members:
            if m.mse != 0:
                continue
            png = heat_map(idx.tensor(g.key), idx.tensor(m.path), m.rotation)
            arr = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
            assert arr.shape == (100, 100, 3) and (arr == black).all(), m


@settings(max_examples=40, deadline=None)
@given(arrays(np.uint8, (10, 10, 3)), st.integers(0, 3), st.integers(1, 255), st.booleans())
def test_heat_map_black_exactly_where_turned_member_equals_key(key: np.ndarray, k: int, delta: int,
                                                               mirror: bool) -> None:
    """``near`` reports mirrored members: the map mirrors them (left-right) before turning."""
    import io

    from PIL import Image

    member = np.rot90(key, -k).copy()  # np.rot90(member, k) == key: rotation 90 * k
    if mirror:  # np.rot90(member[:, ::-1], k) == key
        member = member[:, ::-1].copy()
    member[0, 0, 0] = (int(member[0, 0, 0]) + delta) % 256  # one changed pixel
    png = heat_map(key, member, 90 * k, scale=1, mirror=mirror)
    arr = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    black = np.array(_CMAP[0][1], dtype=np.uint8)
    differs = ~(arr == black).all(axis=2)
    changed = np.zeros((10, 10), dtype=bool)
    changed[0, 0] = True
    assert (differs == np.rot90(changed[:, ::-1] if mirror else changed, k)).all()


# ----------------------------------------------------------------------------- Chromium
def _chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "chromium-profile"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--mute-audio",
           f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, cwd=tmp_path)


@pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK),
                    reason="headless Chromium not installed (/usr/bin/chromium; .ci/run installs "
                           "Debian's 'chromium' package, or run: apt-get install -y chromium)")
def test_chromium_screenshot_and_unticking_changes_the_plan(corpus: Any, tmp_path: Path) -> None:
    _root, _idx, found = corpus
    out = tmp_path / "review.html"
    found.report(out)
    page = parse(out.read_text(encoding="utf-8"))
    data = json.loads(page.plan_data)
    default = json.loads(page.textarea)

    shot = tmp_path / "shot.png"
    res = _chromium(["--window-size=1200,1400", f"--screenshot={shot}", out.as_uri()], tmp_path)
    assert shot.exists(), res.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1200, 1400)
        assert len(im.convert("L").getcolors(1 << 16) or []) > 50  # a rendered page, not blank

    def plan_after(fragment: str) -> dict[str, Any]:
        res = _chromium(["--dump-dom", out.as_uri() + fragment], tmp_path)
        dom = parse(res.stdout)
        assert dom.textarea, res.stderr[-2000:]
        return json.loads(dom.textarea)

    # the page's script rebuilds the same plan the Python side pre-filled
    assert plan_after("") == default
    box = "c2"
    untick = data["candidates"][int(page.boxes[box]["data-i"] or 0)][0]
    after = plan_after(f"#untick={box}")
    assert [a["path"] for a in after["actions"]] == [a["path"] for a in default["actions"] if a["path"] != untick]
    assert {k: v for k, v in after.items() if k != "actions"} == {k: v for k, v in default.items() if k != "actions"}
    assert plan_after("#untick=" + ",".join(page.boxes))["actions"] == []


# ----------------------------------------------------------------------------- apply
def _write_plan(found: SearchResult, tmp_path: Path, drop: int = 0) -> tuple[Path, list[dict[str, str]], list[str]]:
    out = tmp_path / "review.html"
    write_report(found, out, processes=1)
    plan = json.loads(parse(out.read_text(encoding="utf-8")).textarea)
    kept = [a["path"] for a in plan["actions"][:drop]]
    plan["actions"] = plan["actions"][drop:]
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan), encoding="utf-8")
    return path, plan["actions"], kept


#: the corpus is searched at threshold 50, not a named preset: apply must be told again
WIDE = ("-s", "50")


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_apply_dry_run_changes_nothing_then_moves_exactly_the_plan(corpus: Any, tmp_path: Path, cli: Cli) -> None:
    root, idx, found = corpus
    plan_path, actions, kept = _write_plan(found, tmp_path, drop=2)
    before = _tree(root)
    dest = tmp_path / "moved"

    res = cli("apply", plan_path, "--move-to", dest, "--dry-run", "--json", *WIDE)
    assert res.exit_code == 0, res.stderr
    dry = json.loads(res.stdout)["actions"]
    assert sorted(a for a, _ in dry["moved"]) == sorted(a["path"] for a in actions)
    assert _tree(root) == before and not dest.exists()

    res = cli("apply", plan_path, "--move-to", dest, "--json", *WIDE)
    assert res.exit_code == 0, res.stderr
    moved = json.loads(res.stdout)["actions"]["moved"]
    assert sorted(a for a, _ in moved) == sorted(a["path"] for a in actions)
    for src, target in moved:
        assert not os.path.exists(src) and os.path.isfile(target)
        assert Path(target).read_bytes() == before[str(Path(src).relative_to(root.resolve()))]
    left = _tree(root)
    assert set(left) == set(before) - {str(Path(a["path"]).relative_to(root.resolve())) for a in actions}
    for p in kept + [g.key for g in found.groups]:
        assert os.path.isfile(p)  # unticked files and keys are untouched
    # the catalog followed: the moved files left it
    from conftest import catalog_rows

    rows = catalog_rows(idx.path)
    assert not {os.fsencode(a["path"]) for a in actions} & set(rows)
    # running the plan again is harmless: every file is skipped with a reason
    res = cli("apply", plan_path, "--move-to", dest, "--json", *WIDE)
    again = json.loads(res.stdout)["actions"]
    assert again["moved"] == [] and len(again["skipped"]) == len(actions)
    assert "no longer exists" in res.stderr


def test_apply_delete_verifies_each_pair(corpus: Any, tmp_path: Path, cli: Cli) -> None:
    _root, idx, found = corpus
    g0, g1 = found.groups[0], found.groups[1]
    plan = {
        "version": 1, "catalog": str(idx.path), "threshold": found.threshold, "rotate": True,
        "same_dim": True, "px_size": 50,
        "actions": [
            {"path": g0.members[0].path, "key": g0.key},  # a real duplicate
            {"path": g1.members[0].path, "key": g0.key},  # hand-edited: not a duplicate of that key
            {"path": g0.key, "key": g1.key},  # a key is never touched
            {"path": g1.members[1].path, "key": g1.key},  # its key is edited after the search
        ],
    }
    F.write_synthetic(g1.key, 4242, 120, 90)
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(plan), encoding="utf-8")

    res = cli("apply", plan_path, "--delete", "--json", *WIDE)  # no terminal, no --yes
    assert res.exit_code == 2 and "--yes" in res.stderr
    res = cli("apply", plan_path, "--delete", "--yes", "--json")  # threshold 50: not a preset
    assert res.exit_code == 2 and "-s 50" in res.stderr
    res = cli("apply", plan_path, "--delete", "--yes", "--json", *WIDE)
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)["actions"]
    assert out["deleted"] == [g0.members[0].path]
    skipped = {s["path"]: s["reason"] for s in out["skipped"]}
    assert set(skipped) == {g1.members[0].path, g0.key, g1.members[1].path}
    assert "no longer matches" in skipped[g1.members[0].path]
    assert "key" in skipped[g0.key]
    assert "no longer matches" in skipped[g1.members[1].path]
    assert not os.path.exists(g0.members[0].path)
    for p in (g0.key, g1.key, g1.members[0].path, g1.members[1].path):
        assert os.path.isfile(p)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 2}, "unsupported plan version"),
        ({"threshold": -1}, "invalid threshold"),
        ({"px_size": 3}, "px_size"),
        ({"actions": [{"path": "/x/a.png", "key": "/x/a.png"}]}, "its own key"),
        ({"actions": [{"path": "a.png", "key": "/x/b.png"}]}, "absolute"),
        ({"catalog": "/nonexistent/other.sqlite"}, "--catalog"),
    ],
)
def test_apply_rejects_bad_plans(corpus: Any, tmp_path: Path, cli: Cli, change: dict[str, Any], message: str) -> None:
    root, idx, _found = corpus
    plan = {"version": 1, "catalog": str(idx.path), "threshold": 0, "rotate": True, "px_size": 50,
            "actions": [], **change}
    p = tmp_path / "plan.json"
    p.write_text(json.dumps(plan), encoding="utf-8")
    before = _tree(root)
    res = cli("apply", p, "--move-to", tmp_path / "dest")
    assert res.exit_code == 2 and message in res.stderr, res.stderr
    assert _tree(root) == before


def test_apply_needs_exactly_one_action_and_a_json_file(tmp_path: Path, cli: Cli) -> None:
    p = tmp_path / "plan.json"
    p.write_text("{not json", encoding="utf-8")
    assert cli("apply", p).exit_code == 2
    res = cli("apply", p, "--delete", "--move-to", tmp_path)
    assert res.exit_code == 2 and "exactly one" in res.stderr
    res = cli("apply", p, "--delete", "--yes")
    assert res.exit_code == 2 and "not a JSON plan" in res.stderr
    res = cli("apply", tmp_path / "missing.json", "--delete", "--yes")
    assert res.exit_code == 2 and "not found" in res.stderr


def test_search_report_option_writes_the_page(corpus: Any, tmp_path: Path, cli: Cli) -> None:
    root, _idx, _found = corpus
    out = tmp_path / "cli-review.html"
    res = cli("search", root, "-s", "50", "--report", out, "--json")
    assert res.exit_code == 0, res.stderr
    page = parse(out.read_text(encoding="utf-8"))
    assert len(page.groups) == len(json.loads(res.stdout)["result"]) == GROUPS


def test_near_members_show_their_rule_mirror_and_path(tmp_path: Path) -> None:
    """Under ``near`` the page says why a member matched: a mirrored, darker copy (the
    correlation rule) is mirrored on the heat map too, so where it equals the key the map is
    black; a picture that joined through a member names that member."""
    from PIL import Image

    rng = np.random.default_rng(4)
    pics = tmp_path / "pics"
    pics.mkdir()
    base = np.kron(rng.uniform(0, 255, (10, 10, 3)), np.ones((5, 5, 1)))
    base = np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)
    Image.fromarray(base).save(pics / "a.png")
    Image.fromarray(base[:, ::-1].copy()).save(pics / "b_mirror.png")  # same pixels, mirrored
    # the chain of the one-hop join (tests/test_near.py): k claims o, l matches only o
    yy, xx = np.mgrid[0:50, 0:50]
    o = np.stack([60 + 2 * xx, 80 + yy + xx, 200 - 2 * yy], axis=-1).astype(np.int16)
    d = np.where(rng.random((50, 50, 3)) < 0.5, -5, 5)
    for name, pic in (("k", o + d), ("o", o), ("l", o - d)):
        Image.fromarray(pic.astype(np.uint8)).save(pics / f"{name}.png")
    with Index.open(tmp_path / "cat.sqlite") as idx:
        idx.update([pics], processes=1)
        found = idx.search(similarity="near", keep="path")
    members = {Path(m.path).name: m for g in found.groups for m in g.members}
    assert members["b_mirror.png"].mirror and members["b_mirror.png"].measure == "correlation"
    assert members["l.png"].via is not None and Path(members["l.png"].via).name == "o.png"
    out = tmp_path / "review.html"
    write_report(found, out, processes=1)
    page = out.read_text(encoding="utf-8")
    assert "identical<br><small>no pixel differs" in page  # the mirrored copy, laid back
    assert "<dt>Match</dt><dd>correlation " in page and ", mirrored" in page
    assert "<dt>Through</dt><dd>o.png</dd>" in page
