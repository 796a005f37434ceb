"""difPy's own command line (``python -m difpy_index.dif``), run as a real subprocess (issue 18).

Each run is checked against the Python drop-in (``difpy_compat.build``/``search`` in this
process, on the same folders and a separate catalog): the three ``difPy_<stamp>_*.json``
files must hold the same result, lower-quality list and stats (timings aside).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import write_image
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import difpy_index
from difpy_index import difpy_compat
from difpy_index.dif import build_parser, int_or_str, str_to_bool
from difpy_index.errors import UsageError
from difpy_index.params import NEAR_THRESHOLD
from difpy_index.results import write_difpy_files

SRC = str(Path(difpy_index.__file__).resolve().parent.parent)  # the code under test


def run_dif(*args: object, cwd: Path, catalog: Path,
            stdin: int = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DIFPY_INDEX_CATALOG": str(catalog),
           "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    return subprocess.run(
        [sys.executable, "-m", "difpy_index.dif", *map(os.fspath, args)],
        cwd=cwd, env=env, stdin=stdin, capture_output=True, text=True, timeout=180, check=False,
    )


def corpus(root: Path) -> dict[str, Path]:
    """Folder A: an exact copy, a one-level-brighter copy (similar, mse 1), a 90-degree
    copy, a copy in a subfolder, an upscaled copy (other dimensions) and a text file.
    Folder B: a copy of A's picture and an unrelated one."""
    a, b = root / "A", root / "B"
    p = {
        "a": Path(write_image(a / "a.png", seed=1)),
        "b": Path(write_image(a / "b.png", seed=2)),
        "b_other": Path(write_image(b / "c.png", seed=3)),
    }
    p["a_copy"] = a / "a_copy.png"
    shutil.copy(p["a"], p["a_copy"])
    img = np.asarray(Image.open(p["b"]).convert("RGB")).astype(np.int16)
    p["b_bright"] = a / "b_bright.png"
    Image.fromarray(np.clip(img + 1, 0, 255).astype(np.uint8), "RGB").save(p["b_bright"])
    p["a_rot"] = a / "a_rot.png"
    Image.open(p["a"]).transpose(Image.Transpose.ROTATE_90).save(p["a_rot"])
    p["a_sub"] = a / "sub" / "a_sub.png"
    p["a_sub"].parent.mkdir()
    shutil.copy(p["a"], p["a_sub"])
    p["a_big"] = a / "a_big.png"
    Image.open(p["a"]).resize((64, 48), Image.Resampling.BICUBIC).save(p["a_big"])
    (a / "notes.txt").write_text("not an image")
    p["B_a"] = b / "a.png"
    shutil.copy(p["a"], p["B_a"])
    return {k: Path(os.path.realpath(v)) for k, v in p.items()}


def outputs(folder: Path) -> dict[str, dict[str, Any]]:
    """{stem: {"results": ..., "lower_quality": ..., "stats": ...}} of the difPy files."""
    runs: dict[str, dict[str, Any]] = {}
    for f in sorted(folder.glob("difPy_*.json")):
        for part in ("results", "lower_quality", "stats"):
            if f.name.endswith(f"_{part}.json"):
                stem = f.name[: -len(f"_{part}.json")]
                runs.setdefault(stem, {})[part] = json.loads(f.read_text())
    return runs


def only_run(folder: Path) -> dict[str, Any]:
    runs = outputs(folder)
    assert len(runs) == 1, sorted(runs)
    (run,) = runs.values()
    assert set(run) == {"results", "lower_quality", "stats"}
    return run


def comparable(stats: dict[str, Any]) -> dict[str, Any]:
    """Stats without what differs between two runs of the same search (times, catalog)."""
    out = json.loads(json.dumps(stats))
    for step in out["process"].values():
        step.pop("duration", None)
        step.pop("catalog", None)
    return out


def drop_in(dirs: list[str], catalog: Path, build_kw: dict[str, Any],
            search_kw: dict[str, Any]) -> difpy_compat.Search:
    dif = difpy_compat.build(dirs, catalog=catalog, show_progress=False, **build_kw)
    return difpy_compat.search(dif, show_progress=False, **search_kw)


