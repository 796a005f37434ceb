"""Issue 13: actions that trust nothing. Classes 2-10 of the issue, each reproduced on real
files with the real CLI (in a subprocess where the process itself matters, in-process with
typer's runner where a fault is injected). Class 1 (pass-through mounts) is in
test_safety_mounts.py."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import imagefactory as factory
import pytest
from conftest import Cli, write_image
from safety_helpers import PY, contents, copy, hashes, read_only_view, run, write_plan
from test_change_detection import same_size_same_mtime_edit

from difpy_index import Index


def real(p: Path | str) -> str:
    return os.path.realpath(p)


def no_update(cli: Cli) -> list[str]:
    """``--no-update`` where ``search`` updates first (INTERFACE.md), so a test can act on a
    catalog it made stale on purpose."""
    return ["--no-update"] if "--no-update" in cli("search", "--help").stdout else []


@pytest.fixture
def photos(tmp_path: Path, cli: Cli) -> dict[str, Path]:
    """photos/keep.png, photos/x/x.png (its byte copy), photos/other.png (another picture)
    and photos/y/y.png (its copy); indexed. Path order makes keep and other the keys."""
    root = tmp_path / "photos"
    keep = write_image(root / "keep.png", seed=1)
    other = write_image(root / "other.png", seed=2)
    assert isinstance(keep, Path) and isinstance(other, Path)
    p = {"root": root, "keep": keep, "x": copy(keep, root / "x" / "x.png"), "other": other,
         "y": copy(other, root / "y" / "y.png")}
    assert cli("update", root).exit_code == 0
    return p


# ====================================================================== 2. apply and plans
def test_plan_threshold_wider_than_a_preset_is_refused(photos: dict[str, Path], tmp_path: Path, cli: Cli) -> None:
    """A plan of threshold 65025 pairs two unrelated pictures: without the same wide
    similarity repeated on the command line, apply refuses and touches nothing."""
    before = hashes(photos["root"])
    plan = write_plan(tmp_path / "plan.json", [(real(photos["other"]), real(photos["keep"]))],
                      catalog=cli.catalog, threshold=65025.0)
    res = cli("apply", plan, "--delete", "--yes")
    assert res.exit_code == 2, res.stderr
    assert "-s 65025" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert hashes(photos["root"]) == before
    # a narrower similarity on the command line wins over the plan's: no match, skipped
    res = cli("apply", plan, "--delete", "--yes", "-s", "duplicates", "--json")
    assert res.exit_code == 1, res.stderr  # asked to act, did nothing: a failure
    assert json.loads(res.stdout)["actions"]["deleted"] == []
    assert hashes(photos["root"]) == before


@pytest.mark.parametrize(
    ("fields", "repeat"),
    [({"same_dim": False}, "--no-same-dim"), ({"px_size": 32}, "--px-size 32"),
     ({"threshold": 3.0}, "-s 3")],
)
def test_plan_settings_wider_than_its_preset_must_be_repeated(
    fields: dict[str, Any], repeat: str, photos: dict[str, Path], tmp_path: Path, cli: Cli
) -> None:
    before = hashes(photos["root"])
    plan = write_plan(tmp_path / "plan.json", [(real(photos["x"]), real(photos["keep"]))],
                      catalog=cli.catalog, **fields)
    res = cli("apply", plan, "--delete", "--yes")
    assert res.exit_code == 2 and repeat in res.stderr, res.stderr
    assert hashes(photos["root"]) == before
    res = cli("apply", plan, "--delete", "--yes", *repeat.split(), "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["actions"]["deleted"] == [real(photos["x"])]


@pytest.mark.parametrize("preset", [("duplicates", 0.0, True), ("similar", 5.0, True), ("near", 31.0, False)])
def test_plan_of_a_named_preset_is_honoured(preset: tuple[str, float, bool], photos: dict[str, Path],
                                            tmp_path: Path, cli: Cli) -> None:
    _name, thr, same_dim = preset
    plan = write_plan(tmp_path / "plan.json", [(real(photos["x"]), real(photos["keep"]))],
                      catalog=cli.catalog, threshold=thr, same_dim=same_dim)
    res = cli("apply", plan, "--delete", "--yes", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["actions"]["deleted"] == [real(photos["x"])]


def _bad_path_plans(photos: dict[str, Path], tmp_path: Path) -> dict[str, tuple[str, str]]:
    root = real(photos["root"])
    outside = tmp_path / "outside"
    write_image(outside / "o.png", seed=1)
    fresh = copy(photos["keep"], photos["root"] / "fresh.png")  # on disk, never indexed
    return {
        "dotdot": (f"{root}/x/../x/x.png", real(photos["keep"])),
        "dotdot-key": (real(photos["x"]), f"{root}/x/../keep.png"),
        "dot": (f"{root}/./x/x.png", real(photos["keep"])),
        "double-slash": (f"{root}//x/x.png", real(photos["keep"])),
        "nul": (f"{root}/x/x.png\x00.png", real(photos["keep"])),
        "lone-surrogate": (f"{root}/x/x\ud800.png", real(photos["keep"])),
        "not-catalogued": (real(fresh), real(photos["keep"])),
        "outside-every-root": (real(outside / "o.png"), real(photos["keep"])),
        "key-outside-every-root": (real(photos["x"]), real(outside / "o.png")),
        "folder": (real(photos["root"] / "x"), real(photos["keep"])),
    }


@pytest.mark.parametrize("case", ["dotdot", "dotdot-key", "dot", "double-slash", "nul", "lone-surrogate",
                                  "not-catalogued", "outside-every-root", "key-outside-every-root", "folder"])
def test_plan_paths_are_validated_before_anything_is_touched(case: str, photos: dict[str, Path],
                                                             tmp_path: Path, cli: Cli) -> None:
    """Classes 2, 5 and 8: a plan path that is not normalised, holds a NUL byte or a lone
    surrogate, is not a catalogued file, or lies outside every indexed root makes the whole
    plan invalid: exit 2, one line, and the good first action is not done either."""
    bad = _bad_path_plans(photos, tmp_path)[case]
    good = (real(photos["y"]), real(photos["other"]))
    plan = write_plan(tmp_path / "plan.json", [good, bad], catalog=cli.catalog)
    before = hashes(photos["root"]), hashes(tmp_path / "outside")
    for action in (["--delete", "--yes"], ["--move-to", tmp_path / "dups"]):
        res = cli("apply", plan, *action)
        assert res.exit_code == 2, (case, res.exit_code, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith("error:"), res.stderr
        assert (hashes(photos["root"]), hashes(tmp_path / "outside")) == before
    assert not (tmp_path / "dups").exists()


def test_plan_with_a_non_utf8_name_still_works(tmp_path: Path, cli: Cli) -> None:
    """Lone surrogates \\udc80-\\udcff are how JSON carries a non-UTF-8 byte of a file name:
    those are valid (the page writes them), only other surrogates are refused."""
    root = tmp_path / "pics"
    keep = write_image(root / "keep.png", seed=4)
    assert isinstance(keep, Path)
    odd = os.fsencode(str(root)) + b"/caf\xe9.png"
    with open(odd, "wb") as fh:
        fh.write(keep.read_bytes())
    assert cli("update", root).exit_code == 0
    plan = write_plan(tmp_path / "plan.json", [(os.fsdecode(odd), real(keep))], catalog=cli.catalog)
    res = cli("apply", plan, "--delete", "--yes", "--json")
    assert res.exit_code == 0, res.stderr
    assert not os.path.exists(odd) and keep.exists()


def test_plan_that_swaps_key_and_member_keeps_the_original(tmp_path: Path, cli: Cli) -> None:
    """A thumbnail matches its original once both are 50x50; a plan that names the
    thumbnail as the key must not delete the 640x480 original to keep 64x48 pixels."""
    root = tmp_path / "pics"
    root.mkdir()
    big = factory.synthetic(7, 640, 480)
    big.save(root / "original.png")
    big.resize((64, 48)).save(root / "thumb.png")
    assert cli("update", root).exit_code == 0
    orig, thumb = real(root / "original.png"), real(root / "thumb.png")
    with Index.open(cli.catalog) as idx:
        found = idx.search([root], similarity=200, same_dim=False)
        assert [(g.key, [m.path for m in g.members]) for g in found.groups] == [(orig, [thumb])]
    wide = ["-s", "200", "--no-same-dim"]
    swapped = write_plan(tmp_path / "swapped.json", [(orig, thumb)], catalog=cli.catalog,
                         threshold=200.0, same_dim=False)
    before = hashes(root)
    for action in (["--delete", "--yes"], ["--move-to", tmp_path / "dups"]):
        res = cli("apply", swapped, *action, *wide, "--json")
        out = json.loads(res.stdout)["actions"]
        assert out["deleted"] == [] and out["moved"] == [], out
        assert "pixels" in out["skipped"][0]["reason"], out
        assert res.exit_code == 1
        assert hashes(root) == before
    # the plan the page makes (the thumbnail goes) is fine
    right = write_plan(tmp_path / "right.json", [(thumb, orig)], catalog=cli.catalog,
                       threshold=200.0, same_dim=False)
    res = cli("apply", right, "--delete", "--yes", *wide, "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["actions"]["deleted"] == [thumb]
    assert Path(orig).exists()


def test_plan_parsing_is_linear_and_deduplicates(tmp_path: Path) -> None:
    """Class 9: 40,000 actions (the quadratic version took 9 s); duplicates dropped, order kept."""
    from difpy_index.plan import parse_plan

    acts = [{"path": f"/p/m{i}.png", "key": f"/p/k{i % 97}.png"} for i in range(40_000)]
    obj = {"version": 1, "threshold": 0, "rotate": True, "same_dim": True, "px_size": 50,
           "actions": acts + acts[:1000]}
    t0 = time.perf_counter()
    plan = parse_plan(obj)
    seconds = time.perf_counter() - t0
    assert len(plan.actions) == 40_000
    assert plan.actions[0] == ("/p/m0.png", "/p/k0.png") and plan.actions[-1][0] == "/p/m39999.png"
    print(f"parse_plan: 41,000 actions in {seconds:.3f} s")


# ================================================ 3. a change that keeps size and mtime
# (update's side is in test_change_detection.py)
@pytest.mark.parametrize("replace", [False, True], ids=["in-place", "renamed-over"])
def test_action_on_a_stale_row_skips_an_edit_that_kept_size_and_mtime(replace: bool, tmp_path: Path, cli: Cli) -> None:
    root = tmp_path / "bmp"
    keep = write_image(root / "keep.bmp", seed=1, fmt="BMP")
    assert isinstance(keep, Path)
    dup = copy(keep, root / "zdup.bmp")  # sorts after keep.bmp: the member
    assert cli("update", root).exit_code == 0
    same_size_same_mtime_edit(dup, seed=9, replace=replace)
    picture = dup.read_bytes()
    # an action from the stale catalog does not delete the (now different) picture
    res = cli("search", root, *no_update(cli), "--delete", "--yes", "--json")
    acted = json.loads(res.stdout)["actions"]
    assert acted["deleted"] == [] and dup.read_bytes() == picture, acted
    assert "changed since indexed" in acted["skipped"][0]["reason"]
    assert res.exit_code == 1


def _edit_keeping_size_and_mtime(path: Path, seed: int) -> None:
    st = os.stat(path)
    write_image(path, seed=seed)  # another picture...
    with open(path, "r+b") as fh:  # ...cut or padded to the old size
        fh.truncate(st.st_size)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_key_edited_keeping_size_and_mtime_is_decoded_before_acting(photos: dict[str, Path], cli: Cli) -> None:
    """The key is decoded when the action runs: a key rewritten in place with its size and
    mtime kept no longer holds the picture, so its member (the last copy) stays."""
    _edit_keeping_size_and_mtime(photos["keep"], seed=77)
    res = cli("search", photos["root"], *no_update(cli), "--delete", "--yes", "--json")
    acted = json.loads(res.stdout)["actions"]
    assert real(photos["x"]) not in acted["deleted"] and photos["x"].exists(), acted


def test_member_without_ctime_is_decoded_before_acting(photos: dict[str, Path], cli: Cli) -> None:
    """A row with no ctime (from before schema 0002) cannot vouch for its file: an action
    decodes such a member now, so an edit that kept size and mtime is caught."""
    conn = sqlite3.connect(cli.catalog)
    with conn:
        conn.execute("UPDATE files SET ctime_ns = NULL")
    conn.close()
    picture = photos["keep"].read_bytes()
    _edit_keeping_size_and_mtime(photos["x"], seed=78)
    edited = photos["x"].read_bytes()
    res = cli("search", photos["root"], *no_update(cli), "--delete", "--yes", "--json")
    acted = json.loads(res.stdout)["actions"]
    assert real(photos["x"]) not in acted["deleted"] and photos["x"].read_bytes() == edited, acted
    assert photos["keep"].read_bytes() == picture
    assert real(photos["y"]) in acted["deleted"]  # unchanged, verified by decoding: acted on


# ============================================================ 4. outputs never overwrite
@pytest.mark.parametrize("victim", ["photo", "text", "folder-file"])
def test_report_never_overwrites_a_file_that_is_not_a_report(victim: str, photos: dict[str, Path],
                                                             tmp_path: Path, cli: Cli) -> None:
    target = {"photo": photos["keep"], "text": tmp_path / "notes.html",
              "folder-file": tmp_path / "dups" / "x.html"}[victim]
    if victim != "photo":
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("my own notes\n")
    before = target.read_bytes()
    res = cli("search", photos["root"], "--report", target, "--delete", "--yes", "--json")
    assert res.exit_code == 2, res.stderr
    assert target.read_bytes() == before
    assert photos["x"].exists() and photos["y"].exists()  # refused before acting


def test_report_rewrites_its_own_earlier_page(photos: dict[str, Path], tmp_path: Path, cli: Cli) -> None:
    page = tmp_path / "review.html"
    assert cli("search", photos["root"], "--report", page, "--json").exit_code == 0
    first = page.stat().st_mtime_ns
    time.sleep(0.01)
    res = cli("search", photos["root"], "--report", page, "--json")
    assert res.exit_code == 0, res.stderr
    assert page.stat().st_mtime_ns != first


def test_difpy_files_never_overwrite(photos: dict[str, Path], tmp_path: Path, cli: Cli,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20261202120000")
    squatter = out / "difPy_20261202120000_results.json"
    squatter.write_text("not ours\n")
    for _ in range(2):  # and two runs within one second do not overwrite each other
        res = cli("search", photos["root"], "-Z", out)
        assert res.exit_code == 0, res.stderr
    assert squatter.read_text() == "not ours\n"
    results = sorted(p.name for p in out.iterdir() if p.name.endswith("_results.json"))
    assert len(results) == 3, results


# ======================================================== 5. moves stay inside DEST
def test_symlink_inside_dest_back_into_the_root_is_refused(photos: dict[str, Path], tmp_path: Path, cli: Cli) -> None:
    dest = tmp_path / "dups"
    dest.mkdir()
    (dest / "photos").symlink_to(photos["root"], target_is_directory=True)
    before = hashes(photos["root"])
    res = cli("search", photos["root"], "--move-to", dest)
    assert res.exit_code == 2, res.stderr
    assert hashes(photos["root"]) == before


def test_symlink_inside_dest_pointing_elsewhere_is_refused(photos: dict[str, Path], tmp_path: Path, cli: Cli) -> None:
    dest, elsewhere = tmp_path / "dups", tmp_path / "elsewhere"
    dest.mkdir()
    elsewhere.mkdir()
    (dest / "photos").symlink_to(elsewhere, target_is_directory=True)
    before = hashes(photos["root"])
    res = cli("search", photos["root"], "--move-to", dest)
    assert res.exit_code == 2, res.stderr
    assert hashes(photos["root"]) == before and list(elsewhere.iterdir()) == []


def test_dest_inside_another_indexed_root_is_refused(photos: dict[str, Path], tmp_path: Path, cli: Cli) -> None:
    """The refusal uses the catalog's roots, not only the searched folders."""
    other = tmp_path / "archive"
    write_image(other / "z.png", seed=50)
    assert cli("update", other).exit_code == 0
    before = hashes(photos["root"])
    for dest in (other / "dups", other):
        res = cli("search", photos["root"], "--move-to", dest)
        assert res.exit_code == 2 and "indexed" in res.stderr, res.stderr
    link = tmp_path / "link-to-archive"
    link.symlink_to(other, target_is_directory=True)
    res = cli("search", photos["root"], "--move-to", link / "dups")
    assert res.exit_code == 2, res.stderr
    assert hashes(photos["root"]) == before and not (other / "dups").exists()


