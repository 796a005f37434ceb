"""The ``near`` preset: duplicates as people make them (edits, mirrors, borders, crops).

``duplicates``, ``similar`` and numeric thresholds are difPy's MSE and live in match.py;
this module adds the second measure that only ``near`` uses, and groups with both.

A pair matches under ``near`` when either

* **mse**: the true MSE of difPy's tensors, minimum over the four rotations, is at most
  ``NEAR_THRESHOLD`` (the earlier preset, unchanged), or
* **correlation**: for one of the 8 orientations (4 rotations, each optionally mirrored)
  and one of the crop variants, the standardised luma of the two images correlates at
  least ``MIN_CORR`` *and* their detail (luma minus its best quadratic surface, again
  standardised) correlates at least ``MIN_DETAIL_CORR``. Standardising makes it blind to
  brightness, contrast, gamma-like tone curves, saturation and grey conversion; the detail
  term keeps smooth pictures (sky, bokeh, gradients) from matching each other, and an image
  whose detail is weaker than ``MIN_DETAIL`` (grey levels RMS) is left to the MSE.

Features come from the cached 50 px tensor alone (no decode, nothing stored): uniform
borders (letterbox bars, screenshot margins) are trimmed on luma, and the rest is
area-resampled to ``SIDE x SIDE`` luma three times: the whole trimmed picture and its
central ``CROPS`` shares (so a copy whose borders were cropped meets its original's centre).

Search is exact for that rule: a lower bound on the distance between standardised vectors
(``|a - b|^2 = 2 D (1 - corr)``) from their coarse 4 x 4 block projections, one BLAS
product per block of rows against every orientation of the others, skips pairs that
cannot match; the survivors are checked per orientation and variant on the coarse grid,
then in full (float64). Groups are claimed in quality-rank order over the union of both
rules, as in match.py, so results never depend on file order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .params import NEAR_THRESHOLD

__all__ = ["NEAR_VERSION", "NearGroup", "NearMember", "features", "find_groups", "orient",
           "pair_scores", "search"]

#: Bumped whenever the features or the rule change.
NEAR_VERSION = "near-1"
#: Resampled luma side, the crop variant's share, and the border trimming parameters.
SIDE = 16
CROPS = (0.96, 0.92)
TRIM_TOL = 8
TRIM_SHARE = 0.97
TRIM_MAX = 0.45
#: Calibrated thresholds (docs/quality.md, tests/benchmarks/bench_near.py).
MIN_CORR = 0.90
MIN_DETAIL_CORR = 0.94
MIN_DETAIL = 3.0
#: Variant pairs compared: (a's, b's); 0 = whole trimmed picture, 1.. = its centres.
COMBOS = ((0, 0), (0, 1), (1, 0), (0, 2), (2, 0))
_BLOCK = 2  # coarse grid for the bounds: SIDE / _BLOCK = 8 blocks a side
_CHUNK = 512
_ROWS = 256
_PAIR_CHUNK = 4096
_EPS = 1e-6


@dataclass(frozen=True, slots=True)
class NearMember:
    """One image claimed by a key, and why."""

    index: int  #: row index into the input arrays
    mse: float  #: exact true MSE to the key (min over the four rotations)
    rotation: int  #: degrees (np.rot90 direction) bringing the member onto the key
    mirror: bool  #: the member is mirrored left-right before ``rotation``
    measure: str  #: "mse" or "correlation": the rule that matched
    value: float  #: the MSE, or the detail correlation, that matched


@dataclass(frozen=True, slots=True)
class NearGroup:
    key: int
    members: tuple[NearMember, ...]


@dataclass(slots=True)
class Features:
    """Per image: standardised luma and detail of each variant, flattened (n, 2, D)."""

    full: np.ndarray
    detail: np.ndarray
    cfull: np.ndarray  #: coarse projections of ``full`` and ``detail`` (n, v, m, m)
    cdetail: np.ndarray
    energy: np.ndarray  #: detail RMS of variant 0, grey levels
    eligible: np.ndarray  #: may match by correlation


# --------------------------------------------------------------------------- features


def orient(x: np.ndarray, o: int) -> np.ndarray:
    """Orientation ``o`` (0-7) of square arrays on axes (-2, -1): o % 4 quarter turns,
    after a left-right mirror when o >= 4."""
    if o >= 4:
        x = x[..., ::-1]
    return np.rot90(x, o % 4, axes=(-2, -1))


def _inverse(o: np.ndarray) -> np.ndarray:
    """The orientation undoing ``o``: turns reverse, mirrored ones are their own inverse."""
    return np.where(o < 4, (4 - o) % 4, o)


def trim_boxes(lum: np.ndarray) -> np.ndarray:
    """(n, 4) float boxes (x0, y0, x1, y1) inside (n, px, px) luma images without their
    uniform borders: leading rows/columns whose pixels are nearly all within ``TRIM_TOL``
    of the outer ring's median. Luma only, so a grey copy trims like its colour original."""
    px = lum.shape[1]
    ring = np.concatenate([lum[:, 0], lum[:, -1], lum[:, :, 0], lum[:, :, -1]], axis=1)
    level = np.median(ring, axis=1)
    close = np.abs(lum - level[:, None, None]) <= TRIM_TOL
    rows = close.mean(axis=2) >= TRIM_SHARE
    cols = close.mean(axis=1) >= TRIM_SHARE
    lim = int(TRIM_MAX * px)

    def lead(m: np.ndarray) -> np.ndarray:
        return np.minimum(np.where(m.all(axis=1), px, np.argmin(m, axis=1)), lim)

    top, bottom = lead(rows), lead(rows[:, ::-1])
    left, right = lead(cols), lead(cols[:, ::-1])
    return np.stack([left, top, px - right, px - bottom], axis=1).astype(np.float64)


