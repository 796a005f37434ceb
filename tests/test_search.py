"""The search core (match.py) against a brute-force all-pairs reference from SEMANTICS.md."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from difpy_index.match import Group, Member, find_groups, match_against, mse_exact

search = importlib.import_module("difpy_index.match")

# --------------------------------------------------------------------------- reference


def ref_mse(a: np.ndarray, b: np.ndarray, rotate: bool) -> tuple[float, int]:
    """Straight from SEMANTICS.md 3: integer sum of squares / count; min over rotations."""
    best = None
    for k in range(4 if rotate else 1):
        d = a.astype(np.int64) - np.rot90(b, k).astype(np.int64)
        m = int((d * d).sum()) / d.size
        if best is None or m < best[0]:
            best = (m, 90 * k)
    return best


def ref_groups(tensors, widths, heights, sizes, paths, threshold, rotate, same_dim, subset=None):
    """SEMANTICS.md 4: all pairs, then greedy claiming in quality order."""
    rows = range(len(paths)) if subset is None else sorted({int(i) for i in subset})
    order = sorted(rows, key=lambda i: (-int(widths[i]) * int(heights[i]), -int(sizes[i]), paths[i]))
    grouped: set[int] = set()
    out = []
    for pos, key in enumerate(order):
        if key in grouped:
            continue
        grouped.add(key)
        members = []
        for other in order[pos + 1 :]:
            if other in grouped:
                continue
            if same_dim and sorted((widths[key], heights[key])) != sorted((widths[other], heights[other])):
                continue
            m, rot = ref_mse(tensors[key], tensors[other], rotate)
            if m <= threshold:
                members.append(Member(other, m, rot))
        for mm in members:
            grouped.add(mm.index)
        if members:
            out.append(Group(key, tuple(sorted(members, key=lambda mm: (mm.mse, paths[mm.index])))))
    return out


def canon(groups):
    """Groups without the rotation field (ties between rotations are resolved alike, but the
    mse is what the spec fixes)."""
    return [(g.key, [(m.index, m.mse) for m in g.members]) for g in groups]


# --------------------------------------------------------------------------- catalogs


@st.composite
def catalogs(draw):
    px = draw(st.integers(10, 12))
    n_base = draw(st.integers(1, 7))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    dims_pool = [(20, 30), (30, 20), (40, 40), (25, 25), (31, 17)]
    base = []
    for _ in range(n_base):
        kind = rng.integers(3)
        if kind == 0:  # noise
            t = rng.integers(0, 256, (px, px, 3))
        elif kind == 1:  # smooth gradient: realistic, many near neighbours
            y, x = np.mgrid[0:px, 0:px]
            t = (rng.integers(0, 120) + rng.integers(0, 8) * x[..., None] + rng.integers(0, 8) * y[..., None]
                 + rng.integers(0, 20, 3)[None, None, :])
        else:  # flat colour
            t = np.broadcast_to(rng.integers(0, 256, 3), (px, px, 3))
        base.append(np.clip(t, 0, 255).astype(np.uint8))
    tensors, dims = [], []
    n_derived = draw(st.integers(0, 9))
    for t in base:
        tensors.append(t)
        dims.append(dims_pool[rng.integers(len(dims_pool))])
    for _ in range(n_derived):
        src = int(rng.integers(len(tensors)))
        t = tensors[src]
        how = rng.integers(5)
        if how == 0:
            t = t.copy()
        elif how == 1:
            t = np.rot90(t, int(rng.integers(1, 4))).copy()
        elif how == 2:  # small noise: near duplicate
            t = np.clip(t.astype(int) + rng.integers(-2, 3, t.shape) * (rng.random(t.shape) < 0.3), 0, 255).astype(np.uint8)
        elif how == 3:  # rotated + noise
            t = np.rot90(t, int(rng.integers(1, 4)))
            t = np.clip(t.astype(int) + rng.integers(-3, 4, t.shape), 0, 255).astype(np.uint8)
        else:  # moderate change
            t = np.clip(t.astype(int) + rng.integers(-12, 13, t.shape), 0, 255).astype(np.uint8)
        tensors.append(t)
        w, h = dims[src]
        dims.append((h, w) if rng.random() < 0.3 else (w, h) if rng.random() < 0.8 else dims_pool[rng.integers(len(dims_pool))])
    n = len(tensors)
    sizes = rng.integers(100, 104, n)  # many ties: the path decides
    paths = [f"/p/{rng.integers(1000):04d}_{i}.jpg".encode() for i in range(n)]
    w = np.array([d[0] for d in dims], dtype=np.int64)
    h = np.array([d[1] for d in dims], dtype=np.int64)
    return np.stack(tensors), w, h, sizes.astype(np.int64), paths


THRESHOLDS = [0, 0.5, 5, 60, 1e9]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cat=catalogs(), rotate=st.booleans(), same_dim=st.booleans(), use_subset=st.booleans(),
       threshold=st.sampled_from(THRESHOLDS), perm_seed=st.integers(0, 1000))
def test_matches_reference(cat, rotate, same_dim, use_subset, threshold, perm_seed):
    t, w, h, s, p = cat
    rng = np.random.default_rng(perm_seed)
    subset = np.flatnonzero(rng.random(len(p)) < 0.7) if use_subset else None
    got = find_groups(t, w, h, s, p, threshold, rotate=rotate, same_dim=same_dim, subset=subset)
    want = ref_groups(t, w, h, s, p, threshold, rotate, same_dim, subset)
    assert canon(got) == canon(want)
    for g in got:  # the reported rotation really gives the reported mse
        for m in g.members:
            assert ref_mse(t[g.key], np.rot90(t[m.index], m.rotation // 90), False)[0] == m.mse
    # Shuffling the rows changes nothing beyond the relabelling.
    perm = rng.permutation(len(p))
    inv = np.argsort(perm)
    sub2 = None if subset is None else inv[subset]
    got2 = find_groups(t[perm], w[perm], h[perm], s[perm], [p[i] for i in perm], threshold,
                       rotate=rotate, same_dim=same_dim, subset=sub2)
    relabelled = [(int(perm[k]), [(int(perm[i]), m) for i, m in ms]) for k, ms in canon(got2)]
    assert relabelled == canon(got)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cat=catalogs(), rotate=st.booleans(), same_dim=st.booleans(),
       threshold=st.sampled_from(THRESHOLDS))
def test_dense_walk_matches_reference(cat, rotate, same_dim, threshold):
    """The fallback used when the bounds let too many pairs through gives the same groups."""
    t, w, h, s, p = cat
    old = search._PAIR_BUDGET
    search._PAIR_BUDGET = 0
    try:
        got = find_groups(t, w, h, s, p, threshold or 0.25, rotate=rotate, same_dim=same_dim)
    finally:
        search._PAIR_BUDGET = old
    assert canon(got) == canon(ref_groups(t, w, h, s, p, threshold or 0.25, rotate, same_dim))


@settings(max_examples=25, deadline=None)
@given(cat=catalogs(), rotate=st.booleans(), same_dim=st.booleans(),
       threshold=st.sampled_from(THRESHOLDS))
def test_match_against_reference(cat, rotate, same_dim, threshold):
    t, w, h, _s, _p = cat
    q = t[: max(1, len(t) // 2)]
    got = match_against(q, w[: len(q)], h[: len(q)], t, w, h, threshold, rotate, same_dim)
    assert len(got) == len(q)
    for qi, res in enumerate(got):
        want = []
        for i in range(len(t)):
            if same_dim and sorted((w[qi], h[qi])) != sorted((w[i], h[i])):
                continue
            m, _ = ref_mse(q[qi], t[i], rotate)
            if m <= threshold:
                want.append((m, i))
        assert [(m.mse, m.index) for m in res] == sorted(want)
        assert any(m.index == qi and m.mse == 0.0 for m in res)  # a query matches itself


# --------------------------------------------------------------------------- specific cases


def _img(seed: int, px: int = 12) -> np.ndarray:
    return np.random.default_rng(seed).integers(40, 200, (px, px, 3)).astype(np.uint8)


def _cat(*tensors, dims=None, sizes=None):
    n = len(tensors)
    dims = dims or [(100, 80)] * n
    return (np.stack(tensors), np.array([d[0] for d in dims]), np.array([d[1] for d in dims]),
            np.array(sizes or [1000] * n), [f"/x/{i}.png".encode() for i in range(n)])


def test_brightness_shift_is_not_a_duplicate():
    a = _img(1)
    b = a + np.uint8(16)  # values 56..215: no uint8 wrap in the image itself
    t, w, h, s, p = _cat(a, b)
    assert find_groups(t, w, h, s, p, 0) == []
    assert find_groups(t, w, h, s, p, 5) == []
    assert mse_exact(a, b, True) == (256.0, 0)
    assert find_groups(t, w, h, s, p, 256)[0].members[0].mse == 256.0


def test_rotation_270_found_and_reported():
    a = _img(2)
    b = np.rot90(a, 3).copy()
    t, w, h, s, p = _cat(a, b, dims=[(100, 80), (80, 100)], sizes=[2000, 1000])
    for thr in (0, 5):
        (g,) = find_groups(t, w, h, s, p, thr)
        assert g.key == 0 and g.members == (Member(1, 0.0, 90),)  # rot90(b, 1) == a
        assert np.array_equal(np.rot90(b, 1), a)
    assert find_groups(t, w, h, s, p, 0, rotate=False) == []
    assert find_groups(t, w, h, s, p, 5, rotate=False) == []


def test_chain_is_not_transitive():
    # A~B (mse 1), B~C (mse 1), A!~C (mse 4); A best by size, then B, then C.
    a = np.full((10, 10, 3), 100, np.uint8)
    b, c = a + np.uint8(1), a + np.uint8(2)
    t, w, h, s, p = _cat(a, b, c, sizes=[3, 2, 1])
    assert find_groups(t, w, h, s, p, 1.5) == [Group(0, (Member(1, 1.0, 0),))]
    # Make B the best: it claims both.
    t, w, h, s, p = _cat(a, b, c, sizes=[2, 3, 1])
    assert find_groups(t, w, h, s, p, 1.5) == [Group(1, (Member(0, 1.0, 0), Member(2, 1.0, 0)))]
    # Make C best: C claims B; A is left alone.
    t, w, h, s, p = _cat(a, b, c, sizes=[1, 2, 3])
    assert find_groups(t, w, h, s, p, 1.5) == [Group(2, (Member(1, 1.0, 0),))]


def test_quality_order_and_member_order():
    a = _img(3)
    t, w, h, s, p = _cat(a, a, a, a, dims=[(10, 10), (20, 5), (5, 20), (50, 2)], sizes=[5, 1, 1, 9])
    p = [b"/z", b"/b", b"/a", b"/c"]
    assert list(search.quality_order(w, h, s, p)) == [3, 0, 2, 1]  # 100 px, size, path
    (g,) = find_groups(t, w, h, s, p, 0, same_dim=False)
    assert g.key == 3 and [m.index for m in g.members] == [2, 1, 0]
    # same_dim: (20, 5) and (5, 20) are one bucket, the others are alone.
    (g,) = find_groups(t, w, h, s, p, 0, same_dim=True)
    assert g.key == 2 and [m.index for m in g.members] == [1]


def test_exact_at_threshold_boundary():
    a = np.full((10, 10, 3), 50, np.uint8)
    b = a.copy()
    b[0, 0, 0] += 3  # sum 9 over 300 elements: mse 0.03
    t, w, h, s, p = _cat(a, b)
    assert find_groups(t, w, h, s, p, 0.03)[0].members[0].mse == 9 / 300
    assert find_groups(t, w, h, s, p, np.nextafter(0.03, 0)) == []


def test_small_inputs_and_validation():
    t, w, h, s, p = _cat(_img(4))
    assert find_groups(t, w, h, s, p, 5) == []
    assert find_groups(t[:0], w[:0], h[:0], s[:0], [], 5) == []
    with pytest.raises(ValueError):
        find_groups(t, w, h, s, p, -1)
    with pytest.raises(ValueError):
        find_groups(t, w, h, s, p, float("nan"))
    assert match_against(t[:0], w[:0], h[:0], t, w, h, 5) == []


def test_read_only_input_and_large_px():
    a = np.random.default_rng(5).integers(0, 256, (120, 120, 3)).astype(np.uint8)
    t, w, h, s, p = _cat(a, np.rot90(a, 2).copy(), 255 - a)
    t.setflags(write=False)
    assert find_groups(t, w, h, s, p, 0) == [Group(0, (Member(1, 0.0, 180),))]
    assert find_groups(t, w, h, s, p, 1e9) == [
        Group(0, (Member(1, 0.0, 180), Member(2, mse_exact(a, 255 - a, True)[0], mse_exact(a, 255 - a, True)[1])))
    ]


def test_segments_are_palindromic():
    for px in range(1, 60):
        for m in (1, 2, 5, 6, 10):
            b = search._segments(px, m)
            sizes = np.diff(b)
            assert b[0] == 0 and b[-1] == px and (sizes > 0).all()
            assert list(sizes) == list(sizes[::-1])


def test_bounds_never_exceed_true_mse():
    rng = np.random.default_rng(7)
    t = rng.integers(0, 256, (30, 11, 11, 3)).astype(np.uint8)
    t[10:] = np.clip(t[:20].astype(int) + rng.integers(-5, 6, (20, 11, 11, 3)), 0, 255)
    f = search._features(t, np.arange(30))
    ia, ib = np.triu_indices(30, 1)
    lbs = search._rot_lbs(f, ia, ib, True)
    for (i, j), lb in zip(zip(ia, ib, strict=False), lbs, strict=False):
        for k in range(4):
            m = ref_mse(t[i], np.rot90(t[j], k), False)[0]
            assert lb[k] <= m + 1e-9
        orbit_lb = ((f.orbit[i] - f.orbit[j]) ** 2).sum()
        assert orbit_lb <= lb.min() + 1e-9