def test_plan_folders_do_not_decide_where_moves_may_go(photos: dict[str, Path], tmp_path: Path, cli: Cli) -> None:
    plan = write_plan(tmp_path / "plan.json", [(real(photos["x"]), real(photos["keep"]))],
                      catalog=cli.catalog, folders=[str(tmp_path / "nowhere")])
    before = hashes(photos["root"])
    res = cli("apply", plan, "--move-to", photos["root"] / "dups")
    assert res.exit_code == 2, res.stderr
    assert hashes(photos["root"]) == before and not (photos["root"] / "dups").exists()


# ===================================================== 6. symlinked files are not acted on
def test_link_to_a_file_outside_every_root(tmp_path: Path, cli: Cli) -> None:
    """root/link.png -> zz-outside/orig.png (no root holds it) and root/copy.png, its copy.
    The copy is older, so it is the key and the link target a member: the target is never
    deleted or moved, and search with and without DIR agree about what it finds."""
    root, outside = tmp_path / "root", tmp_path / "zz-outside"
    orig = write_image(outside / "orig.png", seed=3)
    assert isinstance(orig, Path)
    old = copy(orig, root / "copy.png")
    os.utime(old, ns=(10**18, 10**18))  # 2001: the oldest, and first by path too
    (root / "link.png").symlink_to(orig)
    assert cli("update", root).exit_code == 0
    with_dir = json.loads(cli("search", root, "--json").stdout)
    without = json.loads(cli("search", "--json").stdout)
    assert with_dir["result"] == without["result"]
    assert with_dir["lower_quality"] == without["lower_quality"]
    before = orig.read_bytes()
    for action in (["--delete", "--yes"], ["--move-to", tmp_path / "dups"]):
        res = cli("search", "--json", *action)
        out = json.loads(res.stdout)
        acts = out["actions"]
        assert real(orig) not in acts["deleted"] and real(orig) not in [m[0] for m in acts["moved"]]
        assert any(sk["path"] == real(orig) and "outside every indexed folder" in sk["reason"]
                   for sk in acts["skipped"]), acts
        assert orig.read_bytes() == before
        assert (root / "link.png").resolve() == orig.resolve() and (root / "link.png").exists()
        assert (root / "copy.png").exists()


