"""The 'near' preset on ground-truth corpora (issue 9): precision 1.0 and recall >= 0.9.

Corpora come from ../shared/bench/make_corpus.py (real photos shipped in scikit-image,
scikit-learn and matplotlib, exactly the benchmark's seed set);
two seeds and two sizes, small enough for CI. The calibration itself, with larger corpora
and per-transform tables, is tests/benchmarks/bench_quality.py.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from difpy_index import Index
from difpy_index.params import NEAR_THRESHOLD

sys.path.insert(0, str(Path(__file__).parent / "benchmarks"))
import bench_quality

MAKE_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "bench" / "make_corpus.py"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not MAKE_CORPUS.is_file(), reason=f"corpus generator not found at {MAKE_CORPUS}"),
    pytest.mark.skipif(
        any(importlib.util.find_spec(m) is None for m in ("skimage", "sklearn", "matplotlib")),
        reason="scikit-image, scikit-learn and matplotlib (their bundled photos seed the "
        "corpus, as in the benchmarks) are not all installed",
    ),
]


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[int, int], Path]:
    base = tmp_path_factory.mktemp("quality")
    out = {}
    for n in (150, 300):
        for seed in (1, 2):
            root = base / f"c{n}_{seed}"
            subprocess.run(
                [sys.executable, str(MAKE_CORPUS), "--n", str(n), "--out", str(root), "--seed", str(seed)],
                check=True, stdout=subprocess.DEVNULL,
            )
            out[(n, seed)] = root
    return out


@pytest.mark.parametrize("n", [150, 300])
@pytest.mark.parametrize("seed", [1, 2])
def test_near_preset_precision_and_recall(corpora: dict, n: int, seed: int, tmp_path: Path) -> None:
    import json

    root = corpora[(n, seed)]
    gt = json.loads(Path(f"{root}.gt.json").read_text())
    pairs, _ = bench_quality.truth(gt, root)
    with Index.open(tmp_path / "c.sqlite") as idx:
        idx.update([root], processes=2)
        near = idx.search(similarity="near")
        similar = idx.search(similarity="similar")
    assert near.threshold == NEAR_THRESHOLD and near.same_dim is False
    got = bench_quality.score(bench_quality.result_pairs(near), pairs)
    assert got["precision"] == 1.0, got
    assert got["recall"] >= 0.9, got
    # every exact copy, re-encode, format change, resize and rotation is found
    for transform, found in got["per_transform"].items():
        if transform not in ("brightness",):
            hit, total = map(int, found.split("/"))
            assert hit == total, (transform, got)
    # the preset finds strictly more than difPy's defaults (resized copies at least)
    base = bench_quality.score(bench_quality.result_pairs(similar), pairs)
    assert got["recall"] > base["recall"]


def test_near_preset_respects_explicit_same_dim(corpora: dict, tmp_path: Path) -> None:
    root = corpora[(150, 1)]
    with Index.open(tmp_path / "c.sqlite") as idx:
        idx.update([root], processes=2)
        assert idx.search(similarity="near", same_dim=True).same_dim is True
        assert idx.search(similarity="near").same_dim is False
    assert os.path.isdir(root)