def assert_same_as_drop_in(run: dict[str, Any], se: difpy_compat.Search) -> None:
    assert run["results"] == json.loads(json.dumps(se.result))
    assert run["lower_quality"] == se.lower_quality
    assert comparable(run["stats"]) == comparable(se.stats)


def in_groups(result: dict[str, Any], path: Path) -> bool:
    def walk(res: dict[str, Any]) -> bool:
        for k, v in res.items():
            if isinstance(v, dict):
                if walk(v):
                    return True
            elif k == str(path) or any(m[0] == str(path) for m in v):
                return True
        return False

    return walk(result)


# (cli flags, build kwargs, search kwargs, folders, a check that the flag took effect)
CASES: list[tuple[list[str], dict[str, Any], dict[str, Any], list[str], Any]] = [
    (["-s", "similar", "-ro", "False", "-px", "20", "-proc", "1", "-ch", "8", "-p", "no"],
     {"px_size": 20, "processes": 1},
     {"similarity": "similar", "rotate": False, "processes": 1, "chunksize": 8},
     ["A", "B"],
     lambda p, r: in_groups(r, p["b_bright"]) and not in_groups(r, p["a_rot"])),
    (["-i", "TRUE", "-r", "f", "-le", "0", "-dim", "False"],
     {"in_folder": True, "recursive": False, "limit_extensions": False},
     {"same_dim": False},
     ["A", "B"],
     lambda p, r: set(r) == {str(p["a"].parent)} and not in_groups(r, p["a_sub"])),
    (["-s", "5.5", "-la", "False", "-p", "Y"],
     {}, {"similarity": "5.5", "lazy": False}, ["A"],
     lambda p, r: in_groups(r, p["b_bright"]) and in_groups(r, p["a_sub"])),
    (["-s", "near"], {}, {"similarity": "near"}, ["A"],
     lambda p, r: in_groups(r, p["a_rot"])),
    (["-s", "3", "-dim", "yes", "-la", "YES", "-ro", "t", "-r", "1"],
     {}, {"similarity": 3, "same_dim": True, "lazy": True}, ["A"],
     lambda p, r: in_groups(r, p["a_rot"]) and not in_groups(r, p["a_big"])),
]


@pytest.mark.parametrize(("flags", "build_kw", "search_kw", "folders", "took_effect"), CASES,
                         ids=[" ".join(c[0]) for c in CASES])
def test_every_flag_matches_the_python_drop_in(
    tmp_path: Path, flags: list[str], build_kw: dict[str, Any], search_kw: dict[str, Any],
    folders: list[str], took_effect: Any,
) -> None:
    paths = corpus(tmp_path)
    dirs = [str(tmp_path / f) for f in folders]
    out = tmp_path / "out"
    res = run_dif("-D", *dirs, "-Z", out, *flags, cwd=tmp_path, catalog=tmp_path / "cli.sqlite")
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    run = only_run(out)
    se = drop_in(dirs, tmp_path / "py.sqlite", build_kw, search_kw)
    assert_same_as_drop_in(run, se)
    assert took_effect(paths, run["results"]), run["results"]
    # difPy's closing lines: the three names, then where they are
    stem = next(iter(outputs(out)))
    names = [f"{stem}_{p}.json" for p in ("results", "lower_quality", "stats")]
    assert res.stdout.endswith("\n" + "\n".join(names) + f"\n\nsaved in '{out.resolve()}'.\n")
    shown = "difPy preparing files: [100%]" in res.stdout
    assert shown == ("-p" not in flags or flags[flags.index("-p") + 1].lower() in ("y", "yes"))


