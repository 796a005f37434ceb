"""Exact duplicate / similar image search over difPy tensors, in pure numpy.

What is computed is SEMANTICS.md sections 3-4, exactly: the true MSE (integer sum of
squares over all ``px*px*3`` elements divided by the count, float64, no uint8 wrap),
the minimum over the four rotations of the second image when ``rotate``, and groups
claimed greedily in quality-rank order. Nothing here is approximate: every speed-up is
either an exact equivalence or a *lower bound* on the MSE that is only used to skip pairs
that cannot match; every reported pair is verified with integer arithmetic.

Strategy (why it is fast):

* ``threshold == 0``: equality under rotation is an equivalence, so groups are its
  classes. Each image gets a 128-bit hash of each of its four rotations; the class id is
  the smallest of the four, equal ids are verified byte for byte (a hash collision falls
  back to exact comparison). Linear in ``n``.
* ``threshold > 0``: three exact lower bounds, each cheaper than the next check:

  1. ``(mean(a) - mean(b))**2`` (Jensen). Images are sorted by ``(dims bucket, mean)``
     and each block of rows is compared only with the window of ``sqrt(threshold)``
     after it, so unrelated images are never touched.
  2. Means over rotation *orbits* of a rotation-symmetric block grid (weighted by pixel
     count, Cauchy-Schwarz), invariant under rotation; evaluated for a block of rows
     against its window with one BLAS matmul (``|a|^2 + |b|^2 - 2ab``, float64, with a
     safety margin, so it can only let too much through, never too little).
  3. Block means on a finer rotation-symmetric grid, compared for each rotation
     separately, which also tells which rotations can be skipped in verification.

  Survivors are verified exactly (int32/int64 differences) while claiming groups in
  quality-rank order, so a pair is only verified when its better image is a key and the
  other is still unclaimed. If the bounds let through more than ``_PAIR_BUDGET`` pairs
  (very large thresholds), the search switches to a walk over keys in rank order
  against the still-unclaimed images, whose cost shrinks as images get claimed.

There is no worker pool here: the heavy steps are BLAS matmuls and numpy reductions,
which use the machine's cores (and release the GIL) already.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Group", "Member", "band_matches", "find_groups", "match_against", "mse_exact", "pixel_sums",
    "quality_order",
]

#: Grid for the rotation-aware block bound (stage 3): 10x10 blocks x 3 channels. The
#: rotation-invariant orbit bound (stage 2) merges its blocks in pairs: 6x6, 9 orbits x 3.
_GRID_BLOCK = 10
#: Candidate pairs kept after the bounds before switching to the per-key walk.
_PAIR_BUDGET = 4_000_000
#: Rows per block in the sorted sweep, and columns per matmul chunk.
_ROW_BLOCK = 512
_COL_BLOCK = 8192
#: Rows per chunk when deriving features or hashes from tensors (bounds memory).
_CHUNK = 1024
#: Candidate pairs per chunk in the rotation-aware bound.
_PAIR_CHUNK = 16384


@dataclass(frozen=True, slots=True)
class Member:
    """One image claimed by a key (or matching a query)."""

    index: int  #: row index into the input arrays
    mse: float  #: exact true MSE to the key (min over rotations if rotate)
    rotation: int  #: degrees; ``np.rot90(member, k=rotation // 90)`` gives ``mse`` to the key


@dataclass(frozen=True, slots=True)
class Group:
    """A key (the best image of its group) and the images it claimed."""

    key: int  #: row index of the key
    members: tuple[Member, ...]  #: ordered by (mse, path)


# --------------------------------------------------------------------------- helpers


def _margin(threshold: float) -> float:
    """Slack added to float64 lower bounds so rounding can never prune a true match."""
    return 1e-6 + 1e-9 * threshold


def quality_order(
    widths: np.ndarray, heights: np.ndarray, sizes: np.ndarray, paths: Sequence[bytes]
) -> np.ndarray:
    """Permutation: more pixels (w*h) first, then larger file size, then path ascending.

    This is the order keys are chosen in (SEMANTICS.md section 4); it is a total order on
    distinct paths, so the result never depends on the input row order.
    """
    n = len(paths)
    if n == 0:
        return np.zeros(0, dtype=np.intp)
    pixels = np.asarray(widths, dtype=np.int64) * np.asarray(heights, dtype=np.int64)
    by_path = sorted(range(n), key=paths.__getitem__)
    path_rank = np.empty(n, dtype=np.int64)
    path_rank[by_path] = np.arange(n)
    return np.lexsort((path_rank, -np.asarray(sizes, dtype=np.int64), -pixels))


def _acc_dtype(d: int) -> type:
    """int32 holds a sum of d squared uint8 differences up to d = 33025 (px <= 104)."""
    return np.int32 if d * 255 * 255 < 2**31 else np.int64


def mse_exact(a: np.ndarray, b: np.ndarray, rotate: bool) -> tuple[float, int]:
    """Reference-grade exact MSE of two tensors and the rotation (degrees) of ``b``.

    Integer sum of squares divided by the count, in float64; with ``rotate`` the minimum
    over ``np.rot90(b, k)`` for k = 0..3 (the smallest k wins a tie).
    """
    ai = np.asarray(a, dtype=np.int64)
    best, best_k = math.inf, 0
    for k in range(4 if rotate else 1):
        d = ai - np.rot90(np.asarray(b), k).astype(np.int64)
        flat = d.ravel()
        m = int(flat @ flat) / d.size
        if m < best:
            best, best_k = m, k
    return float(best), 90 * best_k


def _segments(px: int, m: int) -> np.ndarray:
    """Boundaries of m segments of [0, px) whose sizes read the same backwards.

    A grid built from such segments maps onto itself under 90-degree rotation, so block
    means of a rotated tensor are the rotated block means (needed for exact bounds).
    """
    m = max(1, min(m, px))
    if px % 2 and m % 2 == 0:
        m -= 1  # an odd side needs a middle segment straddling the centre
    return np.array(
        [(i * px) // m if 2 * i <= m else px - ((m - i) * px) // m for i in range(m + 1)],
        dtype=np.intp,
    )


def _indicator(bounds: np.ndarray, dtype: type) -> np.ndarray:
    """(px, m) 0/1 matrix: pixel -> segment, so block sums are two small matmuls."""
    px, m = int(bounds[-1]), len(bounds) - 1
    e: np.ndarray = np.zeros((px, m), dtype=dtype)
    e[np.arange(px), np.searchsorted(bounds, np.arange(px), side="right") - 1] = 1
    return e


def _exact_float(px: int) -> type:
    """float32 sums integers exactly while every sum stays below 2**24 (px <= 256)."""
    return np.float32 if px * px * 255 < 2**24 else np.float64


def _block_sums(t: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """(c, px, px, 3) uint8 -> (c, m, m, 3) float64 block sums, exact (integers).

    Two BLAS matmuls with 0/1 matrices: several times faster than ``np.add.reduceat``
    on uint8, and exact because every partial sum is an integer the float type holds.
    """
    c, px = len(t), t.shape[1]
    ft = _exact_float(px)
    e = _indicator(bounds, ft)
    m = e.shape[1]
    y = np.matmul(e.T, t.reshape(c, px, px * 3).astype(ft))  # (c, m, px*3): rows summed
    y = y.reshape(c * m, px, 3).transpose(0, 2, 1).reshape(c * m * 3, px) @ e
    return y.reshape(c, m, 3, m).transpose(0, 1, 3, 2).astype(np.float64)


def _coarse_starts(m: int) -> np.ndarray:
    """Start indices merging neighbouring fine segments in pairs, mirrored (palindromic)."""
    half = m // 2
    left = list(range(0, half, 2))
    mid = [half] if m % 2 else []
    return np.array(left + mid + [m - min(lo + 2, half) for lo in reversed(left)], dtype=np.intp)


def _orbit_matrix(m: int) -> np.ndarray:
    """(m*m, n_orbits) 0/1 matrix assigning each block to its rotation orbit."""
    ids = np.arange(m * m).reshape(m, m)
    rep = np.minimum.reduce([np.rot90(ids, k).ravel() for k in range(4)])
    # rot90 of the id grid lists, for each position, the block that lands there.
    _, orbit = np.unique(rep, return_inverse=True)
    mat = np.zeros((m * m, int(orbit.max()) + 1), dtype=np.int64)
    mat[np.arange(m * m), orbit] = 1
    return mat


@dataclass(slots=True)
class _Features:
    """Per-row lower-bound features, weighted so squared distances bound the MSE."""

    mean: np.ndarray  # (n,) overall mean
    orbit: np.ndarray  # (n, k) rotation-invariant orbit features
    block: np.ndarray  # (n, m, m, 3) rotation-aware block features


def _features(tensors: np.ndarray, rows: np.ndarray) -> _Features:
    """Features of ``tensors[rows]``, computed in chunks to bound memory."""
    n = len(rows)
    px = tensors.shape[1]
    d = px * px * 3
    b2 = _segments(px, _GRID_BLOCK)
    s2 = np.diff(b2)
    m2 = len(s2)
    cst = _coarse_starts(m2)
    s1 = np.add.reduceat(s2, cst)
    m1 = len(s1)
    orb = _orbit_matrix(m1).astype(np.float64)
    orbit_pixels = np.outer(s1, s1).ravel().astype(np.float64) @ orb  # (k,)
    w1 = 1.0 / np.sqrt(orbit_pixels * d)  # sum / sqrt(N d) = mean * sqrt(N / d)
    w2 = 1.0 / np.sqrt(np.outer(s2, s2).astype(np.float64) * d)
    mean = np.empty(n, dtype=np.float64)
    orbit = np.empty((n, orb.shape[1] * 3), dtype=np.float64)
    block = np.empty((n, m2, m2, 3), dtype=np.float64)
    for c0 in range(0, n, _CHUNK):
        t = tensors[rows[c0 : c0 + _CHUNK]]
        c = len(t)
        g2 = _block_sums(t, b2)  # exact integer sums as float64
        g1 = np.add.reduceat(np.add.reduceat(g2, cst, axis=1), cst, axis=2)
        o = np.einsum("cbk,bo->cok", g1.reshape(c, m1 * m1, 3), orb)  # (c, orbits, 3)
        mean[c0 : c0 + c] = o.sum(axis=(1, 2)) / d
        orbit[c0 : c0 + c] = (o * w1[None, :, None]).reshape(c, -1)
        block[c0 : c0 + c] = g2 * w2[None, :, :, None]
    return _Features(mean, orbit, block)


def _dim_buckets(*dims: tuple[np.ndarray, np.ndarray]) -> list[np.ndarray]:
    """Bucket ids such that equal ids <=> (w, h) equal up to swapping, shared across sets."""
    lo = np.concatenate([np.minimum(w, h) for w, h in dims]).astype(np.int64)
    hi = np.concatenate([np.maximum(w, h) for w, h in dims]).astype(np.int64)
    _, ids = np.unique(np.stack([lo, hi], axis=1), axis=0, return_inverse=True)
    ids = ids.ravel()
    out, at = [], 0
    for w, _h in dims:
        out.append(ids[at : at + len(w)])
        at += len(w)
    return out


def _verify(
    key: np.ndarray, tensors: np.ndarray, cands: np.ndarray, lbs: np.ndarray | None,
    threshold: float, rotate: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact MSE (min over allowed rotations) and rotation k of each candidate to ``key``.

    ``mse(key, rot90(b, k)) == mse(rot90(key, -k), b)``, so the key is rotated once per k
    instead of every candidate. Rotations whose lower bound exceeds the threshold are
    skipped: they cannot match, so they cannot be the minimum of a matching pair either.
    """
    c = len(cands)
    d = key.size
    acc = _acc_dtype(d)
    best = np.full(c, np.inf)
    best_k = np.zeros(c, dtype=np.int64)
    if c == 0:
        return best, best_k
    lim = threshold + _margin(threshold)
    x = None
    for k in range(4 if rotate else 1):
        sel = np.arange(c) if lbs is None else np.flatnonzero(lbs[:, k] <= lim)
        if len(sel) == 0:
            continue
        if x is None:
            x = tensors[cands].reshape(c, d).astype(acc)
        kr: np.ndarray = np.rot90(key, -k).reshape(d).astype(acc)
        diff = x[sel] - kr
        ss = np.einsum("ij,ij->i", diff, diff)
        m = ss / d
        better = m < best[sel]
        best[sel[better]] = m[better]
        best_k[sel[better]] = k
    return best, best_k