# ============================================================ 7. validate, then act
def test_unusable_output_folder_is_found_before_acting(photos: dict[str, Path], tmp_path: Path, cli: Cli) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    before = hashes(photos["root"])
    for z in (blocker, blocker / "sub"):
        res = cli("search", photos["root"], "--delete", "--yes", "-Z", z)
        assert res.exit_code == 2, res.stderr
        assert hashes(photos["root"]) == before


def test_read_only_output_folder_is_found_before_acting(photos: dict[str, Path], tmp_path: Path) -> None:
    cat = tmp_path / "catalog.sqlite"
    out = tmp_path / "out"
    out.mkdir()
    with read_only_view(out, tmp_path / "ro-out") as ro:
        if ro is None:
            pytest.skip("cannot make a read-only bind mount here (needs root and mount)")
        before = hashes(photos["root"])
        res = run(cat, "search", photos["root"], "--delete", "--yes", "-Z", ro)
        assert res.returncode == 2, res.stderr
        assert hashes(photos["root"]) == before
        # the working directory is the default output folder: refused up front, or not
        # needed at all; never "deleted, then failed"
        res = run(cat, "search", photos["root"], "--delete", "--yes", cwd=ro)
        if res.returncode != 0:
            assert res.returncode == 2 and hashes(photos["root"]) == before, res.stderr
        else:
            assert not photos["x"].exists()


