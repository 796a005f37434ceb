"""Index.search / Index.query and the `search` / `query` commands, end to end on real files.

The search core (match.py) is checked against a brute-force reference in test_search.py;
these tests check what the catalog, the result shapes and the CLI add around it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import imagefactory as imf
import numpy as np
import pytest
from PIL import Image

from difpy_index import Index, NotIndexedError, UsageError

sys.path.insert(0, str(Path(__file__).parent / "benchmarks"))
from bench_quality import result_pairs as pairs


def real(p: Path) -> str:
    return os.path.realpath(p)


@pytest.fixture
def library(tmp_path: Path) -> dict[str, Path]:
    """Two folders: exact copies, a rotated copy, a half-size copy, a +16 brightness copy,
    and unrelated images; one copy pair spans both folders."""
    a, b = tmp_path / "lib" / "a", tmp_path / "lib" / "b"
    a.mkdir(parents=True)
    b.mkdir()
    base = imf.synthetic(1, 96, 64)
    files = {
        "orig": a / "orig.png",
        "copy": a / "copy.png",
        "rot": a / "rot.png",
        "half": a / "half.png",
        "bright": a / "bright.png",
        "other": a / "other.png",
        "twin_a": a / "twin.png",
        "twin_b": b / "twin.png",
        "other_b": b / "other_b.png",
    }
    base.save(files["orig"])
    base.save(files["copy"])
    base.transpose(Image.Transpose.ROTATE_270).save(files["rot"])
    imf.resized(base, 0.5).save(files["half"])
    arr = np.asarray(base).astype(np.int16)
    Image.fromarray(np.clip(arr + 16, 0, 255).astype(np.uint8)).save(files["bright"])
    imf.synthetic(2, 96, 64).save(files["other"])
    imf.synthetic(3, 80, 80).save(files["twin_a"])
    imf.synthetic(3, 80, 80).save(files["twin_b"])
    imf.synthetic(4, 80, 80).save(files["other_b"])
    return files


def index_of(tmp_path: Path, root: Path) -> Index:
    idx = Index.open(tmp_path / "c.sqlite")
    idx.update([root], processes=1)
    return idx


def test_duplicates_finds_copies_and_rotations_not_brightness(tmp_path: Path, library: dict) -> None:
    with index_of(tmp_path, tmp_path / "lib") as idx:
        found = idx.search(similarity="duplicates")
    f = {k: real(v) for k, v in library.items()}
    got = pairs(found)
    assert frozenset((f["orig"], f["copy"])) in got
    assert frozenset((f["twin_a"], f["twin_b"])) in got
    # +16 on every channel: difPy's uint8 MSE wraps to 0; the true MSE is about 256
    assert not any(f["bright"] in p for p in got)
    assert not any(f["other"] in p for p in got)
    # lower_quality: every member, sorted, never a key
    keys = set(found.result)
    assert found.lower_quality == sorted(found.lower_quality)
    assert not keys & set(found.lower_quality)
    assert set(found.lower_quality) == {m[0] for ms in found.result.values() for m in ms}
    # stats has the seed docs' shape
    s = found.stats
    assert set(s) >= {"directory", "process"}
    build, search = s["process"]["build"], s["process"]["search"]
    assert set(build) >= {"duration", "parameters", "total_files", "invalid_files"}
    assert set(search) >= {"duration", "parameters", "files_searched", "matches_found"}
    assert search["files_searched"] == len(library)
    assert search["matches_found"]["duplicates"] == len(found.lower_quality)
    assert search["parameters"]["similarity_mse"] == 0


def test_rotated_copy_reports_rotation_that_reproduces_mse(tmp_path: Path, library: dict) -> None:
    with index_of(tmp_path, tmp_path / "lib") as idx:
        found = idx.search(similarity="similar")
        members = {m.path: (g.key, m) for g in found.groups for m in g.members}
        rot = real(library["rot"])
        key = real(library["orig"]) if rot in members else None
        assert rot in members or real(library["orig"]) in members
        if key is None:  # orig and rot tie on pixels: either may be the key
            key, m = rot, members[real(library["orig"])][1]
            member_path = real(library["orig"])
        else:
            key, m = members[rot][0], members[rot][1]
            member_path = rot
        k_t = idx.tensor(key).astype(np.int64)
        m_t = idx.tensor(member_path).astype(np.int64)
    assert m.rotation in (0, 90, 180, 270)
    d = k_t - np.rot90(m_t, m.rotation // 90)
    assert float((d * d).mean()) == pytest.approx(m.mse, abs=1e-12)


def test_resized_copy_needs_same_dim_off(tmp_path: Path, library: dict) -> None:
    half = real(library["half"])
    with index_of(tmp_path, tmp_path / "lib") as idx:
        on = idx.search(similarity="near", same_dim=True)
        near = idx.search(similarity="near")
    assert not any(half in p for p in pairs(on))
    assert frozenset((real(library["orig"]), half)) in pairs(near) and near.same_dim is False
    # the better image (more pixels) is the key, the half-size copy a member
    assert half in near.lower_quality and half not in near.result


def test_lazy_is_an_alias_of_same_dim(tmp_path: Path, library: dict) -> None:
    with index_of(tmp_path, tmp_path / "lib") as idx:
        assert idx.search(similarity="similar", lazy=False).result == idx.search(
            similarity="similar", same_dim=False
        ).result


def test_in_folder_never_groups_across_arguments(tmp_path: Path, library: dict) -> None:
    a, b = tmp_path / "lib" / "a", tmp_path / "lib" / "b"
    with index_of(tmp_path, tmp_path / "lib") as idx:
        union = idx.search([a, b])
        split = idx.search([a, b], in_folder=True)
    assert frozenset((real(library["twin_a"]), real(library["twin_b"]))) in pairs(union)
    assert set(split.result) == {real(a)}  # b has no group of its own: left out
    for folder, groups in split.result.items():
        for key, members in groups.items():
            assert key.startswith(folder + os.sep)
            assert all(m[0].startswith(folder + os.sep) for m in members)


def test_search_outside_indexed_roots_is_a_usage_error(tmp_path: Path, library: dict, cli) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with index_of(tmp_path, tmp_path / "lib") as idx, pytest.raises(NotIndexedError, match="update"):
        idx.search([elsewhere])
    cli.catalog = tmp_path / "c.sqlite"
    res = cli("search", elsewhere, "--json")
    assert res.exit_code == 2
    assert "update" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("bad", ["-1", "nan", "inf", "lots", "low"])
def test_bad_similarity_is_exit_2(tmp_path: Path, library: dict, cli, bad: str) -> None:
    index_of(tmp_path, tmp_path / "lib").close()
    cli.catalog = tmp_path / "c.sqlite"
    res = cli("search", "-s", bad, "--json")
    assert res.exit_code == 2, res.stderr
    assert res.stdout == ""


def test_px_size_not_cached_is_a_clear_error(tmp_path: Path, library: dict) -> None:
    with index_of(tmp_path, tmp_path / "lib") as idx, pytest.raises(UsageError, match="--px-size 64"):
        idx.search(px_size=64)


def test_cli_search_writes_difpy_files_and_json(tmp_path: Path, library: dict, cli) -> None:
    index_of(tmp_path, tmp_path / "lib").close()
    cli.catalog = tmp_path / "c.sqlite"
    out = tmp_path / "out"
    res = cli("search", "-Z", out)
    assert res.exit_code == 0, res.stderr
    names = sorted(p.name.split("_", 2)[2] for p in out.iterdir())
    assert names == ["lower_quality.json", "results.json", "stats.json"]
    results = json.loads(next(out.glob("*_results.json")).read_text())
    res_json = cli("search", "--json")
    payload = json.loads(res_json.stdout)  # one JSON object and nothing else on stdout
    assert set(payload) >= {"result", "lower_quality", "stats", "details"}
    assert payload["result"] == results
    for d in payload["details"]:
        assert set(d) == {"key", "key_orientation", "members"}
        assert all(set(m) == {"path", "mse", "rotation", "orientation"} for m in d["members"])


def test_query_matches_indexed_and_outside_images(tmp_path: Path, library: dict, cli) -> None:
    outside = tmp_path / "new.png"
    imf.synthetic(1, 96, 64).save(outside)  # same picture as orig/copy, not indexed
    with index_of(tmp_path, tmp_path / "lib") as idx:
        q_new, q_orig = idx.query([outside, library["orig"]])
    assert not q_new.indexed and q_orig.indexed
    new_hits = {m.path for m in q_new.matches}
    assert {real(library["orig"]), real(library["copy"])} <= new_hits
    orig_hits = {m.path for m in q_orig.matches}
    assert real(library["orig"]) not in orig_hits  # a file never matches itself
    assert real(library["copy"]) in orig_hits
    cli.catalog = tmp_path / "c.sqlite"
    res = cli("query", outside, "--json")
    assert res.exit_code == 0, res.stderr
    got = json.loads(res.stdout)["queries"][0]
    assert {m[0] for m in got["matches"]} == new_hits
    missing = cli("query", tmp_path / "nope.png")
    assert missing.exit_code == 2 and "Traceback" not in missing.stderr


def test_result_does_not_depend_on_discovery_order(tmp_path: Path) -> None:
    """The same files indexed in one go, or in two updates in the other order, give the
    same result: keys by quality rank (ties: path ascending), never by discovery."""
    pics = {"a": 7, "b": 7, "c": 8, "d": 8, "e": 8}
    results = []
    for order in (["abcde"], ["de", "abc"]):
        root = tmp_path / "-".join(order) / "lib"
        root.mkdir(parents=True)
        with Index.open(root.parent / "c.sqlite") as idx:
            for batch in order:
                for name in batch:
                    imf.synthetic(pics[name], 48, 48).save(root / f"{name}.png")
                    # same mtime in both runs: the default keep rule prefers older files
                    os.utime(root / f"{name}.png", ns=(1_600_000_000 * 10**9,) * 2)
                idx.update([root], processes=1)
            found = idx.search()
        results.append({
            os.path.basename(k): [[os.path.basename(m[0]), m[1]] for m in v]
            for k, v in found.result.items()
        })
    assert results[0] == results[1]
    assert results[0] == {
        "a.png": [["b.png", 0.0]],
        "c.png": [["d.png", 0.0], ["e.png", 0.0]],
    }