def test_working_directory_default_and_second_run_decodes_nothing(tmp_path: Path) -> None:
    paths = corpus(tmp_path)
    a = paths["a"].parent
    catalog = tmp_path / "cli.sqlite"
    se = drop_in([str(a)], tmp_path / "py.sqlite", {}, {})  # before the run adds its files
    first = run_dif(cwd=a, catalog=catalog)  # no -D, no -Z: the working directory
    assert first.returncode == 0, first.stderr
    run1 = only_run(a)
    assert run1["stats"]["directory"] == [str(a)]
    assert_same_as_drop_in(run1, se)
    build1 = run1["stats"]["process"]["build"]
    assert build1["decoded"] == 7 and build1["reused"] == 0

    second = run_dif("-p", "False", cwd=a, catalog=catalog)
    assert second.returncode == 0, second.stderr
    runs = outputs(a)
    assert len(runs) == 2  # 6 distinct files, whatever second they were written in
    assert len(list(a.glob("difPy_*.json"))) == 6
    run2 = next(r for stem, r in runs.items() if r["stats"] != run1["stats"])
    build2 = run2["stats"]["process"]["build"]
    assert build2["decoded"] == 0 and build2["reused"] == 7
    assert run2["results"] == run1["results"]
    assert run2["lower_quality"] == run1["lower_quality"]


def test_output_directory_is_created(tmp_path: Path) -> None:
    corpus(tmp_path)
    out = tmp_path / "not" / "yet" / "there"
    res = run_dif("-D", tmp_path / "A", "-Z", out, "-p", "false", cwd=tmp_path,
                  catalog=tmp_path / "cli.sqlite")
    assert res.returncode == 0, res.stderr
    assert out.is_dir()
    only_run(out)
    assert not list(tmp_path.glob("difPy_*"))  # nothing in the working directory


