"""move_to / delete: verified before any I/O, never overwriting, never losing the last copy.

Every test works on real PNG files and a real catalog in tmp_path; results are either
built by hand over that catalog (to control the groups exactly, including wrong ones) or
come from ``Index.search``.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from conftest import catalog_rows, disk_files, write_image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from difpy_index import (
    ActionError,
    GroupInfo,
    Index,
    MemberInfo,
    SearchResult,
    actions,
    fileops,
    match,
)
from difpy_index.actions import ActionRefused


def real(p: Path | str) -> str:
    return os.path.realpath(p)


def copy_bytes(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes())
    return dst


def hand_result(
    idx: Index,
    groups: Sequence[tuple[Path | str, Sequence[Path | str]]],
    folders: Sequence[Path | str],
    threshold: float = 0.0,
    rotate: bool = True,
) -> SearchResult:
    """A SearchResult over ``idx`` with exactly these groups (key, members)."""
    infos = [
        GroupInfo(real(k), tuple(MemberInfo(real(m), 0.0, 0) for m in ms)) for k, ms in groups
    ]
    return SearchResult(
        result={g.key: [[m.path, m.mse] for m in g.members] for g in infos},
        lower_quality=sorted({m.path for g in infos for m in g.members}),
        stats={},
        groups=infos,
        threshold=threshold,
        rotate=rotate,
        same_dim=True,
        px_size=50,
        folders=[real(f) for f in folders],
        _index=idx,
    )


def rows(idx: Index) -> dict[bytes, tuple[int, int, str]]:
    return catalog_rows(idx.path)


@pytest.fixture
def idx(catalog_path: Path):
    with Index.open(catalog_path) as index:
        yield index


@pytest.fixture
def photos(tmp_path: Path) -> dict[str, Path]:
    """photos/keep.png and two byte copies with one basename: photos/a/x.png, photos/b/x.png;
    photos/other.png (unrelated) and photos/c/y.png (a copy of other.png)."""
    root = tmp_path / "photos"
    keep = write_image(root / "keep.png", seed=1)
    other = write_image(root / "other.png", seed=2)
    return {
        "root": root,
        "keep": keep,
        "ax": copy_bytes(keep, root / "a" / "x.png"),
        "bx": copy_bytes(keep, root / "b" / "x.png"),
        "other": other,
        "cy": copy_bytes(other, root / "c" / "y.png"),
    }


def two_groups(idx: Index, p: dict[str, Path]) -> SearchResult:
    return hand_result(idx, [(p["keep"], [p["ax"], p["bx"]]), (p["other"], [p["cy"]])], [p["root"]])


# -- move_to --------------------------------------------------------------------------------
def test_same_basename_both_arrive_and_catalog_follows(idx, photos, tmp_path):
    idx.update([photos["root"]])
    ax_bytes = photos["ax"].read_bytes()
    dest = tmp_path / "dups"
    rep = two_groups(idx, photos).move_to(dest)
    base = real(dest)
    assert sorted(rep.moved) == sorted([
        (real(photos["ax"]), f"{base}/photos/a/x.png"),
        (real(photos["bx"]), f"{base}/photos/b/x.png"),
        (real(photos["cy"]), f"{base}/photos/c/y.png"),
    ])
    assert rep.skipped == [] and not rep.dry_run
    for _src, dst in rep.moved:
        assert Path(dst).read_bytes() in (ax_bytes, photos["other"].read_bytes())
    assert not photos["ax"].exists() and not photos["bx"].exists() and not photos["cy"].exists()
    assert photos["keep"].exists() and photos["other"].exists()
    r = rows(idx)
    assert os.fsencode(real(photos["keep"])) in r
    assert not {os.fsencode(s) for s, _ in rep.moved} & set(r)
    assert rep.summary() == f'Moved 3 file(s) to "{base}"'
    # the catalog is consistent with the disk: an update changes nothing
    after = idx.update([photos["root"]])
    assert (after.removed, after.decoded) == (0, 0)


def test_move_never_overwrites_an_existing_target(idx, photos, tmp_path):
    idx.update([photos["root"]])
    dest = tmp_path / "dups"
    squatter = write_image(dest / "photos" / "a" / "x.png", seed=99)
    before = squatter.read_bytes()
    rep = hand_result(idx, [(photos["keep"], [photos["ax"]])], [photos["root"]]).move_to(str(dest))
    assert rep.moved == [(real(photos["ax"]), real(dest / "photos" / "a" / "x (1).png"))]
    assert squatter.read_bytes() == before
    assert (dest / "photos" / "a" / "x (1).png").read_bytes() == photos["keep"].read_bytes()


def test_two_roots_with_the_same_basename_do_not_collide(idx, tmp_path):
    r1, r2 = tmp_path / "one" / "photos", tmp_path / "two" / "photos"
    keep = write_image(r1 / "keep.png", seed=5)
    m1 = copy_bytes(keep, r1 / "x.png")
    m2 = copy_bytes(keep, r2 / "x.png")
    idx.update([r1, r2])
    dest = tmp_path / "dups"
    rep = hand_result(idx, [(keep, [m1, m2])], [r1, r2]).move_to(dest)
    targets = sorted(t for _s, t in rep.moved)
    assert targets == [real(dest / "photos" / "x (1).png"), real(dest / "photos" / "x.png")]
    assert all(Path(t).read_bytes() == keep.read_bytes() for t in targets)


@pytest.mark.parametrize("where", ["inside", "equal"])
def test_destination_inside_a_searched_folder_is_refused(idx, photos, where):
    idx.update([photos["root"]])
    dest = photos["root"] / "dups" if where == "inside" else photos["root"]
    before = disk_files(photos["root"])
    with pytest.raises(ActionError, match="searched folder"):
        two_groups(idx, photos).move_to(dest)
    assert disk_files(photos["root"]) == before
    assert not (photos["root"] / "dups").exists()


def test_destination_whose_targets_land_in_a_searched_folder_is_refused(idx, photos, tmp_path):
    """dest = the parent of the root: dest/photos/a/x.png would be the source itself."""
    idx.update([photos["root"]])
    with pytest.raises(ActionRefused, match="would land inside"):
        two_groups(idx, photos).move_to(tmp_path)


def test_moved_files_are_skipped_on_a_second_run(idx, photos, tmp_path):
    idx.update([photos["root"]])
    found = two_groups(idx, photos)
    first = found.move_to(tmp_path / "dups")
    lower = list(found.lower_quality)
    again = found.move_to(tmp_path / "dups")
    assert found.lower_quality == lower  # the result object is left as it was
    assert again.moved == [] and len(again.skipped) == 3
    assert all(s.reason == "file no longer exists" for s in again.skipped)
    assert len(first.moved) == 3


def test_rename_noreplace_never_overwrites(tmp_path):
    if fileops._load_renameat2() is None:
        pytest.skip("no renameat2 here")
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"A")
    b.write_bytes(b"B")
    with pytest.raises(FileExistsError):
        fileops.rename_noreplace(os.fsencode(a), os.fsencode(b))
    assert (a.read_bytes(), b.read_bytes()) == (b"A", b"B")
    assert fileops.rename_noreplace(os.fsencode(a), os.fsencode(tmp_path / "c"))
    assert not a.exists() and (tmp_path / "c").read_bytes() == b"A"


@pytest.mark.parametrize("atomic", [True, False])
def test_move_never_overwrites_with_either_primitive(idx, photos, tmp_path, monkeypatch, atomic):
    if not atomic:
        monkeypatch.setattr(fileops, "_renameat2", None)  # link + unlink
    idx.update([photos["root"]])
    dest = tmp_path / "dups"
    squatters = [write_image(dest / "photos" / "a" / n, seed=90 + i) for i, n in enumerate(["x.png", "x (1).png"])]
    before = [s.read_bytes() for s in squatters]
    rep = hand_result(idx, [(photos["keep"], [photos["ax"]])], [photos["root"]]).move_to(dest)
    assert rep.moved == [(real(photos["ax"]), real(dest / "photos" / "a" / "x (2).png"))]
    assert [s.read_bytes() for s in squatters] == before


def test_cross_filesystem_move_copies_fsyncs_and_leaves_no_temp(idx, photos, tmp_path, monkeypatch):
    idx.update([photos["root"]])
    monkeypatch.setattr(fileops, "_renameat2", None)
    dest = tmp_path / "dups"
    real_link = os.link

    def link(src, dst, *a, **k):
        if not os.fsdecode(src).startswith(real(dest)):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_link(src, dst, *a, **k)

    monkeypatch.setattr(os, "link", link)
    mtime = os.stat(photos["ax"]).st_mtime_ns
    rep = two_groups(idx, photos).move_to(dest)
    assert len(rep.moved) == 3 and rep.skipped == []
    moved_ax = dict(rep.moved)[real(photos["ax"])]
    assert os.stat(moved_ax).st_mtime_ns == mtime  # copystat
    assert not [p for p in dest.rglob("*") if p.name.startswith(".difpy-move")]
    assert not photos["ax"].exists()


# -- crash in the middle ----------------------------------------------------------------------
def consistent(idx: Index, sources: list[Path], dest: Path, payload: dict[Path, bytes]) -> None:
    """Every file is in exactly one place, and catalog rows exist only for existing files."""
    arrived = [p for p in dest.rglob("*") if p.is_file()] if dest.exists() else []
    for src in sources:
        here = src.exists()
        there = [p for p in arrived if p.read_bytes() == payload[src]
                 and p.relative_to(dest).parts[-1] == src.name
                 and p.parent.name == src.parent.name]
        assert here + len(there) == 1, (src, here, there)
    assert not [p for p in arrived if p.name.startswith(".difpy-move")]
    for path in rows(idx):
        assert os.path.exists(path), path


@pytest.mark.parametrize("fail_on", ["rename", "link", "unlink", "fsync"])
@pytest.mark.parametrize("k", [0, 1, 2])
def test_crash_in_the_middle_leaves_disk_and_catalog_consistent(idx, photos, tmp_path, monkeypatch, fail_on, k):
    """An exception (a crash) injected into the (k+1)-th call of the move primitive of each
    path: atomic rename; link + unlink (no renameat2); copy + fsync (across filesystems)."""
    idx.update([photos["root"]])
    sources = [photos["ax"], photos["bx"], photos["cy"]]
    payload = {s: s.read_bytes() for s in sources}
    dest = tmp_path / "dups"
    calls = {"n": 0}
    if fail_on == "rename":
        if fileops._load_renameat2() is None:
            pytest.skip("no renameat2 here")
        orig = fileops.rename_noreplace
        target: object = fileops
    else:
        monkeypatch.setattr(fileops, "_renameat2", None)
        orig = {"link": os.link, "unlink": os.unlink, "fsync": os.fsync}[fail_on]
        target = os

    def faulty(*a, **kw):
        calls["n"] += 1
        if calls["n"] == k + 1:  # the (k+1)-th call dies, once (a crash, not an OSError)
            raise RuntimeError("injected crash")
        return orig(*a, **kw)

    if fail_on == "fsync":  # the copy path: every link across "filesystems" fails
        real_link = os.link

        def link(src, dst, *a, **kw):
            if not os.fsdecode(src).startswith(real(dest)):
                raise OSError(errno.EXDEV, "Invalid cross-device link")
            return real_link(src, dst, *a, **kw)

        monkeypatch.setattr(os, "link", link)
    monkeypatch.setattr(target, "rename_noreplace" if fail_on == "rename" else fail_on, faulty)
    with pytest.raises(RuntimeError, match="injected"):
        two_groups(idx, photos).move_to(dest)
    monkeypatch.undo()
    consistent(idx, sources, dest, payload)
    assert not list(photos["root"].rglob(".difpy-aside*"))  # put back, cleaned up
    # exactly the files before the crash made it: each file takes two calls of the
    # primitive (moved aside in its own folder, then on to DEST; the copy path fsyncs twice)
    done = k // 2
    assert sum(not s.exists() for s in sources) == done
    # and the next run finishes the job
    rep = two_groups(idx, photos).move_to(dest)
    assert len(rep.moved) == 3 - done
    consistent(idx, sources, dest, payload)
    assert not any(s.exists() for s in sources)


# -- verification -----------------------------------------------------------------------------
def test_file_edited_after_update_is_not_deleted(idx, photos):
    idx.update([photos["root"]])
    write_image(photos["ax"], seed=77)  # now a different picture
    rep = two_groups(idx, photos).delete(silent_del=True)
    assert photos["ax"].exists()
    assert sorted(rep.deleted) == sorted([real(photos["bx"]), real(photos["cy"])])
    assert [(s.path, s.reason.split(" (")[0]) for s in rep.skipped] == [
        (real(photos["ax"]), "changed since indexed")
    ]
    assert os.fsencode(real(photos["ax"])) in rows(idx)  # the catalog keeps its (stale) row


def test_file_changed_since_indexed_is_skipped_until_updated(idx, photos):
    """SEMANTICS.md 6: a member must be unchanged since it was catalogued (size, mtime,
    inode, ctime), even when it still holds the same picture; after update it may go."""
    idx.update([photos["root"]])
    st = os.stat(photos["ax"])
    os.utime(photos["ax"], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # stale row, same picture
    found = hand_result(idx, [(photos["keep"], [photos["ax"]])], [photos["root"]])
    rep = found.delete(silent_del=True)
    assert rep.deleted == [] and photos["ax"].exists()
    assert rep.skipped[0].reason.startswith("changed since indexed")
    idx.update([photos["root"]])
    rep = found.delete(silent_del=True)
    assert rep.deleted == [real(photos["ax"])] and not photos["ax"].exists()


def test_edited_key_is_rechecked(idx, photos):
    idx.update([photos["root"]])
    write_image(photos["keep"], seed=123)  # the key no longer looks like its members
    rep = two_groups(idx, photos).delete(silent_del=True)
    assert photos["ax"].exists() and photos["bx"].exists()
    assert rep.deleted == [real(photos["cy"])]
    assert {s.path for s in rep.skipped} == {real(photos["ax"]), real(photos["bx"])}


def test_key_deleted_by_hand_makes_its_members_skipped(idx, photos):
    idx.update([photos["root"]])
    photos["keep"].unlink()
    rep = two_groups(idx, photos).delete(silent_del=True)
    assert photos["ax"].exists() and photos["bx"].exists() and not photos["cy"].exists()
    key = real(photos["keep"])
    assert [(s.path, s.reason) for s in rep.skipped] == [
        (real(photos["ax"]), f"key {key} no longer exists"),
        (real(photos["bx"]), f"key {key} no longer exists"),
    ]
    assert rep.summary() == "Deleted 1 file(s); 2 skipped"


def test_wrong_group_is_refused(idx, photos):
    """A group whose member never matched its key (a bad result) deletes nothing."""
    idx.update([photos["root"]])
    rep = hand_result(idx, [(photos["keep"], [photos["other"]])], [photos["root"]]).delete(silent_del=True)
    assert rep.deleted == [] and photos["other"].exists()
    assert "no longer matches its key" in rep.skipped[0].reason


def test_keys_are_never_touched_even_when_listed_as_members(idx, photos):
    idx.update([photos["root"]])
    found = hand_result(idx, [(photos["keep"], [photos["ax"]]), (photos["ax"], [photos["keep"]])],
                        [photos["root"]])
    rep = found.delete(silent_del=True)
    assert rep.deleted == [] and photos["keep"].exists() and photos["ax"].exists()
    assert all("key of another group" in s.reason for s in rep.skipped)


def test_hard_link_to_the_key_is_skipped(idx, photos):
    linked = photos["root"] / "linked.png"
    os.link(photos["keep"], linked)
    idx.update([photos["root"]])
    rep = hand_result(idx, [(photos["keep"], [linked])], [photos["root"]]).delete(silent_del=True)
    assert rep.deleted == [] and linked.exists()
    assert "same file as its key" in rep.skipped[0].reason


def test_rotated_copy_is_verified_with_rotate_only(idx, tmp_path):
    from PIL import Image

    root = tmp_path / "r"
    key = write_image(root / "key.png", seed=3, size=(50, 50))  # px_size: no resampling
    Image.open(key).rotate(90).save(root / "turned.png")
    idx.update([root])
    kept = hand_result(idx, [(key, [root / "turned.png"])], [root], rotate=False).delete(silent_del=True)
    assert kept.deleted == [] and (root / "turned.png").exists()
    gone = hand_result(idx, [(key, [root / "turned.png"])], [root], rotate=True).delete(silent_del=True)
    assert gone.deleted == [real(root / "turned.png")]


def test_exact_mse_matches_the_definition():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)
    b = a.copy()
    b[0, 0, 0] = a[0, 0, 0] ^ 0xFF  # a difference well above 15: no uint8 wrap-around
    d = int(a[0, 0, 0]) - int(b[0, 0, 0])
    assert match.mse_exact(a, b, rotate=False) == (d * d / 300, 0)
    assert match.mse_exact(a, np.rot90(a, 3), rotate=True)[0] == 0.0
    assert match.mse_exact(a, np.rot90(a, 1), rotate=False)[0] > 0


# -- delete: confirmation ---------------------------------------------------------------------
def test_delete_asks_difpys_question(idx, photos, monkeypatch):
    idx.update([photos["root"]])
    asked: list[str] = []
    monkeypatch.setattr(builtins, "input", lambda q="": asked.append(q) or "n")
    found = two_groups(idx, photos)
    total = sum(os.path.getsize(p) for p in found.lower_quality)
    rep = found.delete()
    assert len(asked) == 1 and asked[0].endswith(actions.QUESTION)
    from difpy_index.results import human_size

    assert asked[0].startswith(f"3 lower-quality file(s), {human_size(total)} in all.\n")
    assert rep.canceled and rep.deleted == []
    assert rep.summary() == "Deletion canceled."
    assert photos["ax"].exists()
    monkeypatch.setattr(builtins, "input", lambda q="": "Y")
    assert len(two_groups(idx, photos).delete().deleted) == 3


def test_delete_without_a_terminal_refuses(idx, photos, monkeypatch):
    idx.update([photos["root"]])
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    with pytest.raises(ActionError, match="confirmation"):
        two_groups(idx, photos).delete()
    assert photos["ax"].exists()


def test_nothing_to_delete_is_a_message(idx, photos, monkeypatch):
    idx.update([photos["root"]])
    monkeypatch.setattr(builtins, "input", lambda q="": pytest.fail("asked"))
    empty = hand_result(idx, [], [photos["root"]])
    rep = empty.delete()
    assert rep.summary() == "Nothing to delete: no lower-quality files."
    assert empty.move_to(photos["root"].parent / "dups").summary() == "Nothing to move: no lower-quality files."


def test_unattached_result_is_an_error(photos):
    found = SearchResult({}, [], {}, [GroupInfo("/a", (MemberInfo("/b", 0.0, 0),))], 0.0, True,
                         True, 50)
    with pytest.raises(ActionError, match="not attached"):
        found.delete(silent_del=True)


# -- dry run ----------------------------------------------------------------------------------
@pytest.mark.parametrize("action", ["move", "delete"])
def test_dry_run_changes_nothing(idx, photos, tmp_path, action, monkeypatch):
    idx.update([photos["root"]])
    write_image(photos["bx"], seed=55)  # one planned skip
    monkeypatch.setattr(builtins, "input", lambda q="": pytest.fail("a dry run must not ask"))
    disk_before, rows_before = disk_files(tmp_path), rows(idx)
    found = two_groups(idx, photos)
    dest = tmp_path / "dups"
    rep = found.move_to(dest, dry_run=True) if action == "move" else found.delete(dry_run=True)
    assert disk_files(tmp_path) == disk_before and rows(idx) == rows_before
    assert not dest.exists()
    assert rep.dry_run and [s.path for s in rep.skipped] == [real(photos["bx"])]
    done = rep.moved if action == "move" else rep.deleted
    assert len(done) == 2
    assert rep.to_dict()["dry_run"] is True
    if action == "move":
        assert rep.summary().startswith("Would move 2 file(s)")
        # the dry run's plan is what the real run then does
        assert found.move_to(dest).moved == rep.moved


# -- property: delete never loses the last copy -------------------------------------------------
@st.composite
def scenarios(draw):
    n_pictures = draw(st.integers(1, 3))
    copies = draw(st.lists(st.integers(0, 3), min_size=n_pictures, max_size=n_pictures))
    files = [(pic, c) for pic, n in enumerate(copies) for c in range(n + 1)]
    # groups: each a key and members drawn from all files (they may be wrong on purpose)
    n_groups = draw(st.integers(1, 3))
    groups = []
    for _ in range(n_groups):
        key = draw(st.sampled_from(files))
        members = draw(st.lists(st.sampled_from(files), max_size=4, unique=True))
        groups.append((key, [m for m in members if m != key]))
    edited = draw(st.lists(st.sampled_from(files), max_size=2, unique=True))
    removed = draw(st.lists(st.sampled_from(files), max_size=1, unique=True))
    return files, groups, edited, removed


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_delete_never_loses_the_last_copy(scenario):
    files, groups, edited, removed = scenario
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "pics"
        path_of = {}
        for pic, c in files:
            p = root / f"d{c}" / f"p{pic}.png"
            if c == 0:
                write_image(p, seed=pic, size=(12, 10))
            else:
                copy_bytes(root / "d0" / f"p{pic}.png", p)
            path_of[(pic, c)] = p
        with Index.open(Path(tmp) / "cat.sqlite") as index:
            index.update([root])
            for f in edited:
                write_image(path_of[f], seed=1000 + f[0] * 10 + f[1], size=(12, 10))
            for f in removed:
                path_of[f].unlink()
            content = {f: p.read_bytes() for f, p in path_of.items() if p.exists()}
            found = hand_result(index, [(path_of[k], [path_of[m] for m in ms]) for k, ms in groups], [root])
            rep = found.delete(silent_del=True)
            deleted = {Path(d) for d in rep.deleted}
            assert len(deleted) == len(rep.deleted)
            for g in found.groups:
                assert Path(g.key) not in deleted  # keys are never touched
                assert Path(g.key).exists() or Path(g.key) in {Path(real(path_of[r])) for r in removed}
            survivors = {f: p for f, p in path_of.items() if p.exists()}
            for f, p in path_of.items():
                if Path(real(p)) not in deleted:
                    continue
                assert not p.exists()
                # it matched (byte-identical here) a key that still exists
                keys = [Path(g.key) for g in found.groups if str(real(p)) in {m.path for m in g.members}]
                assert any(k.exists() and k.read_bytes() == content[f] for k in keys), (p, keys)
            # deleted files left the catalog; every other row is a file on disk (or was
            # removed by hand, which only the next update notices)
            by_hand = {os.fsencode(real(path_of[r])) for r in removed}
            for path in catalog_rows(index.path):
                assert os.path.exists(path) or path in by_hand
            assert not {os.fsencode(d) for d in rep.deleted} & set(catalog_rows(index.path))
            # no picture lost its last copy
            left = {p.read_bytes() for p in survivors.values()}
            assert set(content.values()) <= left


# -- end to end: Index.search and the CLI ---------------------------------------------------------
@pytest.fixture
def indexed(cli, photos):
    res = cli("update", photos["root"], "--json")
    assert res.exit_code == 0, res.stderr
    return photos


def test_search_result_actions_with_the_real_engine(indexed, catalog_path, tmp_path):
    p = indexed
    with Index.open(catalog_path) as index:
        found = index.search([p["root"]], keep="difpy")
        # byte copies: with difPy's rule the key is the path first in order
        assert {g.key for g in found.groups} == {real(p["ax"]), real(p["cy"])}
        write_image(p["bx"], seed=31)  # edited after the search
        rep = found.move_to(tmp_path / "dups")
    assert sorted(rep.moved) == sorted([
        (real(p["keep"]), real(tmp_path / "dups" / "photos" / "keep.png")),
        (real(p["other"]), real(tmp_path / "dups" / "photos" / "other.png")),
    ])
    assert [s.path for s in rep.skipped] == [real(p["bx"])]
    assert p["ax"].exists() and p["cy"].exists() and p["bx"].exists()


def test_cli_delete_without_a_terminal_refuses(cli, indexed):
    before = disk_files(indexed["root"])
    res = cli("search", indexed["root"], "--delete")
    assert res.exit_code == 2
    assert len(res.stderr.strip().splitlines()) == 1 and "--yes" in res.stderr
    assert disk_files(indexed["root"]) == before


def test_cli_nothing_to_delete_is_a_message(cli, tmp_path):
    root = tmp_path / "alone"
    write_image(root / "a.png", seed=1)
    write_image(root / "b.png", seed=2)
    assert cli("update", root).exit_code == 0
    res = cli("search", root, "--delete", "-Z", tmp_path / "out")
    assert res.exit_code == 0, res.stderr
    assert "Nothing to delete" in res.stdout


def test_cli_dry_run_json_shape_and_nothing_changes(cli, indexed, catalog_path, tmp_path):
    before, rows_before = disk_files(tmp_path), catalog_rows(catalog_path)
    res = cli("search", indexed["root"], "--delete", "--dry-run", "--json")
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    acts = out["actions"]
    assert acts["dry_run"] is True and acts["moved"] == [] and acts["skipped"] == []
    assert sorted(acts["deleted"]) == sorted(out["lower_quality"])
    assert set(acts) >= {"moved", "deleted", "skipped", "dry_run"}
    assert disk_files(tmp_path) == before and catalog_rows(catalog_path) == rows_before
    res = cli("search", indexed["root"], "--move-to", tmp_path / "dups", "--dry-run", "--json")
    moved = json.loads(res.stdout)["actions"]["moved"]
    assert [m[0] for m in moved] == json.loads(res.stdout)["lower_quality"]
    assert all(m[1].startswith(real(tmp_path / "dups") + "/") for m in moved)
    assert not (tmp_path / "dups").exists()


def test_cli_delete_yes_and_move_end_to_end(cli, indexed, catalog_path, tmp_path):
    p = indexed
    write_image(p["other"], seed=8)  # a member edited after update: survives, with a reason
    res = cli("search", p["root"], "--no-update", "--keep", "difpy", "--move-to", tmp_path / "dups", "--json")
    assert res.exit_code == 0, res.stderr
    acts = json.loads(res.stdout)["actions"]
    assert [s["path"] for s in acts["skipped"]] == [real(p["other"])]
    assert res.stderr.count("skipped: ") == 1 and "changed since indexed" in res.stderr
    assert len(acts["moved"]) == 2 and all(os.path.exists(t) for _f, t in acts["moved"])
    assert not {os.fsencode(f) for f, _t in acts["moved"]} & set(catalog_rows(catalog_path))
    # the edited file is a new picture after an update: nothing left to delete
    assert cli("update", p["root"]).exit_code == 0
    res = cli("search", p["root"], "--delete", "--yes", "-Z", tmp_path / "out")
    assert res.exit_code == 0, res.stderr
    assert "Nothing to delete" in res.stdout
    assert p["cy"].exists() and p["ax"].exists() and p["other"].exists()
    assert not p["bx"].exists() and not p["keep"].exists()


def test_cli_move_into_a_searched_folder_is_refused(cli, indexed):
    res = cli("search", indexed["root"], "--move-to", indexed["root"] / "dups")
    assert res.exit_code == 2
    assert len(res.stderr.strip().splitlines()) == 1 and "searched folder" in res.stderr