def _area_weights(lo: np.ndarray, hi: np.ndarray, px: int, side: int) -> np.ndarray:
    """(n, side, px): weight of pixel k in output cell i, the share of the cell
    ``[lo + i w, lo + (i + 1) w)`` it covers (``w = (hi - lo) / side``); rows sum to 1."""
    t = np.linspace(0.0, 1.0, side + 1)
    edges = lo[:, None] + t[None] * (hi - lo)[:, None]  # (n, side + 1)
    k = np.arange(px, dtype=np.float64)
    cover = (np.minimum(edges[:, 1:, None], k + 1) - np.maximum(edges[:, :-1, None], k))
    w = np.maximum(cover, 0.0)
    out: np.ndarray = w / np.maximum(w.sum(axis=2, keepdims=True), _EPS)
    return out


def _area_resample(lum: np.ndarray, boxes: np.ndarray, side: int) -> np.ndarray:
    """Exact area averages of (n, px, px) images over a side x side grid inside each box
    (x0, y0, x1, y1): two batched matmuls with the separable cover weights."""
    px = lum.shape[1]
    wy = _area_weights(boxes[:, 1], boxes[:, 3], px, side)
    wx = _area_weights(boxes[:, 0], boxes[:, 2], px, side)
    out: np.ndarray = wy @ lum @ wx.transpose(0, 2, 1)
    return out


def _smooth_basis(side: int) -> np.ndarray:
    """Orthonormal (D, 6) basis of quadratic surfaces on the grid (invariant under D4)."""
    g = (np.arange(side) - (side - 1) / 2) / side
    yy, xx = np.meshgrid(g, g, indexing="ij")
    b = np.stack([np.ones_like(xx), xx, yy, xx * xx, yy * yy, xx * yy], axis=-1)
    q, _ = np.linalg.qr(b.reshape(side * side, 6))
    return q


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rms = np.sqrt(np.einsum("...i,...i->...", x, x) / x.shape[-1])
    return x / np.maximum(rms, _EPS)[..., None], rms