def test_runs_never_overwrite_existing_files(tmp_path: Path) -> None:
    """Decoys for every stamp of the next minutes: the run takes the '-2' stem, the decoys
    stay byte-for-byte as they were (two runs in the same second collide the same way)."""
    corpus(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    now = time.time()
    decoys = {}
    for s in range(-2, 300):
        f = out / f"difPy_{time.strftime('%Y%m%d%H%M%S', time.localtime(now + s))}_stats.json"
        f.write_text("decoy")
        decoys[f] = "decoy"
    res = run_dif("-D", tmp_path / "A", "-Z", out, cwd=tmp_path, catalog=tmp_path / "c.sqlite")
    assert res.returncode == 0, res.stderr
    assert all(f.read_text() == text for f, text in decoys.items())
    new = sorted(set(out.glob("difPy_*.json")) - set(decoys))
    assert len(new) == 3
    stems = {f.name.rsplit("_", 1)[0].removesuffix("_lower") for f in new}
    assert len(stems) == 1 and next(iter(stems)).endswith("-2"), new


def test_write_difpy_files_twice_in_one_second(tmp_path: Path) -> None:
    payload = {"result": {"k": [["m", 0.0]]}, "lower_quality": ["m"], "stats": {"n": 1}}
    first = write_difpy_files(payload, tmp_path, stamp="20260101000000")
    second = write_difpy_files({**payload, "lower_quality": []}, tmp_path, stamp="20260101000000")
    third = write_difpy_files(payload, tmp_path / "new", stamp="20260101000000")
    assert [p.name for p in first] == [f"difPy_20260101000000_{n}.json"
                                       for n in ("results", "lower_quality", "stats")]
    assert [p.name for p in second] == [f"difPy_20260101000000-2_{n}.json"
                                        for n in ("results", "lower_quality", "stats")]
    assert len(set(first) | set(second)) == 6
    assert json.loads(first[1].read_text()) == ["m"]
    assert json.loads(second[1].read_text()) == []
    assert third[0].parent == (tmp_path / "new").resolve()
    # a taken name in the middle of the set moves the whole set to the next stem
    (tmp_path / "difPy_20260101000001_lower_quality.json").write_text("mine")
    fourth = write_difpy_files(payload, tmp_path, stamp="20260101000001")
    assert {p.name.split("_")[1] for p in fourth} == {"20260101000001-2"}
    assert (tmp_path / "difPy_20260101000001_lower_quality.json").read_text() == "mine"
    assert not (tmp_path / "difPy_20260101000001_results.json").exists()


def test_move_to_moves_the_lower_quality_files(tmp_path: Path) -> None:
    paths = corpus(tmp_path)
    dest = tmp_path / "dest"
    res = run_dif("-D", tmp_path / "A", "-mv", dest, "-Z", tmp_path / "out", "-p", "False",
                  cwd=tmp_path, catalog=tmp_path / "cli.sqlite")
    assert res.returncode == 0, res.stderr
    run = only_run(tmp_path / "out")
    lower = [Path(p) for p in run["lower_quality"]]
    assert {paths["a_copy"], paths["a_sub"]} <= set(lower)
    assert all(not p.exists() for p in lower)
    assert all(Path(k).exists() for k in run["results"])
    moved = sorted(f.name for f in dest.rglob("*.png"))
    assert len(moved) == len(lower)
    assert f"Moved {len(lower)} file(s)" in res.stdout


def test_move_into_the_searched_folder_is_refused_before_any_output(tmp_path: Path) -> None:
    paths = corpus(tmp_path)
    res = run_dif("-D", tmp_path / "A", "-mv", tmp_path / "A" / "dups", "-Z", tmp_path / "out",
                  "-p", "False", cwd=tmp_path, catalog=tmp_path / "cli.sqlite")
    assert res.returncode == 2, res.stderr
    assert "inside" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert all(p.exists() for p in paths.values())
    assert not (tmp_path / "A" / "dups").exists()


def test_delete_silently(tmp_path: Path) -> None:
    paths = corpus(tmp_path)
    res = run_dif("-D", tmp_path / "A", "-d", "True", "-sd", "True", "-Z", tmp_path / "out",
                  "-p", "False", cwd=tmp_path, catalog=tmp_path / "cli.sqlite")
    assert res.returncode == 0, res.stderr
    run = only_run(tmp_path / "out")
    assert str(paths["a_copy"]) in run["lower_quality"]
    assert all(not Path(p).exists() for p in run["lower_quality"])
    assert all(Path(k).exists() for k in run["results"])
    assert paths["b"].exists() and paths["b_bright"].exists()  # not duplicates: kept
    assert f"Deleted {len(run['lower_quality'])} file(s)" in res.stdout


def test_delete_without_terminal_or_silent_del_refuses(tmp_path: Path) -> None:
    paths = corpus(tmp_path)
    res = run_dif("-D", tmp_path / "A", "-d", "True", "-Z", tmp_path / "out", cwd=tmp_path,
                  catalog=tmp_path / "cli.sqlite")
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "-sd True" in res.stderr
    assert all(p.exists() for p in paths.values())
    assert not list((tmp_path / "out").glob("difPy_*"))


@pytest.mark.parametrize("answer", ["n", "y"])
def test_delete_asks_difpys_question_on_a_terminal(tmp_path: Path, answer: str) -> None:
    pty = pytest.importorskip("pty", reason="needs a pseudo-terminal (POSIX)")
    paths = corpus(tmp_path)
    master, slave = pty.openpty()
    try:
        os.write(master, f"{answer}\n".encode())  # typed ahead; read by input()
        res = run_dif("-D", tmp_path / "A", "-d", "True", "-Z", tmp_path / "out", "-p", "0",
                      cwd=tmp_path, catalog=tmp_path / "cli.sqlite", stdin=slave)
    finally:
        os.close(slave)
        os.close(master)
    assert res.returncode == 0, res.stderr
    assert "Are you sure you want to delete all lower quality matched images?" in res.stdout
    run = only_run(tmp_path / "out")
    assert str(paths["a_copy"]) in run["lower_quality"]
    gone = [not Path(p).exists() for p in run["lower_quality"]]
    if answer == "y":
        assert all(gone) and f"Deleted {len(gone)} file(s)" in res.stdout
    else:
        assert not any(gone) and "Deletion canceled." in res.stdout


BAD: list[tuple[list[str], str]] = [
    (["-r", "maybe"], "Boolean value expected"),
    (["-sd", "2"], "Boolean value expected"),
    (["-px", "abc"], "invalid int value"),
    (["-px", "5"], '"px_size"'),
    (["-s", "-1"], '"similarity"'),
    (["-s", "low"], "v3.0.8"),
    (["-s", "everything"], '"similarity"'),
    (["-proc", "0"], '"processes"'),
    (["-proc", "many"], '"processes"'),
    (["-ch", "0"], '"chunksize"'),
    (["-ch", "big"], '"chunksize"'),
    (["-D", "{missing}"], "does not exist"),
    (["-D", "{A}", "{A}"], "itself"),
    (["-dim", "True", "-la", "False"], "lazy"),
    (["-mv", "{tmp}/dest", "-d", "True"], "mutually exclusive"),
    (["-Z", "{A}/a.png"], "not a directory"),
    (["--no-such-flag"], "unrecognized"),
]


@pytest.mark.parametrize(("flags", "fragment"), BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_values_are_one_line_and_exit_2(tmp_path: Path, flags: list[str], fragment: str) -> None:
    corpus(tmp_path)
    a = tmp_path / "A"
    args = [f.format(A=a, tmp=tmp_path, missing=tmp_path / "missing") for f in flags]
    if "-D" not in args:
        args = ["-D", str(a), *args]
    catalog = tmp_path / "cli.sqlite"
    res = run_dif(*args, cwd=tmp_path, catalog=catalog)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert res.stderr.count("\n") == 1, res.stderr
    assert fragment in res.stderr and "Traceback" not in res.stderr
    # refused before touching anything: no catalog, no output, no move
    assert not catalog.exists()
    assert not list(tmp_path.rglob("difPy_*"))
    assert not (tmp_path / "dest").exists()


# -- parsing, as difPy parses -----------------------------------------------------------
TRUE_WORDS, FALSE_WORDS = ["yes", "true", "t", "y", "1"], ["no", "false", "f", "n", "0"]


@st.composite
def any_case(draw: st.DrawFn, words: list[str]) -> str:
    word = draw(st.sampled_from(words))
    flips = draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    return "".join(c.upper() if f else c for c, f in zip(word, flips, strict=True))


@given(any_case(TRUE_WORDS), any_case(FALSE_WORDS))
def test_booleans_any_case(yes: str, no: str) -> None:
    assert str_to_bool(yes) is True and str_to_bool(no) is False
    args = build_parser().parse_args(["-r", no, "-d", yes, "-sd", yes, "-p", no, "-dim", no])
    assert (args.recursive, args.delete, args.silent_del, args.show_progress, args.same_dim) == (
        False, True, True, False, False)


@given(st.text(max_size=8))
def test_anything_else_is_not_a_boolean(text: str) -> None:
    if text.lower() in TRUE_WORDS + FALSE_WORDS:
        return
    with pytest.raises(argparse.ArgumentTypeError):
        str_to_bool(text)
    with pytest.raises(UsageError):
        build_parser().parse_args(["-ro", text])


@given(st.integers(min_value=-10**6, max_value=10**6))
def test_similarity_integers_become_int(n: int) -> None:
    assert build_parser().parse_args(["-s", str(n)]).similarity == n
    if n >= 0:
        assert difpy_compat.check_search_args(n) == n
    else:
        with pytest.raises(UsageError, match='"similarity"'):
            difpy_compat.check_search_args(n)


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False).filter(lambda f: not f.is_integer()))
def test_similarity_decimals_stay_strings_and_are_accepted(x: float) -> None:
    value = build_parser().parse_args(["-s", repr(x)]).similarity
    assert value == repr(x)  # int() refuses it, so difPy keeps the string
    assert difpy_compat.check_search_args(value) == x


@given(st.text(min_size=1, max_size=10))
def test_similarity_words(text: str) -> None:
    value = int_or_str(text)
    try:
        assert value == int(text)
    except ValueError:
        assert value == text
    presets = {"duplicates": 0.0, "similar": 5.0, "near": NEAR_THRESHOLD}
    if text.strip().lower() in presets:
        assert difpy_compat.check_search_args(value) == presets[text.strip().lower()]


def test_keywords() -> None:
    p = build_parser()
    with pytest.raises(SystemExit) as exc:
        p.parse_args(["-h"])
    assert exc.value.code == 0
    assert p.parse_args(["-s", "similar"]).similarity == "similar"
    assert p.parse_args([]).similarity == "duplicates"
    assert p.parse_args([]).directory is None  # the working directory, resolved at run time
    assert p.parse_args(["--directory", "x", "y"]).directory == ["x", "y"]
    assert p.parse_args(["--lazy", "no"]).lazy is False
