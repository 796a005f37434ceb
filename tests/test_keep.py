"""Keep rules: the default keeps the original of a photo folder, --reference files are never
touched, every rule orders keys as docs/semantics.md says, and no rule depends on scan order.

The folder story is the one photo folders grow into: camera originals in ``roll1/``, a later
``cp -r`` backup (copied, so a newer mtime), a ``cp -a`` style archive (same mtime, deeper),
PNG conversions, a resized export and a rotated re-save in ``phone export/``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import imagefactory as imf
import numpy as np
import pytest
from conftest import catalog_rows, disk_files
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from difpy_index import Index, UsageError
from difpy_index import keep as kp
from difpy_index.match import find_groups, mse_exact

DAY = 86_400 * 10**9
T0 = 1_600_000_000 * 10**9  # when the camera originals were taken


def real(p: Path | str) -> str:
    return os.path.realpath(p)


def set_mtime(p: Path, ns: int) -> None:
    os.utime(p, ns=(ns, ns))


@pytest.fixture
def story(tmp_path: Path) -> dict[str, Path]:
    """The folder story; returns name -> path (originals are ``orig<i>``)."""
    root = tmp_path / "photos"
    roll = root / "roll1"
    roll.mkdir(parents=True)
    f: dict[str, Path] = {}
    for i in range(5):
        img = imf.synthetic(100 + i, 96, 64)
        f[f"orig{i}"] = roll / f"IMG_000{i}.jpg"
        img.save(f[f"orig{i}"], quality=90)
        set_mtime(f[f"orig{i}"], T0 + i * 10**9)
    # a later `cp -r roll1 backup/`: byte copies with a newer mtime
    for i in range(5):
        dst = root / "backup" / "roll1" / f"IMG_000{i}.jpg"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f[f"orig{i}"], dst)
        set_mtime(dst, T0 + 30 * DAY)
        f[f"backup{i}"] = dst
    # an archive made with `cp -a` (mtime kept) one folder deeper
    for i in (0, 1):
        dst = root / "archive" / "2020" / f"IMG_000{i}.jpg"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f[f"orig{i}"], dst)
        f[f"archive{i}"] = dst
    # PNG conversions of originals 0 and 2 (same pixels, larger lossless files); the
    # conversion of 2 kept the original's mtime (a tool that copies timestamps)
    conv = root / "converted"
    conv.mkdir()
    for i in (0, 2):
        dst = conv / f"IMG_000{i}.png"
        imf.Image.open(f[f"orig{i}"]).save(dst)
        set_mtime(dst, T0 + 40 * DAY if i == 0 else T0 + i * 10**9)
        f[f"png{i}"] = dst
    # a resized export of original 3 (3/4 size); given an even older mtime, so only
    # the pixel count can keep the original
    exp = root / "export"
    exp.mkdir()
    f["small3"] = exp / "IMG_0003_small.jpg"
    imf.resized(imf.Image.open(f["orig3"]), 0.75).save(f["small3"], quality=100, subsampling=0)
    set_mtime(f["small3"], T0 - DAY)
    # a rotated re-save of original 4 in 'phone export/' (re-encoded at a higher quality:
    # a larger file than the original, which is what difPy's rule keeps)
    phone = root / "phone export"
    phone.mkdir()
    f["rot4"] = phone / "IMG_0004.jpg"
    imf.rotated(imf.Image.open(f["orig4"]), 90).save(f["rot4"], quality=100)
    set_mtime(f["rot4"], T0 + 50 * DAY)
    f["root"] = root
    return f


def _index(tmp_path: Path, root: Path) -> Index:
    idx = Index.open(tmp_path / "c.sqlite")
    idx.update([root], processes=1)
    return idx


def _key_of(found, path: Path) -> str | None:
    p = real(path)
    for g in found.groups:
        if g.key == p or p in {m.path for m in g.members}:
            return g.key
    return None


def test_default_keeps_every_original(story, tmp_path):
    assert os.path.getsize(story["png0"]) > os.path.getsize(story["orig0"])
    assert os.path.getsize(story["rot4"]) > os.path.getsize(story["orig4"])
    with _index(tmp_path, story["root"]) as idx:
        found = idx.search(similarity="near")
        assert found.keep == kp.DEFAULT_KEEP
        originals = {real(story[f"orig{i}"]) for i in range(5)}
        assert {g.key for g in found.groups} == originals
        for name, path in story.items():
            if name == "root":
                continue
            i = name[-1]
            assert _key_of(found, path) == real(story[f"orig{i}"]), name
        assert not originals & set(found.lower_quality)
        # exact duplicates only: the byte copies and the PNG conversions (same pixels)
        exact = idx.search(similarity="duplicates")
        assert {g.key for g in exact.groups} == originals
        assert set(exact.lower_quality) == {
            real(p) for n, p in story.items() if n.startswith(("backup", "archive", "png"))
        }


def test_difpy_rule_is_what_the_issue_saw(story, tmp_path):
    """difPy's rule keeps the larger PNG conversion, the path-first backup copy and the
    rotated re-save: the reasons the default is different."""
    with _index(tmp_path, story["root"]) as idx:
        found = idx.search(similarity="near", keep="difpy")
    assert found.keep == "pixels,larger,path"
    assert _key_of(found, story["orig0"]) == real(story["png0"])
    assert _key_of(found, story["orig1"]) == real(story["archive1"])  # 'archive' < 'roll1'
    assert _key_of(found, story["orig4"]) == real(story["rot4"])
    # every exact copy keeps backup/ ('backup' < 'roll1'); the export never wins (pixels)
    assert _key_of(found, story["orig2"]) == real(story["png2"])
    assert _key_of(found, story["orig3"]) == real(story["backup3"])
    assert _key_of(found, story["small3"]) == real(story["backup3"])


def test_reference_files_are_kept_and_never_touched(story, tmp_path):
    backup = story["root"] / "backup"
    with _index(tmp_path, story["root"]) as idx:
        found = idx.search([story["root"] / "roll1"], reference=[backup])
        refs = {real(story[f"backup{i}"]) for i in range(5)}
        assert {g.key for g in found.groups} == refs
        assert found.lower_quality == sorted(real(story[f"orig{i}"]) for i in range(5))
        assert found.reference == [real(backup)]
        # two reference files that match each other: neither is ever a member
        shutil.copy2(story["backup0"], backup / "again.jpg")
        idx.update([story["root"]], processes=1)
        again = idx.search(similarity="near", reference=[backup])
        ref_all = refs | {real(backup / "again.jpg")}
        assert not ref_all & set(again.lower_quality)
        before = disk_files(backup)
        rep = again.delete(silent_del=True)
        assert rep.deleted and disk_files(backup) == before


def test_cli_reference_delete_leaves_reference_files(story, cli, tmp_path):
    assert cli("update", story["root"]).exit_code == 0
    backup = story["root"] / "backup"
    before = disk_files(backup)
    res = cli("search", story["root"] / "roll1", "--reference", backup, "--delete", "--yes",
              "--json")
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert sorted(out["actions"]["deleted"]) == sorted(real(story[f"orig{i}"]) for i in range(5))
    assert disk_files(backup) == before
    assert out["stats"]["process"]["search"]["parameters"]["reference"] == [real(backup)]
    assert not any(os.fsdecode(p).startswith(real(story["root"] / "roll1") + "/")
                   for p in catalog_rows(cli.catalog))


def test_cli_keep_path_pattern_and_bad_rules(story, cli):
    assert cli("update", story["root"]).exit_code == 0
    res = cli("search", story["root"], "--keep", "path:backup/,pixels", "--json")
    assert res.exit_code == 0, res.stderr
    keys = set(json.loads(res.stdout)["result"])
    assert keys == {real(story[f"backup{i}"]) for i in range(5)}
    # 'roll1/' is any folder named roll1 (backup/roll1 too); anchored, only the originals
    anchored = f"{story['root']}/roll1"  # an existing folder: matched by its real path
    res = cli("search", story["root"], "--keep", f"path-last:{anchored}", "--keep", "oldest",
              "--json")
    out = json.loads(res.stdout)
    assert out["stats"]["process"]["search"]["parameters"]["keep"] == f"path-last:{anchored},oldest,path"
    assert not {real(story[f"orig{i}"]) for i in range(5)} & set(out["result"])
    for bad in ("biggest", "path:", "pixels,,nope"):
        res = cli("search", story["root"], "--keep", bad)
        assert res.exit_code == 2 and "invalid keep" in res.stderr, bad
        assert len(res.stderr.strip().splitlines()) == 1


# -- each criterion, on columns ---------------------------------------------------------
def _cols(**kw) -> kp.KeepColumns:
    paths = kw.pop("paths")
    n = len(paths)
    base = {"widths": np.full(n, 10), "heights": np.full(n, 10), "sizes": np.full(n, 100),
            "mtimes": np.zeros(n, dtype=np.int64), "formats": None}
    base.update(kw)
    return kp.KeepColumns([p.encode() for p in paths], **base)


def _order(rule: str, cols: kp.KeepColumns) -> list[str]:
    return [cols.paths[i].decode() for i in kp.quality_order(kp.parse_keep(rule), cols)]


@pytest.mark.parametrize(("rule", "column", "values", "expected"), [
    ("pixels", "widths", [10, 30, 20], ["/b", "/c", "/a"]),
    ("fewer-pixels", "widths", [10, 30, 20], ["/a", "/c", "/b"]),
    ("larger", "sizes", [5, 9, 7], ["/b", "/c", "/a"]),
    ("smaller", "sizes", [5, 9, 7], ["/a", "/c", "/b"]),
    ("oldest", "mtimes", [3, 1, 2], ["/b", "/c", "/a"]),
    ("newest", "mtimes", [3, 1, 2], ["/a", "/c", "/b"]),
])
def test_each_numeric_criterion_orders_as_documented(rule, column, values, expected):
    cols = _cols(paths=["/a", "/b", "/c"], **{column: np.array(values)})
    assert _order(rule, cols) == expected


def test_format_shallow_deep_path_and_ties():
    cols = _cols(paths=["/x/a.png", "/x/b.jpg", "/x/y/c.heic", "/d.webp"],
                 formats=[None, None, None, "JPEG"])  # a recorded format beats the suffix
    assert _order("format", cols) == ["/d.webp", "/x/b.jpg", "/x/y/c.heic", "/x/a.png"]
    assert _order("shallow", cols) == ["/d.webp", "/x/a.png", "/x/b.jpg", "/x/y/c.heic"]
    assert _order("deep", cols) == ["/x/y/c.heic", "/x/a.png", "/x/b.jpg", "/d.webp"]
    assert _order("path", cols) == sorted(cols_paths(cols))
    # every rule ends in path ascending, so equal files come in path order
    assert _order("pixels", cols) == sorted(cols_paths(cols))


def cols_paths(cols: kp.KeepColumns) -> list[str]:
    return [p.decode() for p in cols.paths]


@pytest.mark.parametrize(("pattern", "hits"), [
    ("roll*/", {"/p/roll1/a.jpg", "/p/roll2/sub/b.jpg", "/p/backup/roll1/a.png"}),
    ("sub/", {"/p/roll2/sub/b.jpg"}),
    ("*.png", {"/p/backup/roll1/a.png", "/q/c.png"}),
    ("backup/**/*.png", {"/p/backup/roll1/a.png"}),
    ("/q/", {"/q/c.png"}),
    ("/p/roll?/", {"/p/roll1/a.jpg", "/p/roll2/sub/b.jpg"}),
    ("[rb]*/", {"/p/roll1/a.jpg", "/p/roll2/sub/b.jpg", "/p/backup/roll1/a.png"}),
    ("roll1", set()),  # not a folder pattern: a file named roll1
])
def test_path_patterns(pattern, hits):
    paths = ["/p/backup/roll1/a.png", "/p/roll1/a.jpg", "/p/roll2/sub/b.jpg", "/q/c.png"]
    cols = _cols(paths=paths)
    first = _order(f"path:{pattern}", cols)
    assert set(first[: len(hits)]) == hits and first[: len(hits)] == sorted(hits)
    last = _order(f"path-last:{pattern}", cols)
    assert set(last[len(paths) - len(hits):]) == hits


def test_parse_keep():
    assert kp.describe(kp.parse_keep(None)) == kp.DEFAULT_KEEP
    assert kp.describe(kp.parse_keep("difpy")) == kp.DIFPY_KEEP
    assert kp.describe(kp.parse_keep(["oldest", "pixels,oldest"])) == "oldest,pixels,path"
    assert kp.describe(kp.parse_keep("path,pixels")) == "path"  # nothing after path matters
    assert kp.describe(kp.parse_keep("Path:Roll*/")) == "path:Roll*/,path"
    for bad in ("size", "path:", ["pixels", 3], "path:/", "path-last:"):
        with pytest.raises(UsageError):
            kp.parse_keep(bad)  # type: ignore[arg-type]


def test_reference_ranks_first_whatever_the_rule():
    cols = _cols(paths=["/a", "/b", "/c"], widths=np.array([50, 10, 30]),
                 reference=np.array([False, True, False]))
    assert _order("pixels", cols) == ["/b", "/a", "/c"]


# -- properties over find_groups --------------------------------------------------------
RULES = ["default", "difpy", "pixels,oldest", "smaller,newest", "fewer-pixels", "format,deep",
         "path:b*/,larger", "path-last:a*/,shallow", "newest,path"]


@st.composite
def corpus(draw):
    n = draw(st.integers(2, 14))
    n_pics = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pics = rng.integers(0, 256, (n_pics, 8, 8, 3), dtype=np.uint8)
    tensors = np.empty((n, 8, 8, 3), dtype=np.uint8)
    for i in range(n):
        t = pics[draw(st.integers(0, n_pics - 1))].astype(np.int16)
        t += draw(st.sampled_from([0, 0, 1, 2]))  # near copies
        tensors[i] = np.rot90(np.clip(t, 0, 255), draw(st.integers(0, 3))).astype(np.uint8)
    folders = ["a", "b", "a/x", "bb"]
    paths = [f"/r/{draw(st.sampled_from(folders))}/f{i}.{draw(st.sampled_from(['jpg', 'png']))}"
             for i in range(n)]
    wh = [draw(st.sampled_from([(40, 30), (30, 40), (80, 60)])) for _ in range(n)]
    cols = kp.KeepColumns(
        [p.encode() for p in paths],
        np.array([w for w, _ in wh]), np.array([h for _, h in wh]),
        np.array([draw(st.integers(1, 4)) for _ in range(n)]),
        np.array([draw(st.integers(0, 3)) for _ in range(n)], dtype=np.int64),
        None,
        np.array([draw(st.booleans()) and draw(st.booleans()) for _ in range(n)]),
    )
    return tensors, cols


def _groups(tensors, cols, rule, threshold, perm):
    """find_groups over the rows in ``perm`` order, reported by path (order-free)."""
    c = kp.KeepColumns(
        [cols.paths[i] for i in perm], cols.widths[perm], cols.heights[perm],
        cols.sizes[perm], cols.mtimes[perm], None, cols.reference[perm],
    )
    order = kp.quality_order(kp.parse_keep(rule), c)
    found = find_groups(tensors[perm], c.widths, c.heights, c.sizes, c.paths, threshold,
                        rotate=True, same_dim=False, order=order, protected=c.reference)
    rank = {c.paths[i]: r for r, i in enumerate(order)}
    return [(c.paths[g.key], [(c.paths[m.index], m.mse, m.rotation) for m in g.members])
            for g in found], rank


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=corpus(), rule=st.sampled_from(RULES), threshold=st.sampled_from([0, 1.5, 6]),
       seed=st.integers(0, 10**6))
def test_groups_never_depend_on_order_and_keys_are_best(data, rule, threshold, seed):
    tensors, cols = data
    n = len(cols.paths)
    ident = np.arange(n)
    shuffled = np.random.default_rng(seed).permutation(n)
    g1, rank = _groups(tensors, cols, rule, threshold, ident)
    g2, _ = _groups(tensors, cols, rule, threshold, shuffled)
    assert g1 == g2
    by_path = {p: tensors[i] for i, p in enumerate(cols.paths)}
    ref = {p for p, r in zip(cols.paths, cols.reference, strict=True) if r}
    seen: set[bytes] = set()
    for key, members in g1:
        assert members and key not in seen
        seen.add(key)
        for path, mse, _rot in members:
            # no group loses its key: the key outranks every member, and each matches it
            assert rank[key] < rank[path]
            assert mse <= threshold and mse == mse_exact(by_path[key], by_path[path], True)[0]
            assert path not in ref and path not in seen  # references are never members
            seen.add(path)
