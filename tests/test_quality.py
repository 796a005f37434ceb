"""The 'near' preset on ground-truth corpora (issue 9): precision 1.0 and recall >= 0.9.

Corpora come from tests/corpus.py (real photographs shipped in scikit-image, scikit-learn
and matplotlib, which the [test] extra installs, with planted edits and a manifest); two
seeds and two sizes, images up to 640 px so that CI stays quick. The calibration itself,
with larger corpora, per-edit tables and difPy 4.2.1 alongside, is
tests/benchmarks/bench_quality.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import corpus
import pytest

from difpy_index import Index
from difpy_index.params import NEAR_THRESHOLD

sys.path.insert(0, str(Path(__file__).parent / "benchmarks"))
import bench_quality

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not corpus.seed_photos_available(),
                       reason="the seed photos of tests/corpus.py come from scikit-image, "
                       "scikit-learn and matplotlib: install the [test] extra"),
]
SIZES = (150, 300)
SEEDS = (1, 2)
MAX_SIDE = 640


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[int, int], Path]:
    base = tmp_path_factory.mktemp("quality")
    out = {}
    for n in SIZES:
        for seed in SEEDS:
            root = base / f"c{n}_{seed}"
            corpus.make_corpus(root, n, seed, max_side=MAX_SIDE, processes=2)
            out[(n, seed)] = root
    return out


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("seed", SEEDS)
def test_near_preset_precision_and_recall(corpora: dict, n: int, seed: int, tmp_path: Path) -> None:
    root = corpora[(n, seed)]
    manifest = corpus.load_manifest(root)
    assert len(manifest.files) == n
    pairs = corpus.truth_pairs(manifest, root)
    # every kind of planted edit is in the corpus, so each is checked below
    assert set(corpus.EDITS) - corpus.UNREACHABLE <= set(pairs.values()), sorted(set(pairs.values()))
    with Index.open(tmp_path / "c.sqlite") as idx:
        report = idx.update([root], processes=2)
        assert report.files == n and report.invalid == 0, report
        near = idx.search(similarity="near")
        similar = idx.search(similarity="similar")
    assert near.threshold == NEAR_THRESHOLD and near.same_dim is False
    got = bench_quality.score(bench_quality.result_pairs(near), pairs)
    assert got["precision"] == 1.0, got
    assert got["recall"] >= 0.9, got
    # every exact copy, re-encode, format change, resize, rotation and noisy copy is found
    for edit, found in got["per_transform"].items():
        if edit not in corpus.UNREACHABLE:
            hit, total = map(int, found.split("/"))
            assert hit == total, (edit, got)
    # the preset finds strictly more than difPy's defaults (resized copies at least)
    base = bench_quality.score(bench_quality.result_pairs(similar), pairs)
    assert got["recall"] > base["recall"]


def test_near_preset_respects_explicit_same_dim(corpora: dict, tmp_path: Path) -> None:
    root = corpora[(150, 1)]
    with Index.open(tmp_path / "c.sqlite") as idx:
        idx.update([root], processes=2)
        assert idx.search(similarity="near", same_dim=True).same_dim is True
        assert idx.search(similarity="near").same_dim is False
