"""The partitioned search against the in-memory search and the brute-force reference.

Bands are forced tiny (``max_band_rows`` 2..7) so nearly every pair crosses a band edge;
flat brightness shifts put pairs exactly on the pixel-sum bound (``mse == (dS / d)**2``),
the tightest case for the band width.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_search import canon, catalogs, ref_groups

from difpy_index import partition
from difpy_index.match import find_groups, pixel_sums, quality_order


class ArrayLoader:
    """Row ids -> tensors from an in-memory array (what a store loader does from disk)."""

    def __init__(self, tensors: np.ndarray) -> None:
        self.tensors = tensors
        self.calls: list[int] = []

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        self.calls.append(len(ids))
        return self.tensors[ids]


def ranks(w, h, s, p, rows):
    perm = quality_order(w[rows], h[rows], s[rows], [p[i] for i in rows])
    r = np.empty(len(rows), dtype=np.int64)
    r[perm] = np.arange(len(rows))
    return r


def run_partitioned(t, w, h, s, p, threshold, rotate, same_dim, subset, max_rows, executor=None,
                    order=None, protected=None):
    rows = np.arange(len(p)) if subset is None else np.unique(subset)
    loader = ArrayLoader(t)
    if order is None:
        rank = ranks(w, h, s, p, rows)
    else:  # a keep rule's order over all rows, as find_groups(order=) takes it
        full = np.empty(len(p), dtype=np.int64)
        full[order] = np.arange(len(p))
        rank = full[rows]
    got = partition.partitioned_groups(
        loader, rows, pixel_sums(t[rows]), w[rows], h[rows], t.shape[1], rank,
        [p[i] for i in rows], threshold, rotate=rotate, same_dim=same_dim,
        max_band_rows=max_rows, executor=executor,
        protected=None if protected is None else protected[rows],
    )
    # positions in ``rows`` -> row indices of the input, as find_groups reports them
    return [type(g)(int(rows[g.key]), tuple(type(m)(int(rows[m.index]), m.mse, m.rotation)
                                            for m in g.members)) for g in got]


@st.composite
def shifted_catalogs(draw):
    """The search tests' catalogs plus flat shifts of +-1, 2 or 7 (mse 1, 4, 49: on the bound)."""
    t, w, h, s, p = draw(catalogs())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    extra = []
    for _ in range(draw(st.integers(0, 6))):
        src = int(rng.integers(len(t)))
        c = int(rng.choice([1, 2, 7])) * int(rng.choice([-1, 1]))
        x = t[src].astype(int) + c
        if x.min() < 0 or x.max() > 255:
            continue
        x = x.astype(np.uint8)
        if rng.random() < 0.5:
            x = np.rot90(x, int(rng.integers(1, 4))).copy()
        extra.append((x, src))
    if extra:
        t = np.concatenate([t, np.stack([x for x, _ in extra])])
        srcs = [i for _, i in extra]
        w = np.concatenate([w, w[srcs]])
        h = np.concatenate([h, h[srcs]])
        s = np.concatenate([s, s[srcs]])
        p = p + [b"/q/%d_%d.png" % (i, j) for j, i in enumerate(srcs)]
    return t, w, h, s, p


THRESHOLDS = [0, 0.5, 1, 4, 5, 49, 60, 1e9]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cat=shifted_catalogs(), rotate=st.booleans(), same_dim=st.booleans(),
       use_subset=st.booleans(), threshold=st.sampled_from(THRESHOLDS),
       max_rows=st.integers(1, 7), seed=st.integers(0, 1000))
def test_partitioned_equals_in_memory_and_reference(cat, rotate, same_dim, use_subset, threshold,
                                                    max_rows, seed):
    t, w, h, s, p = cat
    rng = np.random.default_rng(seed)
    subset = np.flatnonzero(rng.random(len(p)) < 0.7) if use_subset else None
    want = find_groups(t, w, h, s, p, threshold, rotate=rotate, same_dim=same_dim, subset=subset)
    got = run_partitioned(t, w, h, s, p, threshold, rotate, same_dim, subset, max_rows)
    assert got == want  # rotations included, not only the canonical form
    assert canon(got) == canon(ref_groups(t, w, h, s, p, threshold, rotate, same_dim, subset))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cat=shifted_catalogs(), rotate=st.booleans(), same_dim=st.booleans(),
       threshold=st.sampled_from(THRESHOLDS), max_rows=st.integers(1, 7),
       seed=st.integers(0, 1000))