def test_read_only_catalog_searches_but_refuses_actions(photos: dict[str, Path], tmp_path: Path) -> None:
    """Class 7 and 10: a catalog on a read-only filesystem can be searched and summarised;
    an action (which must write it) is refused up front with one line naming it."""
    src = photos["root"].parent / "catalog.sqlite"
    assert src.exists()
    folder = tmp_path / "catdir"
    folder.mkdir()
    os.replace(src, folder / "catalog.sqlite")
    with read_only_view(folder, tmp_path / "ro") as ro:
        if ro is None:
            pytest.skip("cannot make a read-only bind mount here (needs root and mount)")
        cat = ro / "catalog.sqlite"
        write_image(photos["root"] / "new.png", seed=9)  # not current: it cannot be updated
        res = run(cat, "search", photos["root"], "--json")
        assert res.returncode == 0, res.stderr
        assert len(json.loads(res.stdout)["lower_quality"]) == 2
        assert "read-only" in res.stderr and "searched as it is" in res.stderr
        assert run(cat, "status", "--json").returncode == 0
        before = hashes(photos["root"])
        for action in (["--delete", "--yes"], ["--move-to", tmp_path / "dups"]):
            res = run(cat, "search", photos["root"], "--json", *action)
            assert res.returncode == 2, res.stderr
            lines = res.stderr.strip().splitlines()
            assert len(lines) == 1 and str(cat) in lines[0] and "read-only" in lines[0], res.stderr
            assert hashes(photos["root"]) == before
        assert sorted(os.listdir(folder)) == ["catalog.sqlite"]