def features(tensors: np.ndarray, rows: np.ndarray | None = None) -> Features:
    """Near features of ``tensors[rows]`` (chunked to bound memory)."""
    rows = np.arange(len(tensors)) if rows is None else np.asarray(rows, dtype=np.intp)
    n, d = len(rows), SIDE * SIDE
    q = _smooth_basis(SIDE)
    nv = 1 + len(CROPS)
    full = np.empty((n, nv, d))
    detail = np.empty((n, nv, d))
    energy = np.empty(n)
    flat_rms = np.empty(n)
    for c0 in range(0, n, _CHUNK):
        t = np.asarray(tensors[rows[c0 : c0 + _CHUNK]])
        c = len(t)
        ti = t.astype(np.int32)
        lum = (ti[..., 0] * 299 + ti[..., 1] * 587 + ti[..., 2] * 114) / 1000.0
        box = trim_boxes(lum)
        cx, cy = (box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2
        bw, bh = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
        boxes = [box] + [np.stack([cx - bw * s / 2, cy - bh * s / 2, cx + bw * s / 2,
                                   cy + bh * s / 2], axis=1) for s in CROPS]
        for v, b in enumerate(boxes):
            r = _area_resample(lum, b, SIDE).reshape(c, d)
            f = r - r.mean(axis=1, keepdims=True)
            full[c0 : c0 + c, v], rms = _standardise(f)
            dt = r - (r @ q) @ q.T
            detail[c0 : c0 + c, v], e = _standardise(dt)
            if v == 0:
                energy[c0 : c0 + c], flat_rms[c0 : c0 + c] = e, rms
    eligible = (energy >= MIN_DETAIL) & (flat_rms > _EPS)
    return Features(full, detail, _coarse(full), _coarse(detail), energy, eligible)


# --------------------------------------------------------------------------- scores


def _limits() -> tuple[float, float]:
    """Squared-distance limits for standardised vectors: ``corr >= c`` <=> ``|a - b|^2 <=
    2 D (1 - c)``, with a little slack so float rounding never drops a match."""
    d = SIDE * SIDE
    return 2 * d * (1 - MIN_CORR) + 1e-6 * d, 2 * d * (1 - MIN_DETAIL_CORR) + 1e-6 * d


def _coarse(x: np.ndarray) -> np.ndarray:
    """(..., D) -> (..., m, m) block sums / sqrt(block size): an orthogonal projection's
    coordinates, so distances between them never exceed the full distance. The grid is
    symmetric, so orienting the image orients the blocks."""
    m = SIDE // _BLOCK
    ind = np.zeros((SIDE, m))
    ind[np.arange(SIDE), np.arange(SIDE) // _BLOCK] = 1.0 / math.sqrt(_BLOCK)
    y = x.reshape(-1, SIDE, SIDE)
    out: np.ndarray = (ind.T @ y @ ind).reshape(*x.shape[:-1], m, m)
    return out


def pair_scores(feat: Features, ia: np.ndarray, ib: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each pair: whether some (orientation of b, variant pair) matches, the best such
    orientation and its detail correlation (float64, full vectors). Triples whose coarse
    bounds already fail are skipped: they cannot match."""
    d = SIDE * SIDE
    lim_f, lim_d = _limits()
    p, nc = len(ia), len(COMBOS)
    score = np.full((p, 8, nc), -np.inf)
    va = np.array([c[0] for c in COMBOS])
    vb = np.array([c[1] for c in COMBOS])
    for c0 in range(0, p, _PAIR_CHUNK):
        a, b = ia[c0 : c0 + _PAIR_CHUNK], ib[c0 : c0 + _PAIR_CHUNK]
        cfa, cda = feat.cfull[a][:, va], feat.cdetail[a][:, va]  # (c, combos, m, m)
        cfb, cdb = feat.cfull[b][:, vb], feat.cdetail[b][:, vb]
        for o in range(8):
            ef = cfa - orient(cfb, o)
            ed = cda - orient(cdb, o)
            alive = ((np.einsum("ijkl,ijkl->ij", ef, ef) <= lim_f)
                     & (np.einsum("ijkl,ijkl->ij", ed, ed) <= lim_d))
            pi, ci = np.nonzero(alive)
            if len(pi) == 0:
                continue
            pa, pb = a[pi], b[pi]
            of = orient(feat.full[pb, vb[ci]].reshape(-1, SIDE, SIDE), o).reshape(-1, d)
            od = orient(feat.detail[pb, vb[ci]].reshape(-1, SIDE, SIDE), o).reshape(-1, d)
            cf = np.einsum("ij,ij->i", feat.full[pa, va[ci]], of) / d
            cd = np.einsum("ij,ij->i", feat.detail[pa, va[ci]], od) / d
            ok = (cf >= MIN_CORR) & (cd >= MIN_DETAIL_CORR)
            score[c0 + pi[ok], o, ci[ok]] = cd[ok]
    flat = score.reshape(p, 8 * nc)
    k = np.argmax(flat, axis=1) if p else np.zeros(0, dtype=np.intp)
    best = flat[np.arange(p), k]
    ok = np.isfinite(best) & feat.eligible[ia] & feat.eligible[ib]
    return ok, k // nc, best


def _max_product(x: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """(r, k) x (o, c, k) -> (r, c): the largest product over the orientations ``o``."""
    g = x @ ys[0].T
    for o in range(1, len(ys)):
        np.maximum(g, x @ ys[o].T, out=g)
    return g


def candidate_pairs(feat: Features, rows_ok: np.ndarray, bucket: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Unordered pairs (i < j) of eligible rows that the coarse luma bound cannot rule out.

    Blocks of rows against every orientation of every other row, one BLAS matmul each
    (float64): whole picture against whole picture (radius ``r``), and whole picture
    against the first centre crop, for all ordered pairs, with the radius grown by the
    coarse distance between the two crops (triangle inequality), so that one product
    covers every crop variant, and the reversed variant pairs come from the reversed order.
    """
    lim_f, _ = _limits()
    idx = np.flatnonzero(rows_ok)
    n = len(idx)
    if n < 2:
        none = np.zeros(0, dtype=np.intp)
        return none, none
    c = feat.cfull[idx]  # (n, v, m, m)
    k = c.shape[2] * c.shape[3]
    # float32 products (twice as fast, half the memory); their rounding error, at most
    # about k * 2**-23 * |x| |y| <= 2e-3 here, is covered by ``tol``
    x = c[:, 0].reshape(n, k).astype(np.float32)
    sq = (c[:, 0].reshape(n, k) ** 2).sum(axis=1)
    y0 = np.stack([orient(c[:, 0], o).reshape(n, k) for o in range(8)]).astype(np.float32)
    y1 = np.stack([orient(c[:, 1], o).reshape(n, k) for o in range(8)]).astype(np.float32)
    sq1 = (c[:, 1].reshape(n, k) ** 2).sum(axis=1)
    spread = np.zeros(n)
    for v in range(2, c.shape[1]):
        spread = np.maximum(spread, np.sqrt(((c[:, v] - c[:, 1]) ** 2).sum(axis=(1, 2))))
    r = math.sqrt(lim_f)
    tol = 0.05
    bk = None if bucket is None else bucket[idx]
    # |x - y|^2 <= R^2  <=>  x.y - |y|^2 / 2 >= (|x|^2 - R^2) / 2: one subtraction per entry
    col0 = (sq / 2).astype(np.float32)
    col1 = ((sq1 - (r + spread) ** 2) / 2).astype(np.float32)
    row0 = (sq - r * r - tol) / 2
    row1 = (sq - tol) / 2
    found: list[np.ndarray] = []
    for s in range(0, n, _ROWS):
        e = min(n, s + _ROWS)
        rows = np.arange(s, e)
        # whole against whole, later rows only
        g = _max_product(x[s:e], y0[:, s:])
        g -= col0[None, s:]
        keep = g >= row0[s:e, None]
        keep[:, : e - s] &= np.arange(s, e)[None, :] > rows[:, None]
        ii, jj = np.nonzero(keep)
        found.append(np.stack([ii + s, jj + s]))
        # whole against the other's crops, every other row (both orders)
        g = _max_product(x[s:e], y1)
        g -= col1[None, :]
        keep = g >= row1[s:e, None]
        keep[np.arange(e - s), rows] = False
        ii, jj = np.nonzero(keep)
        found.append(np.stack([np.minimum(ii + s, jj), np.maximum(ii + s, jj)]))
    pairs = np.unique(np.concatenate(found, axis=1), axis=1)
    if bk is not None:
        pairs = pairs[:, bk[pairs[0]] == bk[pairs[1]]]
    return idx[pairs[0]], idx[pairs[1]]


# --------------------------------------------------------------------------- groups


def search(
    tensors: np.ndarray,
    widths: np.ndarray,
    heights: np.ndarray,
    sizes: np.ndarray,
    paths: list[bytes],
    same_dim: bool = False,
    subset: np.ndarray | None = None,
    order: np.ndarray | None = None,
    protected: np.ndarray | None = None,
) -> list[NearGroup]:
    """``near`` groups, as match.find_groups' (same ranks, subset and protected rows);
    members by (mse, path), keys in rank order."""
    from . import match

    scope = match.search_scope(widths, heights, sizes, paths, subset, order, protected, same_dim)
    if scope is None:
        return []
    rows, rank, prot, bucket, local_paths = scope
    pairs = match.verified_pairs(tensors, rows, NEAR_THRESHOLD, True, bucket)
    out = []
    for key, members in find_groups(tensors, rank, rows, prot, bucket, pairs):
        members.sort(key=lambda m: (m.mse, local_paths[m.index]))
        out.append(NearGroup(int(rows[key]), tuple(
            NearMember(int(rows[m.index]), m.mse, m.rotation, m.mirror, m.measure, m.value)
            for m in members)))
    return out


def find_groups(
    tensors: np.ndarray,
    rank: np.ndarray,
    rows: np.ndarray,
    prot: np.ndarray,
    bucket: np.ndarray | None,
    mse_pairs: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> list[tuple[int, list[NearMember]]]:
    """Groups (local row indices) claimed in rank order over the union of both rules.

    ``mse_pairs`` are the verified MSE matches (a, b, mse, rotation of b onto a) in local
    indices; the correlation matches are found here.
    """
    from .match import mse_exact

    n = len(rows)
    feat = features(tensors, rows)
    ca, cb = candidate_pairs(feat, feat.eligible, bucket)
    ok, orient_b, value = pair_scores(feat, ca, cb)
    ca, cb, orient_b, value = ca[ok], cb[ok], orient_b[ok], value[ok]
    ma, mb, mmse, mrot = mse_pairs
    # one table of undirected matches: (a, b, measure 0=mse/1=corr, value, orientation of b)
    a = np.concatenate([ma, ca]).astype(np.intp)
    b = np.concatenate([mb, cb]).astype(np.intp)
    meas = np.concatenate([np.zeros(len(ma), np.int8), np.ones(len(ca), np.int8)])
    val = np.concatenate([np.asarray(mmse, float), value])
    ori = np.concatenate([np.asarray(mrot, np.int64) // 90, orient_b])
    # direct each pair from the better-ranked image; the orientation follows
    swap = rank[a] > rank[b]
    a, b = np.where(swap, b, a), np.where(swap, a, b)
    ori = np.where(swap, _inverse(ori), ori)
    # the MSE rule first: where both matched, report the MSE
    order = np.lexsort((meas, b, rank[a]))
    a, b, meas, val, ori = a[order], b[order], meas[order], val[order], ori[order]
    first = np.r_[True, (a[1:] != a[:-1]) | (b[1:] != b[:-1])] if len(a) else np.zeros(0, bool)
    a, b, meas, val, ori = a[first], b[first], meas[first], val[first], ori[first]
    starts = np.flatnonzero(np.r_[True, a[1:] != a[:-1]]) if len(a) else np.zeros(0, int)
    ends = np.r_[starts[1:], len(a)]
    claimed = np.zeros(n, dtype=bool)
    groups: list[tuple[int, list[NearMember]]] = []
    for s, e in zip(starts, ends, strict=False):
        key = int(a[s])
        if claimed[key]:
            continue
        sel = np.flatnonzero(~(claimed[b[s:e]] | prot[b[s:e]])) + int(s)
        if len(sel) == 0:
            continue
        claimed[b[sel]] = True
        kt = tensors[rows[key]]
        members = []
        for i in sel:
            m = int(b[i])
            if meas[i] == 0:
                mse, rot = float(val[i]), 90 * int(ori[i])
            else:
                mse, rot = mse_exact(kt, tensors[rows[m]], True)
            o = int(ori[i])
            members.append(NearMember(
                m, mse, 90 * (o % 4) if meas[i] else rot, bool(o >= 4 and meas[i]),
                "mse" if meas[i] == 0 else "correlation",
                float(val[i]) if meas[i] else mse,
            ))
        groups.append((key, members))
    return groups