def _rot_lbs(feat: _Features, ia: np.ndarray, ib: np.ndarray, rotate: bool) -> np.ndarray:
    """(len(ia), 4 or 1) block lower bounds of mse(a, rot90(b, k)) for each pair."""
    out = np.empty((len(ia), 4 if rotate else 1))
    for c0 in range(0, len(ia), _PAIR_CHUNK):
        fa = feat.block[ia[c0 : c0 + _PAIR_CHUNK]]
        fb = feat.block[ib[c0 : c0 + _PAIR_CHUNK]]
        for k in range(out.shape[1]):
            diff = fa - np.rot90(fb, k, axes=(1, 2))
            out[c0 : c0 + len(fa), k] = np.einsum("cijk,cijk->c", diff, diff)
    return out


# --------------------------------------------------------------------------- threshold 0


def _rotation_hashes(tensors: np.ndarray, rows: np.ndarray, rotate: bool) -> np.ndarray:
    """(n, 4 or 1, 2) uint64: a 128-bit hash of each rotation of each row (chunked)."""
    px = tensors.shape[1]
    d = px * px * 3
    words = -(-d // 8)
    rng = np.random.default_rng(0x5EED)
    mult = rng.integers(1, 2**63, size=(2, words), dtype=np.uint64) | np.uint64(1)
    nrot = 4 if rotate else 1
    out = np.empty((len(rows), nrot, 2), dtype=np.uint64)
    buf = np.zeros((_CHUNK, words * 8), dtype=np.uint8)
    for c0 in range(0, len(rows), _CHUNK):
        t = tensors[rows[c0 : c0 + _CHUNK]]
        c = len(t)
        for k in range(nrot):
            buf[:c, :d] = np.rot90(t, k, axes=(1, 2)).reshape(c, d)
            w = buf[:c].view(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
            w ^= w >> np.uint64(31)
            out[c0 : c0 + c, k, 0] = (w * mult[0]).sum(axis=1)
            out[c0 : c0 + c, k, 1] = (w * mult[1]).sum(axis=1)
    return out


def _channel_sums(tensors: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(n, 3) exact per-channel sums (a rotation-invariant prefilter for threshold 0)."""
    px = tensors.shape[1]
    ft = _exact_float(px)
    ind: np.ndarray = np.tile(np.eye(3, dtype=ft), (px * px, 1))  # (d, 3)
    out = np.empty((len(rows), 3), dtype=np.float64)
    for c0 in range(0, len(rows), _CHUNK):
        t = tensors[rows[c0 : c0 + _CHUNK]]
        out[c0 : c0 + len(t)] = t.reshape(len(t), -1).astype(ft) @ ind
    return out


def _groups_exact(
    tensors: np.ndarray, rows: np.ndarray, rank: np.ndarray, bucket: np.ndarray | None,
    rotate: bool, prot: np.ndarray,
) -> list[tuple[int, list[tuple[int, float, int]]]]:
    """Groups for threshold 0 in local indices: classes of equality under rotation.

    The best-ranked row of a class is its key; protected rows are never claimed."""
    # Equal under rotation implies equal channel sums: hash only rows sharing them.
    sums = _channel_sums(tensors, rows)
    pre = [sums[:, 0], sums[:, 1], sums[:, 2]] + ([] if bucket is None else [bucket])
    o = np.lexsort(pre)
    sk = np.stack([k[o] for k in pre], axis=1)
    same = np.all(sk[1:] == sk[:-1], axis=1)
    shared = np.zeros(len(rows), dtype=bool)
    shared[o[1:][same]] = True
    shared[o[:-1][same]] = True
    sel = np.flatnonzero(shared)
    if len(sel) < 2:
        return []
    h = np.zeros((len(rows), 4 if rotate else 1, 2), dtype=np.uint64)
    h[sel] = _rotation_hashes(tensors, rows[sel], rotate)
    h0 = h[sel, :, 0]
    m0 = h0.min(axis=1)  # class id: the smallest of the four rotation hashes
    m1 = np.where(h0 == m0[:, None], h[sel, :, 1], np.uint64(2**64 - 1)).min(axis=1)
    keys = [m1, m0] if bucket is None else [m1, m0, bucket[sel]]
    o = np.lexsort([rank[sel], *keys])  # class, then rank inside the class
    order = sel[o]
    sk = np.stack([k[o] for k in keys], axis=1)
    starts = np.flatnonzero(np.r_[True, np.any(sk[1:] != sk[:-1], axis=1)])
    ends = np.r_[starts[1:], len(order)]
    multi = (ends - starts) > 1
    groups = []
    for s, e in zip(starts[multi], ends[multi], strict=False):
        cls = order[s:e]
        key = cls[0]
        kt = tensors[rows[key]]
        members, ok = [], True
        for b in cls[1:]:
            if prot[b]:
                continue
            hit = np.flatnonzero(np.all(h[b] == h[key, 0], axis=1))
            k = int(hit[0]) if len(hit) else 0
            if not len(hit) or not np.array_equal(np.rot90(tensors[rows[b]], k), kt):
                ok = False
                break
            members.append((int(b), 0.0, k))
        if ok:
            if members:
                groups.append((int(key), members))
            continue
        # Hash collision (never seen in practice): split the class exactly.
        left = list(cls)
        while len(left) > 1:
            key, rest, left, members = left[0], left[1:], [], []
            rest = [b for b in rest if not prot[b]]
            for b in rest:
                if prot[b]:
                    continue
                m, deg = mse_exact(tensors[rows[key]], tensors[rows[b]], rotate)
                (members.append((int(b), 0.0, deg // 90)) if m == 0 else left.append(b))
            if members:
                groups.append((int(key), members))
    groups.sort(key=lambda g: rank[g[0]])
    return groups


# --------------------------------------------------------------------------- threshold > 0


def _orbit_pairs(
    fs: np.ndarray, ns: np.ndarray, s: int, e: int, c0: int, c1: int, lim: float,
    bucket: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) offsets of the pairs of rows ``s:e`` and columns ``c0:c1`` whose orbit bound
    ``|a|^2 + |b|^2 - 2ab`` (one BLAS matmul) is within ``lim``: each unordered pair once,
    and within one dims bucket when ``bucket`` is given."""
    g = fs[s:e] @ fs[c0:c1].T
    g *= -2.0
    g += ns[s:e, None]
    g += ns[None, c0:c1]
    mask = g <= lim
    if c0 < e:  # the diagonal chunk: keep each unordered pair once
        mask &= np.arange(c0, c1)[None, :] > np.arange(s, e)[:, None]
    if bucket is not None:
        mask &= bucket[s:e, None] == bucket[None, c0:c1]
    ii, jj = np.nonzero(mask)
    return ii, jj


def _window_pairs(
    feat: _Features, comp: np.ndarray, fs: np.ndarray, bucket: np.ndarray | None, stop: int,
    threshold: float, rotate: bool, index: np.ndarray | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Blocks ``(a, b, rotation bounds)`` of the candidate pairs among rows sorted by
    ``comp`` (``fs``, ``bucket`` in that order): each of the first ``stop`` rows against
    the window of ``sqrt(threshold)`` after it, kept when the orbit bound and one rotation's
    bound are within the threshold. ``index`` maps sorted rows back to the caller's."""
    n = len(comp)
    r = min(math.sqrt(threshold), 256.0) + 1e-6
    lim = threshold + _margin(threshold)
    ns = np.einsum("ij,ij->i", fs, fs)
    for s in range(0, stop, _ROW_BLOCK):
        e = min(stop, n, s + _ROW_BLOCK)
        hi = int(np.searchsorted(comp, comp[e - 1] + r, side="right"))
        for c0 in range(s, hi, _COL_BLOCK):
            c1 = min(hi, c0 + _COL_BLOCK)
            ii, jj = _orbit_pairs(fs, ns, s, e, c0, c1, lim, bucket)
            if len(ii) == 0:
                continue
            ia, ib = s + ii, c0 + jj
            if index is not None:
                ia, ib = index[ia], index[ib]
            lbs = _rot_lbs(feat, ia, ib, rotate)
            keep = lbs.min(axis=1) <= lim
            yield ia[keep], ib[keep], lbs[keep]


def _sweep_pairs(
    feat: _Features, bucket: np.ndarray | None, threshold: float, rotate: bool, budget: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """All unordered pairs passing the three bounds, or None if more than ``budget``."""
    comp = feat.mean if bucket is None else bucket * 1024.0 + feat.mean
    order = np.argsort(comp, kind="stable")
    bs = None if bucket is None else bucket[order]
    out_a, out_b, total = [], [], 0
    for ia, ib, _ in _window_pairs(feat, comp[order], feat.orbit[order], bs, len(order),
                                   threshold, rotate, order):
        total += len(ia)
        if total > budget:
            return None
        out_a.append(ia)
        out_b.append(ib)
    if not out_a:
        e0 = np.zeros(0, dtype=np.intp)
        return e0, e0, np.zeros((0, 4 if rotate else 1))
    ia, ib = np.concatenate(out_a), np.concatenate(out_b)
    return ia, ib, _rot_lbs(feat, ia, ib, rotate)


def _claim_from_pairs(
    tensors: np.ndarray, rows: np.ndarray, rank: np.ndarray, pairs: tuple,
    threshold: float, rotate: bool, prot: np.ndarray,
) -> list[tuple[int, list[tuple[int, float, int]]]]:
    """Greedy claiming in rank order over candidate pairs, verifying lazily and exactly."""
    ia, ib, lbs = pairs
    swap = rank[ia] > rank[ib]
    a, b = np.where(swap, ib, ia), np.where(swap, ia, ib)
    if rotate:  # mse(b, rot_k a) pairs with mse(a, rot_-k b): mirror the bounds
        lbs = np.where(swap[:, None], lbs[:, [0, 3, 2, 1]], lbs)
    order = np.argsort(rank[a], kind="stable")
    a, b, lbs = a[order], b[order], lbs[order]
    starts = np.flatnonzero(np.r_[True, a[1:] != a[:-1]]) if len(a) else np.zeros(0, int)
    ends = np.r_[starts[1:], len(a)]
    claimed = np.zeros(len(rows), dtype=bool)
    groups = []
    for s, e in zip(starts, ends, strict=False):
        key = a[s]
        if claimed[key]:
            continue
        free = ~(claimed[b[s:e]] | prot[b[s:e]])
        cands, cl = b[s:e][free], lbs[s:e][free]
        if len(cands) == 0:
            continue
        mse, ks = _verify(tensors[rows[key]], tensors, rows[cands], cl, threshold, rotate)
        hit = mse <= threshold
        if hit.any():
            claimed[cands[hit]] = True
            groups.append(
                (int(key), [(int(m), float(v), int(k)) for m, v, k in zip(cands[hit], mse[hit], ks[hit], strict=False)])
            )
    return groups


def _claim_walk(
    tensors: np.ndarray, rows: np.ndarray, rank: np.ndarray, feat: _Features,
    bucket: np.ndarray | None, threshold: float, rotate: bool, prot: np.ndarray,
) -> list[tuple[int, list[tuple[int, float, int]]]]:
    """Dense fallback: each key in rank order against every still-unclaimed later row."""
    lim = threshold + _margin(threshold)
    alive = np.argsort(rank, kind="stable")
    norms = np.einsum("ij,ij->i", feat.orbit, feat.orbit)
    groups = []
    while len(alive) > 1:
        key, rest = alive[0], alive[1:]
        rest = rest[~prot[rest]]
        if bucket is not None:
            rest = rest[bucket[rest] == bucket[key]]
        lb = norms[rest] + norms[key] - 2.0 * (feat.orbit[rest] @ feat.orbit[key])
        cands = rest[lb <= lim]
        hit_rows = np.zeros(0, dtype=np.intp)
        if len(cands):
            lbs = _rot_lbs(feat, np.full(len(cands), key), cands, rotate)
            ok = lbs.min(axis=1) <= lim
            cands, lbs = cands[ok], lbs[ok]
            mse, ks = _verify(tensors[rows[key]], tensors, rows[cands], lbs, threshold, rotate)
            hit = mse <= threshold
            if hit.any():
                hit_rows = cands[hit]
                groups.append(
                    (int(key), [(int(m), float(v), int(k)) for m, v, k in zip(hit_rows, mse[hit], ks[hit], strict=False)])
                )
        alive = alive[1:]
        if len(hit_rows):
            alive = alive[~np.isin(alive, hit_rows)]
    return groups


# --------------------------------------------------------------------------- public API



def search_scope(
    widths: np.ndarray,
    heights: np.ndarray,
    sizes: np.ndarray,
    paths: Sequence[bytes],
    subset: np.ndarray | None,
    order: np.ndarray | None,
    protected: np.ndarray | None,
    same_dim: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, list[bytes]] | None:
    """The rows a search looks at and, per row, its rank (``order``, or difPy's rule), its
    protection (a reference file) and its dimension bucket; None when fewer than two rows.
    One place for what ``find_groups`` and the ``near`` search share."""
    n_all = len(paths)
    rows = np.arange(n_all) if subset is None else np.unique(np.asarray(subset, dtype=np.intp))
    if len(rows) < 2:
        return None
    w, h = np.asarray(widths)[rows], np.asarray(heights)[rows]
    local_paths = [paths[i] for i in rows]
    rank = np.empty(len(rows), dtype=np.int64)
    if order is None:
        rank[quality_order(w, h, np.asarray(sizes)[rows], local_paths)] = np.arange(len(rows))
    else:
        full = np.empty(n_all, dtype=np.int64)
        full[np.asarray(order, dtype=np.intp)] = np.arange(n_all)
        rank[:] = full[rows]
    prot = (np.zeros(len(rows), dtype=bool) if protected is None
            else np.asarray(protected, dtype=bool)[rows])
    bucket = _dim_buckets((w, h))[0] if same_dim else None
    return rows, rank, prot, bucket, local_paths


def find_groups(
    tensors: np.ndarray,
    widths: np.ndarray,
    heights: np.ndarray,
    sizes: np.ndarray,
    paths: list[bytes],
    threshold: float,
    rotate: bool = True,
    same_dim: bool = True,
    subset: np.ndarray | None = None,
    order: np.ndarray | None = None,
    protected: np.ndarray | None = None,
) -> list[Group]:
    """Groups in key quality-rank order; groups of one omitted (SEMANTICS.md section 4).

    ``subset`` restricts the search to those row indices (``in_folder``); indices in the
    result always refer to rows of the full input. ``order`` is the quality order of all
    rows, best first (``keep.quality_order``; default: difPy's, :func:`quality_order`).
    ``protected`` (bool per row) marks files that may be keys but are never claimed (a
    reference folder's). ``tensors`` is only read, so a read-only memory map is fine.
    """
    threshold = float(threshold)
    if not math.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold!r}")
    scope = search_scope(widths, heights, sizes, paths, subset, order, protected, same_dim)
    if scope is None:
        return []
    rows, rank, prot, bucket, local_paths = scope
    if threshold == 0:
        raw = _groups_exact(tensors, rows, rank, bucket, rotate, prot)
    else:
        feat = _features(tensors, rows)
        pairs = _sweep_pairs(feat, bucket, threshold, rotate, _PAIR_BUDGET)
        if pairs is None:
            raw = _claim_walk(tensors, rows, rank, feat, bucket, threshold, rotate, prot)
        else:
            raw = _claim_from_pairs(tensors, rows, rank, pairs, threshold, rotate, prot)
    out = []
    for key, members in raw:
        members.sort(key=lambda m: (m[1], local_paths[m[0]]))
        out.append(
            Group(int(rows[key]), tuple(Member(int(rows[i]), v, 90 * k) for i, v, k in members))
        )
    return out


def match_against(
    queries: np.ndarray,
    q_widths: np.ndarray,
    q_heights: np.ndarray,
    tensors: np.ndarray,
    widths: np.ndarray,
    heights: np.ndarray,
    threshold: float,
    rotate: bool = True,
    same_dim: bool = True,
) -> list[list[Member]]:
    """For each query, every catalog row matching it (mse <= threshold), by (mse, row index).

    ``Member.rotation`` rotates the catalog row onto the query. No claiming: a catalog row
    may match several queries.
    """
    threshold = float(threshold)
    if not math.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold!r}")
    m, n = len(queries), len(tensors)
    if m == 0:
        return []
    if n == 0:
        return [[] for _ in range(m)]
    qf = _features(queries, np.arange(m))
    cf = _features(tensors, np.arange(n))
    if same_dim:
        qb, cb = _dim_buckets((np.asarray(q_widths), np.asarray(q_heights)),
                              (np.asarray(widths), np.asarray(heights)))
    lim = threshold + _margin(threshold)
    cn = np.einsum("ij,ij->i", cf.orbit, cf.orbit)
    out: list[list[Member]] = []
    for q in range(m):
        lb = cn + qf.orbit[q] @ qf.orbit[q] - 2.0 * (cf.orbit @ qf.orbit[q])
        ok = lb <= lim
        if same_dim:
            ok &= cb == qb[q]
        cands = np.flatnonzero(ok)
        res: list[Member] = []
        if len(cands):
            fa = np.broadcast_to(qf.block[q], (len(cands), *qf.block.shape[1:]))
            lbs = np.stack(
                [np.einsum("cijk,cijk->c", d_ := fa - np.rot90(cf.block[cands], k, axes=(1, 2)), d_)
                 for k in range(4 if rotate else 1)], axis=1)
            keep = lbs.min(axis=1) <= lim
            cands, lbs = cands[keep], lbs[keep]
            mse, ks = _verify(queries[q], tensors, cands, lbs, threshold, rotate)
            hit = np.flatnonzero(mse <= threshold)
            res = sorted((Member(int(cands[i]), float(mse[i]), 90 * int(ks[i])) for i in hit),
                         key=lambda mm: (mm.mse, mm.index))
        out.append(res)
    return out


# --------------------------------------------------------------------------- band tasks


def pixel_sums(tensors: np.ndarray) -> np.ndarray:
    """(n,) int64 integer sum of every element of each tensor, chunked.

    Rotation does not change it, and ``(S_a - S_b)**2 / d**2 <= mse(a, b)`` (Jensen), so
    sorting by it lets a search cut the catalog into bands that only meet their neighbours.
    """
    n = len(tensors)
    out = np.empty(n, dtype=np.int64)
    for c0 in range(0, n, _CHUNK):
        t = np.asarray(tensors[c0 : c0 + _CHUNK])
        out[c0 : c0 + len(t)] = t.reshape(len(t), -1).sum(axis=1, dtype=np.int64)
    return out


def band_features(tensors: np.ndarray) -> _Features:
    """The lower-bound features ``band_matches`` uses (opaque; see ``concat_features``)."""
    return _features(tensors, np.arange(len(tensors)))


def concat_features(parts: Sequence[_Features]) -> _Features:
    """Features of concatenated rows (a band and its neighbour)."""
    return _Features(*(np.concatenate([getattr(p, k) for p in parts])
                       for k in ("mean", "orbit", "block")))


def band_matches(
    tensors: np.ndarray,
    bucket: np.ndarray | None,
    rank: np.ndarray,
    outer: int,
    threshold: float,
    rotate: bool,
    feat: _Features | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every matching pair of a task of the partitioned search, verified exactly.

    ``tensors`` are sorted by ``(bucket, pixel sum)``; the first ``outer`` rows are the
    task's own band, the rest its upper neighbour. Returned: every pair with at least one
    row in the own band and ``mse <= threshold``, as ``(a, b, mse, k)`` local row indices
    with ``rank[a] < rank[b]`` and ``mse == mse(a, rot90(b, k))`` -- the same pairs,
    values and rotations the in-memory search would verify, so claiming them in rank order
    gives its groups exactly. ``threshold`` must be > 0 (0 is a hash grouping per band).
    ``feat``: the rows' ``band_features`` when the caller keeps them from a previous task.
    """
    n = len(tensors)
    if feat is None:
        feat = band_features(tensors)
    # rows are sorted by (bucket, sum): the window of a block is contiguous after it
    comp = feat.mean if bucket is None else bucket * 1024.0 + feat.mean
    out: list[tuple[np.ndarray, ...]] = []
    for ia, ib, lbs in _window_pairs(feat, comp, feat.orbit, bucket, min(outer, n),
                                     threshold, rotate):
        swap = rank[ia] > rank[ib]
        a, b = np.where(swap, ib, ia), np.where(swap, ia, ib)
        if rotate:  # mse(b, rot_k a) pairs with mse(a, rot_-k b): mirror the bounds
            lbs = np.where(swap[:, None], lbs[:, [0, 3, 2, 1]], lbs)
        mse, ks = _verify_pairs(tensors, a, b, lbs, threshold, rotate)
        hit = mse <= threshold
        if hit.any():
            out.append((a[hit], b[hit], mse[hit], ks[hit]))
    if not out:
        e0 = np.zeros(0, dtype=np.intp)
        return e0, e0, np.zeros(0), np.zeros(0, dtype=np.int64)
    a, b, mse, ks = (np.concatenate(c) for c in zip(*out, strict=True))
    return a, b, mse, ks


def _verify_pairs(
    tensors: np.ndarray, a: np.ndarray, b: np.ndarray, lbs: np.ndarray, threshold: float,
    rotate: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """``_verify`` for many keys at once: exact min over allowed k of mse(a, rot90(b, k)).

    The integer sum of squares is the same whichever side is rotated, so the float mse and
    the winning k (the smallest on a tie) equal ``_verify``'s.
    """
    c = len(a)
    best = np.full(c, np.inf)
    best_k = np.zeros(c, dtype=np.int64)
    if c == 0:
        return best, best_k
    d = tensors[0].size
    acc = _acc_dtype(d)
    lim = threshold + _margin(threshold)
    for c0 in range(0, c, _PAIR_CHUNK // 4):
        sl = slice(c0, c0 + _PAIR_CHUNK // 4)
        ta = tensors[a[sl]].astype(acc)
        tb = tensors[b[sl]]
        for k in range(4 if rotate else 1):
            sel = np.flatnonzero(lbs[sl, k] <= lim)
            if len(sel) == 0:
                continue
            diff = ta[sel] - np.rot90(tb[sel], k, axes=(1, 2)).astype(acc)
            diff = diff.reshape(len(sel), d)
            m = np.einsum("ij,ij->i", diff, diff) / d
            cur = best[sl]
            kk = best_k[sl]
            better = m < cur[sel]
            cur[sel[better]] = m[better]
            kk[sel[better]] = k
    return best, best_k


def verified_pairs(
    tensors: np.ndarray, rows: np.ndarray, threshold: float, rotate: bool = True,
    bucket: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every unordered pair of ``tensors[rows]`` with true MSE <= ``threshold``, exactly.

    Local indices ``(a, b)``, the MSE and the rotation (degrees) of ``b`` onto ``a``; for a
    second measure that needs the MSE matches without claiming (near.py).
    """
    feat = _features(tensors, rows)
    swept = _sweep_pairs(feat, bucket, float(threshold), rotate, 2**62)
    assert swept is not None
    ia, ib, lbs = swept
    lim = threshold + _margin(threshold)
    d = int(np.prod(tensors.shape[1:]))
    best = np.full(len(ia), np.inf)
    best_k = np.zeros(len(ia), dtype=np.int64)
    for c0 in range(0, len(ia), _PAIR_CHUNK):
        a, b = rows[ia[c0 : c0 + _PAIR_CHUNK]], rows[ib[c0 : c0 + _PAIR_CHUNK]]
        for k in range(lbs.shape[1]):
            sel = np.flatnonzero(lbs[c0 : c0 + len(a), k] <= lim)
            if len(sel) == 0:
                continue
            # uint8 differences fit int16; the squares are summed in int64: exact
            x = tensors[a[sel]].reshape(len(sel), d)
            y = np.rot90(tensors[b[sel]], k, axes=(1, 2)).reshape(len(sel), d)
            diff = np.subtract(x, y, dtype=np.int16)
            ss = np.einsum("ij,ij->i", diff, diff, dtype=np.int64, casting="unsafe")
            m = ss / d
            cur = best[c0 + sel]
            better = m < cur
            best[c0 + sel[better]] = m[better]
            best_k[c0 + sel[better]] = k
    hit = best <= threshold
    return ia[hit], ib[hit], best[hit], 90 * best_k[hit]
