"""tests/corpus.py, the ground-truth generator behind test_quality and the benchmarks: the
same (n, seed) gives the same bytes, and the manifest describes exactly the files written."""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
from pathlib import Path

import corpus
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

needs_photos = pytest.mark.skipif(
    not corpus.seed_photos_available(),
    reason="the seed photos come from scikit-image, scikit-learn and matplotlib: "
    "install the [test] extra")

N, MAX_SIDE = 24, 320


def tree(root: Path) -> dict[str, bytes]:
    return {p: (root / p).read_bytes() for p in corpus.list_files(root)}


@needs_photos
def test_same_seed_same_bytes_serial_or_parallel(tmp_path: Path) -> None:
    a = corpus.make_corpus(tmp_path / "a", N, 5, max_side=MAX_SIDE, processes=1)
    b = corpus.make_corpus(tmp_path / "b", N, 5, max_side=MAX_SIDE, processes=2)
    assert tree(tmp_path / "a") == tree(tmp_path / "b")
    assert a.to_json() == b.to_json()
    assert (corpus.manifest_path(tmp_path / "a").read_bytes()
            == corpus.manifest_path(tmp_path / "b").read_bytes())
    corpus.make_corpus(tmp_path / "c", N, 6, max_side=MAX_SIDE)
    assert tree(tmp_path / "c") != tree(tmp_path / "a")


@needs_photos
def test_manifest_matches_the_files(tmp_path: Path) -> None:
    root = tmp_path / "c"
    m = corpus.make_corpus(root, 60, 2, max_side=MAX_SIDE, processes=2)
    assert corpus.load_manifest(root) == m
    assert sorted(m.files) == corpus.list_files(root)  # nothing missing, nothing extra
    assert not any(p.endswith(".json") for p in corpus.list_files(root))  # manifest beside it
    originals = {}
    for path, e in m.files.items():
        with Image.open(root / path) as im:
            assert (im.format, im.size) == (e.format, (e.width, e.height)), path
        if e.edit == "original":
            assert e.base not in originals
            originals[e.base] = path
    for path, e in m.files.items():
        orig = m.files[originals[e.base]]
        if e.edit == "copy":
            assert filecmp.cmp(root / path, root / originals[e.base], shallow=False)
        elif e.edit == "rotate" and e.params["angle"] != 180:
            assert (e.width, e.height) == (orig.height, orig.width)
        elif e.edit == "format":
            assert e.format != orig.format
        elif e.edit == "reencode":
            assert e.format == "JPEG"
    groups = m.groups()
    assert groups and len(groups) < len(originals)  # edited bases and unrelated ones
    for members in groups.values():
        assert m.files[members[0]].edit == "original"
        assert len({m.files[p].base for p in members}) == 1
    pairs = corpus.truth_pairs(m, root)
    assert len(pairs) == sum(len(g) * (len(g) - 1) // 2 for g in groups.values())
    assert all(os.path.isfile(p) for pair in pairs for p in pair)


@needs_photos
def test_no_two_bases_frame_one_photo_alike() -> None:
    """Bases are distinct pictures: after ``_distinct`` no two (outside scene shots) frame
    one photograph within SAME_FRAMING with neither blended, and the bases it redraws are
    exactly the ones whose first stream would have. The plan of 4,000 files, seed 1, has
    such bases (the cameraman, full frame, twice), so the check is exercised."""
    groups = corpus.plan(4000, 1, 1600)
    corpus._distinct(groups, 1)
    redrawn = [g[0].entry.base for g in groups if "redraw" in g[0].entry.params]
    assert 0 < len(redrawn) < len(groups) // 100
    framed: list[tuple[int, tuple[float, ...]]] = []
    for g in groups:
        e = g[0].entry
        if "scene" in e.params:
            continue
        rng = np.random.default_rng(corpus._stream(1, e.base, e.params.get("redraw", 0)))
        first, box, _, _, blend = corpus._main_layer(rng, e.width, e.height)
        if blend:
            continue
        alike = [b for k, b in framed if k == first and corpus._overlap(box, b) >= corpus.SAME_FRAMING]
        assert not alike, e.base
        if e.base in redrawn:  # its first stream would have framed an earlier base alike
            rng = np.random.default_rng(corpus._stream(1, e.base, 0))
            first0, box0, _, _, blend0 = corpus._main_layer(rng, e.width, e.height)
            assert not blend0 and any(k == first0 and corpus._overlap(box0, b) >= corpus.SAME_FRAMING
                                      for k, b in framed)
        framed.append((first, box))


@needs_photos
def test_command_line_writes_the_same_corpus(tmp_path: Path) -> None:
    script = Path(corpus.__file__)
    run = subprocess.run([sys.executable, str(script), str(tmp_path / "cli"), "--n", "10",
                          "--seed", "3", "--max-side", str(MAX_SIDE), "--processes", "1"],
                         capture_output=True, text=True, check=True)
    assert json.loads(run.stdout)["files"] == 10
    corpus.make_corpus(tmp_path / "api", 10, 3, max_side=MAX_SIDE)
    assert tree(tmp_path / "cli") == tree(tmp_path / "api")
    again = subprocess.run([sys.executable, str(script), str(tmp_path / "cli"), "--n", "10"],
                           capture_output=True, text=True)
    assert again.returncode == 2 and "not empty" in again.stderr


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 400), seed=st.integers(0, 2**31), max_side=st.integers(160, 4000))
def test_plan_has_n_distinct_files_and_consistent_edits(n: int, seed: int, max_side: int) -> None:
    groups = corpus.plan(n, seed, max_side)
    files = [item for g in groups for item in g]
    assert len(files) == n
    assert len({f.path for f in files}) == n
    assert corpus.plan(n, seed, max_side) == groups
    scenes: dict[int, list[int]] = {}
    for base, g in enumerate(groups):
        orig = g[0].entry
        assert orig.edit == "original" and orig.base == base
        if "scene" in orig.params:  # shots of one scene share its size; one second shot each
            scenes.setdefault(orig.params["scene"], []).append(base)
            first = groups[orig.params["scene"]][0].entry
            assert (first.width, first.height) == (orig.width, orig.height)
        if any(item.entry.edit in corpus.UNREACHABLE for item in g[1:]):
            assert len(g) == 2
        assert max(orig.width, orig.height) <= max(max_side, 160)
        for item in g[1:]:
            e = item.entry
            assert e.base == base and e.edit in corpus.EDITS
            assert item.path.endswith(corpus.EXT[e.format])
            if e.edit == "resize":
                assert e.width == max(16, round(orig.width * e.params["factor"]))
            elif e.edit not in ("rotate",):
                assert (e.width, e.height) == (orig.width, orig.height)
    assert all(len(b) == 2 and b[0] == s for s, b in scenes.items())


def test_synthetic_tensors_are_deterministic() -> None:
    t, w, h, sizes, paths = corpus.synthetic_tensors(200, seed=4)
    assert t.shape == (200, 50, 50, 3) and t.dtype.name == "uint8"
    assert len(w) == len(h) == len(sizes) == len(set(paths)) == 200
    again = corpus.synthetic_tensors(200, seed=4)
    assert (again[0] == t).all() and (again[1] == w).all() and again[4] == paths
    assert not (corpus.synthetic_tensors(200, seed=5)[0] == t).all()