def test_failure_mid_way_still_reports_what_was_done(photos: dict[str, Path], cli: Cli,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The catalog write after the second of three deletes fails (a full disk): what was
    done is reported on stdout (and in --json), one error line names the catalog, exit 1;
    the third file is untouched."""
    z = copy(photos["keep"], photos["root"] / "z" / "z.png")
    assert cli("update", photos["root"]).exit_code == 0
    real_forget = Index.forget

    def failing_second(monkeypatch: pytest.MonkeyPatch) -> None:
        calls = {"n": 0}

        def forget(self: Index, paths: Any) -> int:
            calls["n"] += 1
            if calls["n"] == 2:
                raise sqlite3.OperationalError("database or disk is full")
            return real_forget(self, paths)

        monkeypatch.setattr(Index, "forget", forget)

    failing_second(monkeypatch)
    res = cli("search", photos["root"], "--delete", "--yes", "--json")
    assert res.exit_code == 1, res.stderr
    out = json.loads(res.stdout)
    assert len(out["actions"]["deleted"]) == 2 and "disk is full" in out["actions"]["error"], out["actions"]
    assert sum(p.exists() for p in (photos["x"], photos["y"], z)) == 1
    assert str(cli.catalog) in res.stderr and "disk is full" in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.stderr
    # the same without --json: the human summary is printed
    monkeypatch.setattr(Index, "forget", real_forget)
    for p in (photos["x"], photos["y"], z):
        if not p.exists():
            copy(photos["keep"] if p.name != "y.png" else photos["other"], p)
    assert cli("update", photos["root"]).exit_code == 0
    failing_second(monkeypatch)
    res = cli("search", photos["root"], "--delete", "--yes", "-Z", photos["root"].parent / "out")
    assert res.exit_code == 1
    assert "Deleted 2 file(s)" in res.stdout, (res.stdout, res.stderr)


def test_errors_name_the_catalog_given_and_verbose_shows_the_traceback(photos: dict[str, Path], tmp_path: Path) -> None:
    cat = tmp_path / "catalog.sqlite"
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    res = run(cat, "search", photos["root"], "-Z", blocker / "sub")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    res = run(cat, "-v", "search", photos["root"], "-Z", blocker / "sub")
    assert res.returncode == 2 and "Traceback" in res.stderr, res.stderr
    # an SQLite failure names the catalog given, not the default one
    size = cat.stat().st_size
    with open(cat, "r+b") as fh:  # every page after the header page: garbage
        fh.seek(4096)
        fh.write(os.urandom(size - 4096))
    res = run(cat, "search", photos["root"], "--json", "--delete", "--yes")
    assert res.returncode in (1, 2) and str(cat) in res.stderr, res.stderr


def test_move_that_skips_every_file_exits_1_with_the_summary(photos: dict[str, Path], tmp_path: Path, cli: Cli) -> None:
    write_image(photos["x"], seed=70)
    write_image(photos["y"], seed=71)
    res = cli("search", photos["root"], *no_update(cli), "--move-to", tmp_path / "dups", "-Z", tmp_path / "out")
    assert res.exit_code == 1, res.stderr
    assert "Moved 0 file(s)" in res.stdout and "2 skipped" in res.stdout


def test_rerun_of_a_finished_action_is_not_a_failure(photos: dict[str, Path], tmp_path: Path, cli: Cli) -> None:
    """Files an earlier run already moved ("no longer exists") are not refusals: the goal
    is met, exit 0, even when every file is skipped that way."""
    with Index.open(cli.catalog) as idx:
        found = idx.search([photos["root"]])
        assert len(found.move_to(tmp_path / "dups").moved) == 2
        again = found.move_to(tmp_path / "dups")
    assert again.moved == [] and {s.reason for s in again.skipped} == {"file no longer exists"}
    res = cli("search", photos["root"], "--move-to", tmp_path / "dups", "--json")
    assert res.exit_code == 0, res.stderr


# ================================================================ 9. bounded resources
@pytest.mark.parametrize("command", ["update", "search", "query"])
def test_huge_px_size_is_refused(command: str, photos: dict[str, Path], cli: Cli) -> None:
    from difpy_index.decode import MAX_PX_SIZE

    assert MAX_PX_SIZE <= 512
    target = photos["keep"] if command == "query" else photos["root"]
    res = cli(command, target, "--px-size", "5000")
    assert res.exit_code == 2 and f"between 10 and {MAX_PX_SIZE}" in res.stderr, res.stderr


def test_catalog_at_the_largest_px_size_stays_small(tmp_path: Path, cli: Cli) -> None:
    """16 tiny images at 5000 px made a 1.2 GB catalog; at the bound, each tensor is
    MAX_PX_SIZE**2 * 3 bytes and the search works."""
    from difpy_index.decode import MAX_PX_SIZE

    root = tmp_path / "tiny"
    for i in range(16):
        write_image(root / f"t{i}.png", seed=i % 8, size=(8, 6))
    res = cli("update", root, "--px-size", str(MAX_PX_SIZE), "--json")
    assert res.exit_code == 0, res.stderr
    per = MAX_PX_SIZE * MAX_PX_SIZE * 3
    assert os.path.getsize(cli.catalog) < 16 * per * 1.2 + 2**20
    found = json.loads(cli("search", root, "--px-size", str(MAX_PX_SIZE), "--json").stdout)
    assert len(found["lower_quality"]) == 8


# ======================================================================= 10. lesser
def test_partial_temp_of_a_killed_cross_filesystem_move_is_cleaned(photos: dict[str, Path], tmp_path: Path) -> None:
    """SIGKILL a cross-filesystem move half way through its copy (the harness forces the
    copy path and kills the process after the first chunk); the next move into DEST
    removes the partial temp file."""
    cat = photos["root"].parent / "catalog.sqlite"
    dest = tmp_path / "dups"
    harness = r"""
import errno, os, signal, shutil, sys
from difpy_index import fileops
DEST = os.environ["HARNESS_DEST"]
real_rename, real_link = fileops.rename_noreplace, os.link
def into_dest(dst):
    return os.fsdecode(dst).startswith(DEST)
def no_rename(src, dst, *a, **k):
    if into_dest(dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")
    return real_rename(src, dst, *a, **k)
def no_link(src, dst, *a, **k):
    if into_dest(dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")
    return real_link(src, dst, *a, **k)
fileops.rename_noreplace = no_rename
os.link = no_link
real_copy = shutil.copyfileobj
def copy_then_die(src, dst, length=0):
    dst.write(src.read(100))
    dst.flush()
    os.kill(os.getpid(), signal.SIGKILL)
shutil.copyfileobj = copy_then_die
sys.argv = ["difpy-index"] + sys.argv[1:]
from difpy_index.cli import main
main()
"""
    argv = [PY, "-c", harness, "--catalog", str(cat), "search", str(photos["root"]), "--move-to", str(dest), "--json"]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]), HARNESS_DEST=str(dest))
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    partial = [p for p in dest.rglob("*") if p.is_file()]
    assert len(partial) == 1 and partial[0].name.startswith(".difpy-"), partial
    # the source is whole, in its place or set aside in its own folder (being proven)
    for p in (photos["x"], photos["y"]):
        places = [p] if p.exists() else list(p.parent.glob(".difpy-aside-*/" + p.name))
        assert len(places) == 1 and places[0].read_bytes() == photos["keep" if p == photos["x"] else "other"].read_bytes()
    res = run(cat, "search", photos["root"], "--move-to", dest, "--json")
    assert res.returncode == 0, res.stderr
    assert not list(dest.rglob(".difpy-*")), list(dest.rglob("*"))
    assert not list(photos["root"].rglob(".difpy-*"))
    assert len(json.loads(res.stdout)["actions"]["moved"]) == 2


def _forged_name_root(tmp_path: Path) -> tuple[Path, bytes]:
    root = tmp_path / "names"
    keep = write_image(root / "keep.png", seed=5)
    assert isinstance(keep, Path)
    evil = os.fsencode(str(root)) + b"/x\nforged.png: 9 match(es)\x1b[31m.png"
    with open(evil, "wb") as fh:
        fh.write(keep.read_bytes())
    return keep, evil


def test_query_and_status_escape_names_on_stdout(tmp_path: Path) -> None:
    keep, _evil = _forged_name_root(tmp_path)
    cat = tmp_path / "catalog.sqlite"
    assert run(cat, "update", keep.parent).returncode == 0
    res = run(cat, "query", keep)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 2 and "\x1b" not in res.stdout, res.stdout  # the query and one match
    assert "\\n" in lines[1] and "\\x1b" in lines[1]
    res = run(cat, "search", keep.parent)
    assert "\x1b" not in res.stdout
    weird_root = tmp_path / "root\nwith newline\x1b[2J"
    write_image(weird_root / "a.png", seed=1)
    assert run(cat, "update", weird_root).returncode == 0
    res = run(cat, "status")
    assert res.returncode == 0 and "\x1b" not in res.stdout
    assert all(not ln.startswith("with newline") for ln in res.stdout.splitlines()), res.stdout


@pytest.mark.parametrize("kind", ["dev-null", "fifo", "folder"])
def test_non_regular_catalog_is_exit_2_and_creates_nothing(kind: str, tmp_path: Path) -> None:
    if kind == "dev-null":
        cat = Path("/dev/null")
        had_journal = os.path.lexists("/dev/null-journal")
    elif kind == "fifo":
        cat = tmp_path / "fifo.sqlite"
        os.mkfifo(cat)
    else:
        cat = tmp_path / "folder.sqlite"
        cat.mkdir()
    listing = sorted(os.listdir(cat.parent)) if kind != "dev-null" else []
    for args in (["status"], ["search", "--json"], ["update", tmp_path]):
        res = run(cat, *args, timeout=30)
        assert res.returncode == 2, (args, res.returncode, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1 and str(cat) in res.stderr
    if kind == "dev-null":
        if not had_journal and os.path.lexists("/dev/null-journal"):
            os.unlink("/dev/null-journal")  # clean up after the bug before failing
            pytest.fail("a -journal file was created beside /dev/null")
    else:
        assert sorted(os.listdir(cat.parent)) == listing


@pytest.mark.parametrize("case", ["plan-is-a-folder", "output-dir-is-a-file", "dest-under-a-file"])
def test_bad_inputs_are_exit_2(case: str, photos: dict[str, Path], tmp_path: Path, cli: Cli) -> None:
    before = hashes(photos["root"])
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    if case == "plan-is-a-folder":
        res = cli("apply", tmp_path, "--delete", "--yes")
    elif case == "output-dir-is-a-file":
        res = cli("search", photos["root"], "-Z", "/dev/null")
    else:
        res = cli("search", photos["root"], "--move-to", blocker / "dups")
    assert res.exit_code == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert hashes(photos["root"]) == before


def test_nothing_lost_in_any_of_the_above_is_a_tautology_guard(photos: dict[str, Path]) -> None:
    """The helpers themselves: contents() sees a lost picture."""
    before = contents(photos["root"])
    photos["y"].unlink()
    assert contents(photos["root"]) == before  # other.png still holds that picture
    photos["other"].unlink()
    assert contents(photos["root"]) != before
