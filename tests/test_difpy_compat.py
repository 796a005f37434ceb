"""The difPy drop-in: the seed docs' examples with only the import changed (issue 6).

Images are written by the tests; the catalog is ``$DIFPY_INDEX_CATALOG`` in tmp_path.
Real difPy 4.2.1 is the reference for the set of matching groups (compared as sets,
since difPy's keys depend on scan order; SEMANTICS.md section 4).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import image_array, write_image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import difpy_index as difPy
from difpy_index.decode import MAX_PX_SIZE
from difpy_index.errors import UsageError


@pytest.fixture(autouse=True)
def _catalog_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cat = tmp_path / "default-catalog.sqlite"
    monkeypatch.setenv("DIFPY_INDEX_CATALOG", str(cat))
    return cat


def real(p: str | os.PathLike[str]) -> str:
    return os.path.realpath(p)


def brighter(src: Path, dst: Path, delta: int) -> None:
    a = np.asarray(Image.open(src).convert("RGB")).astype(np.int16) + delta
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB").save(dst)


def corpus(folder: Path, base: int = 0) -> dict[str, set[str]]:
    """Clusters without chains: two exact-duplicate sets (one re-encoded, so the bytes
    differ), a one-level-brighter near copy, and unrelated singles (one of another size).
    Returns {cluster name: set of real paths}."""
    folder.mkdir(parents=True, exist_ok=True)
    a = write_image(folder / "a.png", seed=base + 1)
    shutil.copy(a, folder / "a_copy.png")
    b = write_image(folder / "b.png", seed=base + 2)
    Image.open(b).save(folder / "b_copy.tif")  # same pixels, other bytes and format
    Image.open(b).save(folder / "b_copy2.png", compress_level=1)
    brighter(Path(b), folder / "b_bright.png", 1)
    write_image(folder / "c.png", seed=base + 3)
    write_image(folder / "d.png", seed=base + 4, size=(40, 30))
    (folder / "notes.txt").write_text("not an image")
    return {
        "a": {real(folder / "a.png"), real(folder / "a_copy.png")},
        "b": {real(folder / n) for n in ("b.png", "b_copy.tif", "b_copy2.png")},
        "b+": {real(folder / n) for n in ("b.png", "b_copy.tif", "b_copy2.png", "b_bright.png")},
    }


def smooth(w: int, h: int) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) * 255 // (w + h - 2)], -1)
    return Image.fromarray(a.astype(np.uint8), "RGB")


def groups_of(result: dict[str, list[list[object]]]) -> set[frozenset[str]]:
    return {frozenset([k, *(m[0] for m in members)]) for k, members in result.items()}


def members_of(result: dict[str, list[list[object]]]) -> set[str]:
    return {m[0] for members in result.values() for m in members}


# -- the seed docs' examples ---------------------------------------------------------------
def test_single_folder(tmp_path: Path) -> None:
    c = corpus(tmp_path / "Folder")
    dif = difPy.build(str(tmp_path / "Folder"))
    search = difPy.search(dif)
    assert groups_of(search.result) == {frozenset(c["a"]), frozenset(c["b"])}
    # keys are never lower quality; every member is
    assert set(search.lower_quality) == members_of(search.result)
    assert not set(search.result) & set(search.lower_quality)
    assert search.stats["process"]["search"]["files_searched"] == 8
    assert search.stats["process"]["search"]["matches_found"] == {"duplicates": 3, "similar": 0}

    similar = difPy.search(dif, similarity="similar")
    assert groups_of(similar.result) == {frozenset(c["a"]), frozenset(c["b+"])}
    assert similar.stats["process"]["search"]["matches_found"]["similar"] == 1


def test_several_folders_as_arguments_and_as_a_list(tmp_path: Path) -> None:
    c1 = corpus(tmp_path / "Folder1", base=0)
    c2 = corpus(tmp_path / "Folder2", base=0)  # same seeds: duplicates across folders
    f1, f2 = str(tmp_path / "Folder1"), str(tmp_path / "Folder2")
    by_args = difPy.search(difPy.build(f1, f2))
    by_list = difPy.search(difPy.build([f1, f2]))
    pairs = {frozenset({real(Path(f1) / n), real(Path(f2) / n)})
             for n in ("b_bright.png", "c.png", "d.png")}
    expected = {frozenset(c1["a"] | c2["a"]), frozenset(c1["b"] | c2["b"]), *pairs}
    assert groups_of(by_args.result) == expected
    assert by_list.result == by_args.result
    assert by_list.lower_quality == by_args.lower_quality
    assert by_args.stats["directory"] == sorted([f1, f2])


def test_in_folder_searches_each_folder_alone(tmp_path: Path) -> None:
    c1 = corpus(tmp_path / "Folder1", base=0)
    c2 = corpus(tmp_path / "Folder2", base=0)
    f1, f2 = str(tmp_path / "Folder1"), str(tmp_path / "Folder2")
    search = difPy.search(difPy.build([f1, f2], in_folder=True))
    assert set(search.result) == {real(f1), real(f2)}
    assert groups_of(search.result[real(f1)]) == {frozenset(c1["a"]), frozenset(c1["b"])}
    assert groups_of(search.result[real(f2)]) == {frozenset(c2["a"]), frozenset(c2["b"])}


def test_move_to(tmp_path: Path) -> None:
    c = corpus(tmp_path / "Folder")
    search = difPy.search(difPy.build(str(tmp_path / "Folder"), show_progress=False),
                          show_progress=False)
    lower = list(search.lower_quality)
    assert len(lower) == 3
    dest = tmp_path / "Duplicates"
    search.move_to(str(dest))
    for p in lower:
        assert not os.path.exists(p)
    assert len(search.lower_quality) == 3
    for p in search.lower_quality:
        assert Path(p).is_file() and real(p).startswith(real(dest) + os.sep)
    for key in search.result:  # every kept file survives
        assert Path(key).is_file()
    assert sum(1 for p in c["a"] | c["b"] if os.path.exists(p)) == 2


def test_delete_silent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c = corpus(tmp_path / "Folder")
    dif = difPy.build(str(tmp_path / "Folder"), show_progress=False)
    search = difPy.search(dif, show_progress=False)
    lower = list(search.lower_quality)
    search.delete(silent_del=True)
    assert not any(os.path.exists(p) for p in lower)
    assert all(os.path.exists(k) for k in search.result)
    assert sum(1 for p in c["a"] | c["b"] if os.path.exists(p)) == 2
    # the catalog followed: a fresh build + search finds nothing left to delete
    again = difPy.search(difPy.build(str(tmp_path / "Folder"), show_progress=False),
                         show_progress=False)
    assert again.result == {} and again.lower_quality == []
    again.delete(silent_del=True)  # nothing to delete is a message, not difPy's crash
    assert "Deleted 0 file(s)" in capsys.readouterr().out


def test_tensor_dictionary(tmp_path: Path) -> None:
    corpus(tmp_path / "Folder")
    dif = difPy.build(str(tmp_path / "Folder"), px_size=32, show_progress=False)
    tensors = dif._tensor_dictionary
    names = dif._filename_dictionary
    shapes = dif._id_to_shape_dictionary
    assert set(tensors) == set(names) == set(shapes) == set(range(8))
    with difPy.Index.open(os.environ["DIFPY_INDEX_CATALOG"]) as idx:
        for i, t in tensors.items():
            assert t.dtype == np.uint8 and t.shape == (32, 32, 3)
            assert np.array_equal(t, idx.tensor(names[i], px_size=32))
    by_name = {Path(n).name: i for i, n in names.items()}
    # difPy's shape is the decoded array's (height, width, channels)
    assert shapes[by_name["d.png"]] == (30, 40, 3)
    # an image equal to a's pixels resized the way difPy does
    expected = np.asarray(Image.fromarray(image_array(1)).resize((32, 32), Image.BICUBIC))
    assert np.array_equal(tensors[by_name["a.png"]], expected)
    assert "notes.txt" not in {Path(n).name for n in names.values()}


# -- the catalog makes the second build incremental --------------------------------------
def test_second_build_decodes_nothing(tmp_path: Path) -> None:
    corpus(tmp_path / "Folder")
    (tmp_path / "Folder" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    first = difPy.build(str(tmp_path / "Folder"), show_progress=False)
    b1 = first.stats["process"]["build"]
    assert (b1["decoded"], b1["reused"]) == (9, 0)
    assert b1["invalid_files"]["count"] == 1 and b1["total_files"]["count"] == 9
    second = difPy.build(str(tmp_path / "Folder"), show_progress=False)
    b2 = second.stats["process"]["build"]
    assert (b2["decoded"], b2["reused"], b2["removed"]) == (0, 9, 0)
    assert b2["invalid_files"] == b1["invalid_files"]
    assert second._filename_dictionary == first._filename_dictionary
    # a new file is the only one decoded; a deleted one is removed
    write_image(tmp_path / "Folder" / "e.png", seed=99)
    os.remove(tmp_path / "Folder" / "c.png")
    b3 = difPy.build(str(tmp_path / "Folder"), show_progress=False).stats["process"]["build"]
    assert (b3["decoded"], b3["reused"], b3["removed"]) == (1, 8, 1)


def test_catalog_parameter(tmp_path: Path, _catalog_env: Path) -> None:
    corpus(tmp_path / "Folder")
    own = tmp_path / "own.sqlite"
    dif = difPy.build(str(tmp_path / "Folder"), catalog=own, show_progress=False)
    assert own.is_file() and not _catalog_env.exists()
    assert dif.stats["process"]["build"]["catalog"] == str(own)


def test_recursive_false_sees_only_the_top_folder(tmp_path: Path) -> None:
    corpus(tmp_path / "Folder")
    corpus(tmp_path / "Folder" / "sub", base=10)
    deep = difPy.build(str(tmp_path / "Folder"), show_progress=False)
    flat = difPy.build(str(tmp_path / "Folder"), recursive=False, show_progress=False)
    assert len(deep._filename_dictionary) == 16
    assert len(flat._filename_dictionary) == 8
    assert flat.stats["process"]["build"]["decoded"] == 0  # the catalog already has them


def test_recursive_false_search_ignores_catalogued_subfolders(tmp_path: Path) -> None:
    c = corpus(tmp_path / "Folder")
    corpus(tmp_path / "Folder" / "sub", base=0)  # same pictures one level down
    difPy.build(str(tmp_path / "Folder"), show_progress=False)  # catalog holds both levels
    flat = difPy.search(difPy.build(str(tmp_path / "Folder"), recursive=False,
                                    show_progress=False), show_progress=False)
    assert groups_of(flat.result) == {frozenset(c["a"]), frozenset(c["b"])}


# -- difPy's parameter checks ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {}, "no directory provided"),
        ((5,), {}, "must be of type LIST or STRING"),
        ((["x", 5],), {}, "must be of type LIST or STRING"),
        (("{d}", "{d}"), {}, "compare a directory with itself"),
        (("{d}",), {"recursive": "yes"}, 'Invalid value for "recursive" parameter: must be of type BOOL.'),
        (("{d}",), {"in_folder": 1}, '"in_folder" parameter: must be of type BOOL'),
        (("{d}",), {"limit_extensions": None}, '"limit_extensions" parameter'),
        (("{d}",), {"px_size": 9}, f"must be between 10 and {MAX_PX_SIZE}"),
        (("{d}",), {"px_size": MAX_PX_SIZE + 1}, f"must be between 10 and {MAX_PX_SIZE}"),
        (("{d}",), {"px_size": 5000}, f"must be between 10 and {MAX_PX_SIZE}"),
        (("{d}",), {"px_size": 50.0}, '"px_size" parameter: must be of type INT'),
        (("{d}",), {"show_progress": "no"}, '"show_progress" parameter'),
        (("{d}",), {"processes": 0}, '"processes" parameter: must be >= 1'),
        (("{d}",), {"processes": "2"}, '"processes" parameter: must be of type INT'),
    ],
)
def test_build_parameter_checks(tmp_path: Path, args: tuple, kwargs: dict, message: str) -> None:
    d = str(tmp_path)
    args = tuple(a.format(d=d) if isinstance(a, str) else a for a in args)
    with pytest.raises(UsageError, match=_re(message)):
        difPy.build(*args, **kwargs)
    assert not Path(os.environ["DIFPY_INDEX_CATALOG"]).exists()  # nothing was written


def _re(text: str) -> str:
    import re

    return re.escape(text)


NOT_BOOL = st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=5), st.none(),
                    st.lists(st.booleans(), max_size=2))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["recursive", "in_folder", "limit_extensions", "show_progress"]),
       value=NOT_BOOL)
def test_build_bool_parameters_accept_only_bool(tmp_path: Path, name: str, value: object) -> None:
    with pytest.raises(UsageError, match=_re(f'Invalid value for "{name}" parameter: must be of type BOOL.')):
        difPy.build(str(tmp_path), **{name: value})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(px=st.integers(min_value=-10, max_value=6000))
def test_px_size_range(tmp_path: Path, px: int) -> None:
    """Valid iff 10 <= px <= MAX_PX_SIZE (difPy: 5000; ours is bounded so that the catalog
    and a search stay bounded, docs/migrating.md); a valid one builds (an empty folder)."""
    empty = tmp_path / "empty"
    empty.mkdir(exist_ok=True)
    if 10 <= px <= MAX_PX_SIZE:
        dif = difPy.build(str(empty), px_size=px, show_progress=False)
        assert dif.stats["process"]["build"]["parameters"]["px_size"] == px
        assert dif._tensor_dictionary == {}
    else:
        with pytest.raises(UsageError, match=f"must be between 10 and {MAX_PX_SIZE}"):
            difPy.build(str(empty), px_size=px, show_progress=False)


def test_build_checks_run_in_difpys_order(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="recursive"):
        difPy.build(str(tmp_path), recursive=1, px_size=1, processes=0)
    with pytest.raises(UsageError, match="px_size"):
        difPy.build(str(tmp_path), px_size=1, processes=0)


def test_missing_directory_is_a_usage_error_and_a_file_not_found(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=_re(f'Directory "{missing}" does not exist')):
        difPy.build(missing)
    with pytest.raises(UsageError):
        difPy.build([str(tmp_path), missing])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"similarity": "low"}, 'Since difPy v3.0.8, "similarity" parameter only accepts'),
        ({"similarity": "fuzzy"}, 'Invalid value for "similarity" parameter'),
        ({"similarity": -1}, 'Invalid value for "similarity" parameter'),
        ({"similarity": float("nan")}, 'Invalid value for "similarity" parameter'),
        ({"rotate": "True"}, '"rotate" parameter: must be of type BOOL'),
        ({"same_dim": 0}, '"same_dim" parameter: must be of type BOOL'),
        ({"lazy": "yes"}, '"lazy" parameter: must be of type BOOL'),
        ({"same_dim": True, "lazy": False}, 'renamed to "same_dim"'),
        ({"show_progress": None}, '"show_progress" parameter'),
        ({"processes": -2}, '"processes" parameter: must be >= 1'),
        ({"chunksize": 0}, '"chunksize" parameter: must be >= 1'),
        ({"chunksize": "10"}, '"chunksize" parameter: must be of type INT or None'),
    ],
)
def test_search_parameter_checks(tmp_path: Path, kwargs: dict, message: str) -> None:
    write_image(tmp_path / "f" / "a.png", seed=1)
    dif = difPy.build(str(tmp_path / "f"), show_progress=False)
    with pytest.raises(UsageError, match=_re(message)):
        difPy.search(dif, **kwargs)


def test_search_needs_a_build() -> None:
    with pytest.raises(UsageError, match="difpy_obj"):
        difPy.search("not a build")


def test_unknown_kwargs_are_ignored_like_difpy(tmp_path: Path) -> None:
    write_image(tmp_path / "f" / "a.png", seed=1)
    dif = difPy.build(str(tmp_path / "f"), show_progress=False, logs=True)
    assert len(dif._filename_dictionary) == 1


# -- lazy / same_dim, stats ownership, progress --------------------------------------------
def test_lazy_is_same_dim(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.mkdir()
    smooth(32, 24).save(f / "a.png")  # the same gradient at twice the size: mse about 1.8
    smooth(64, 48).save(f / "a_big.png")
    dif = difPy.build(str(f), show_progress=False)
    strict = difPy.search(dif, similarity="similar", show_progress=False)
    assert strict.result == {} and strict.stats["process"]["search"]["parameters"]["same_dim"]
    loose = difPy.search(dif, similarity="similar", same_dim=False, show_progress=False)
    by_lazy = difPy.search(dif, similarity="similar", lazy=False, show_progress=False)
    at_build = difPy.search(difPy.build(str(f), lazy=False, show_progress=False),
                            similarity="similar", show_progress=False)
    assert groups_of(loose.result) == {frozenset({real(f / "a.png"), real(f / "a_big.png")})}
    assert by_lazy.result == loose.result == at_build.result
    assert next(iter(loose.result)) == real(f / "a_big.png")  # more pixels: the key


def test_search_stats_are_copies(tmp_path: Path) -> None:
    corpus(tmp_path / "Folder")
    dif = difPy.build(str(tmp_path / "Folder"), show_progress=False)
    before = repr(dif.stats)
    s1 = difPy.search(dif, show_progress=False)
    s2 = difPy.search(dif, similarity=3.5, chunksize=7, show_progress=False)
    assert repr(dif.stats) == before  # difPy's bug 16: the search wrote into the build
    assert s1.stats is not dif.stats and s1.stats is not s2.stats
    p1 = s1.stats["process"]["search"]["parameters"]
    p2 = s2.stats["process"]["search"]["parameters"]
    assert (p1["similarity_mse"], p1["chunksize"]) == (0, None)
    assert (p2["similarity_mse"], p2["chunksize"]) == (3.5, 7)
    assert s1.stats["process"]["build"] == dif.stats["process"]["build"]


def test_show_progress(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus(tmp_path / "Folder")
    dif = difPy.build(str(tmp_path / "Folder"))
    difPy.search(dif)
    out = capsys.readouterr().out
    assert "difPy preparing files: [100%]" in out and "difPy searching files: [100%]" in out
    difPy.search(difPy.build(str(tmp_path / "Folder"), show_progress=False), show_progress=False)
    assert capsys.readouterr().out == ""


# -- against real difPy 4.2.1 --------------------------------------------------------------
@pytest.mark.parametrize("similarity", ["duplicates", "similar"])
def test_same_groups_as_difpy(tmp_path: Path, similarity: str) -> None:
    real_difpy = pytest.importorskip("difPy")
    corpus(tmp_path / "One", base=0)
    corpus(tmp_path / "Two", base=20)
    write_image(tmp_path / "Two" / "dup_of_one_a.png", seed=1)  # across the two folders
    dirs = [real(tmp_path / "One"), real(tmp_path / "Two")]
    theirs = real_difpy.search(
        real_difpy.build(dirs, show_progress=False, processes=1),
        similarity=similarity, show_progress=False, processes=1,
    )
    ours = difPy.search(difPy.build(dirs, show_progress=False), similarity=similarity,
                        show_progress=False)
    their_groups = {frozenset(real(p) for p in g) for g in groups_of(theirs.result)}
    assert len(their_groups) == 4
    assert groups_of(ours.result) == their_groups
    # both keep exactly one file per group (which one differs: difPy ranks by W+H and
    # then by the greatest path, and may list a key as lower quality)
    assert len(set(theirs.lower_quality)) == len(ours.lower_quality) == sum(
        len(g) - 1 for g in their_groups
    )


# -- no ``if __name__ == "__main__"`` needed ------------------------------------------------
@pytest.mark.slow
def test_script_without_main_guard(tmp_path: Path) -> None:
    folder = tmp_path / "pics"
    for i in range(12):
        write_image(folder / f"img{i:02d}.png", seed=i % 6)  # 6 pairs
    script = tmp_path / "dedupe.py"
    script.write_text(textwrap.dedent(f"""
        import difpy_index as difPy
        print("script body ran")
        dif = difPy.build({str(folder)!r}, processes=2, show_progress=False)
        search = difPy.search(dif, processes=2, show_progress=False)
        print("decoded", dif.stats["process"]["build"]["decoded"])
        print("groups", len(search.result))
    """))
    env = {**os.environ, "DIFPY_INDEX_CATALOG": str(tmp_path / "c.sqlite")}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines.count("script body ran") == 1  # workers never re-ran the script
    assert "decoded 12" in lines and "groups 6" in lines