def test_partitioned_follows_keep_order_and_references(cat, rotate, same_dim, threshold, max_rows,
                                                       seed):
    """Any keep-rule order and reference (protected) rows: the same groups as find_groups."""
    t, w, h, s, p = cat
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(p))
    protected = rng.random(len(p)) < 0.3
    subset = np.flatnonzero(rng.random(len(p)) < 0.8) if seed % 2 else None
    want = find_groups(t, w, h, s, p, threshold, rotate=rotate, same_dim=same_dim, subset=subset,
                       order=order, protected=protected)
    got = run_partitioned(t, w, h, s, p, threshold, rotate, same_dim, subset, max_rows,
                          order=order, protected=protected)
    assert got == want


@pytest.mark.parametrize("threshold", [0, 4, 5])
def test_pairs_on_the_band_edge(threshold):
    """A chain of flat shifts by 2 (mse 4 == (dS/d)**2): every link sits exactly on the
    bound, every band holds one image, and the chain must still be claimed greedily."""
    base = np.full((10, 10, 3), 100, np.uint8)
    t = np.stack([base + np.uint8(2 * i) for i in range(6)] + [base.copy()])
    n = len(t)
    w = np.full(n, 40)
    h = np.full(n, 30)
    s = np.arange(n, 0, -1) * 10  # image 0 best
    p = [b"/e/%d.png" % i for i in range(n)]
    want = find_groups(t, w, h, s, p, threshold)
    assert want  # non-trivial: the copy of image 0 at least
    for max_rows in (1, 2, 3, 100):
        assert run_partitioned(t, w, h, s, p, threshold, True, True, None, max_rows) == want


def test_executor_gives_the_same_groups():
    rng = np.random.default_rng(3)
    base = rng.integers(60, 190, (40, 12, 12, 3)).astype(np.uint8)
    noisy = np.clip(base.astype(int) + rng.integers(-2, 3, base.shape), 0, 255).astype(np.uint8)
    t = np.concatenate([base, np.rot90(noisy, 1, axes=(1, 2))])
    n = len(t)
    w, h = np.full(n, 50), np.full(n, 50)
    s = rng.integers(1000, 2000, n)
    p = [b"/x/%03d.jpg" % i for i in range(n)]
    for threshold in (0, 5):
        want = find_groups(t, w, h, s, p, threshold)
        with ThreadPoolExecutor(2) as ex:
            got = run_partitioned(t, w, h, s, p, threshold, True, True, None, 8, executor=ex)
        assert got == want
        assert len(want) >= (40 if threshold else 0)


def test_task_memory_is_bounded():
    """Spread-out sums: no task loads more than max_band_rows tensors, yet pairs are found."""
    rng = np.random.default_rng(4)
    levels = np.repeat(np.arange(20, 220, 2), 2)  # pairs one level apart, 100 levels
    t = np.broadcast_to(levels[:, None, None, None], (len(levels), 10, 10, 3)).astype(np.uint8)
    t = t.copy()
    t[1::2, 0, 0, 0] += 1  # each pair: mse 1/300
    n = len(t)
    w, h, s = np.full(n, 10), np.full(n, 10), rng.integers(1, 5, n)
    p = [b"/m/%03d.png" % i for i in range(n)]
    rows = np.arange(n)
    loader = ArrayLoader(t)
    got = partition.partitioned_groups(loader, rows, pixel_sums(t), w, h, 10, ranks(w, h, s, p, rows),
                                       p, 0.5, max_band_rows=10)
    assert got == find_groups(t, w, h, s, p, 0.5) and len(got) == n // 2
    assert max(loader.calls) <= 10 and sum(loader.calls) < 2 * n + 10


def test_bands_never_skip_a_neighbour():
    """plan_bands: rows of band k and band k+2 always differ by more than the width."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        comp = np.sort(rng.integers(0, 60, int(rng.integers(1, 80))))
        width = int(rng.integers(0, 15))
        target = int(rng.integers(1, 10))
        bands = partition.plan_bands(comp, width, target)
        assert bands[0].start == 0 and bands[-1].stop == len(comp)
        assert all(b.start < b.stop for b in bands)
        assert all(x.stop == y.start for x, y in itertools.pairwise(bands))
        if width == 0:  # equal values never straddle a cut
            assert all(comp[b.start] != comp[b.start - 1] for b in bands[1:])
        for k in range(len(bands) - 2):
            assert comp[bands[k + 2].start] - comp[bands[k].stop - 1] > width
