"""The ``near`` preset: duplicates as people make them (edits, mirrors, borders, crops).

``duplicates``, ``similar`` and numeric thresholds are difPy's MSE and live in match.py;
this module adds the two measures that only ``near`` uses, and groups with all three.

A pair matches under ``near`` when

* **mse**: the true MSE of difPy's tensors, minimum over the four rotations, is at most
  ``NEAR_THRESHOLD`` (the earlier preset, unchanged), or
* **correlation**: for one of the 8 orientations (4 rotations, each optionally mirrored)
  and one of the crop variants, the standardised luma of the two images correlates at
  least ``MIN_CORR`` *and* their detail (luma minus its best quadratic surface, again
  standardised) correlates at least ``MIN_DETAIL_CORR``. Standardising makes it blind to
  brightness, contrast, gamma-like tone curves, saturation and grey conversion; the detail
  term keeps smooth pictures (sky, bokeh, gradients) from matching each other, and an image
  whose detail is weaker than ``MIN_DETAIL`` (grey levels RMS) is left to the MSE, or
* **fine**: for one of the 8 orientations, the whole *untrimmed* tensors' luma correlates
  at least ``MIN_CORR`` and its detail at least ``MIN_FINE_CORR`` (``fine_pairs``): for
  tone edits that change what the border trimming sees, so the trimmed pictures no
  longer line up. Only pairs with a trimmed picture are compared.

Features come from the cached 50 px tensor alone (``lumas``, ``fine_features`` and what a
search makes of them, ``search_features``; the catalog stores all three per image, so a
search only reads them): uniform borders (letterbox bars, screenshot margins)
are trimmed on luma, and the rest is area-resampled to ``SIDE x SIDE`` luma three times:
the whole trimmed picture and its central ``CROPS`` shares (so a copy whose borders were
cropped meets its original's centre).

Search is exact for both rules, and no pair is compared in 8 orientations until it is
likely to match. Each picture gets *orientation invariants* (``_fold``): the low DCT
frequencies of its vectors, folded so that a mirror or a quarter turn leaves them alone
and no distance grows, so their distance is a lower bound of the distance in the best
orientation. ``join`` finds the pairs within the rule's radius with one BLAS product per
block of rows (sorted on the first invariant, so for the MSE rule only pictures of about
the same brightness meet); the survivors are checked per orientation, first on coarse
blocks, then in full (float64 correlations; integer MSE), MSE candidates lazily, only
where the claiming can depend on them. Groups are claimed in quality-rank order over the
union of the rules, as in match.py, so results never depend on file order; a picture the
claiming leaves out joins the group of a picture it matches (``_attach``: one hop).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np

from .params import NEAR_THRESHOLD

__all__ = ["MEASURES", "NEAR_VERSION", "NearGroup", "NearMember", "features", "find_groups", "orient",
           "pair_scores", "search"]

#: Bumped whenever the stored features (``lumas``, ``fine_features``, ``search_features``)
#: change: the catalog keeps it beside them, and a search computes rows of another version
#: again.
NEAR_VERSION = "near-4"
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
#: The fine rule: detail correlation of the whole, untrimmed tensor's luma (docs/quality.md).
MIN_FINE_CORR = 0.98
#: The measures, as ``NearMember.measure`` names them (the table's codes 0, 1, 2).
MEASURES = ("mse", "correlation", "fine")
#: Variant pairs compared: (a's, b's); 0 = whole trimmed picture, 1.. = its centres.
COMBOS = ((0, 0), (0, 1), (1, 0), (0, 2), (2, 0))
#: DCT frequencies (k + l below it) of the folded invariants: correlation rule on the
#: 16 px luma; MSE rule on a 10 x 10 block grid, luma and two chroma channels.
_K_CORR = 11
_K_MSE = 8
_K_CHROMA = 3
_K_FINE = 8
_MSE_GRID = 10
_BLOCK = 2  # coarse grid for the bounds: SIDE / _BLOCK = 8 blocks a side
_CHUNK = 512
_ROWS = 256
_JOIN_DIMS = 32  # coordinates of the correlation rule's joins (``candidate_pairs``)
_PAIR_CHUNK = 4096
_STRIP = 1  # block rows of pixels ``exact_mse`` reads at a time
_WAVE = 2048  # MSE candidates verified at once in claim order (``_claim``)
_QUERY_ROWS = 8192  # catalog rows ``query`` holds at once
_EPS = 1e-6
_SLACK = 1.0 + 1e-5  # radius of the joins on invariants stored as float32
_LUMA = np.array([299, 587, 114], dtype=np.float32)


@dataclass(frozen=True, slots=True)
class NearMember:
    """One image claimed by a key, and why."""

    index: int  #: row index into the input arrays
    mse: float  #: exact true MSE to the key (min over the four rotations)
    rotation: int  #: degrees (np.rot90 direction) bringing the member onto the key
    mirror: bool  #: the member is mirrored left-right before ``rotation``
    measure: str  #: "mse", "correlation" or "fine": the rule that matched (``MEASURES``)
    value: float  #: the MSE, or the detail correlation, that matched
    #: None: matched the key. Else the row of the group's member it matched (the member
    #: joined after the claiming, ``_attach``); ``measure`` and ``value`` are then to it,
    #: ``rotation`` and ``mirror`` still bring the member onto the key.
    via: int | None = None


@dataclass(frozen=True, slots=True)
class NearGroup:
    key: int
    members: tuple[NearMember, ...]


@dataclass(slots=True)
class Features:
    """Per image: what the correlation rule's joins need (orientation invariants, detail
    energy: ``_corr_of``, stored in the catalog); the full standardised vectors and
    their coarse projections are made from the stored lumas only for the pictures a pair
    needs (``vectors``, ``coarse``)."""

    stored: np.ndarray  #: the (n, V, D) ``lumas`` they come from
    energy: np.ndarray  #: detail RMS of variant 0, grey levels
    eligible: np.ndarray  #: may match by correlation
    #: orientation invariants of ``full`` and ``detail`` (n, v, k), scaled so that a
    #: squared distance above 1 rules a pair out (``_fold``)
    efull: np.ndarray
    edetail: np.ndarray

    def vectors(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(c, V, D) float64 standardised luma (mean 0, RMS 1) and detail (luma minus its
        best quadratic surface, RMS 1) of ``rows``."""
        return _full_and_detail(np.array(self.stored[rows], dtype=np.float64))

    def coarse(self, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        """(c, V, m, m) coarse projections (``_coarse``) of ``rows``' standardised luma and
        detail, with their full vectors (``vectors``)."""
        full, detail = self.vectors(rows)
        return _coarse(full), _coarse(detail), full, detail

    @property
    def full(self) -> np.ndarray:
        """Every picture's standardised luma (``vectors``; for tests and brute forces)."""
        return self.vectors(np.arange(len(self.stored)))[0]

    @property
    def detail(self) -> np.ndarray:
        """Every picture's standardised detail (``vectors``)."""
        return self.vectors(np.arange(len(self.stored)))[1]


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


def _compose_table() -> np.ndarray:
    """(8, 8): ``[o1, o2]`` is the orientation o with ``orient(orient(x, o1), o2) ==
    orient(x, o)`` (the 8 orientations act faithfully on a 2 x 2 grid)."""
    x = np.arange(4).reshape(2, 2)
    seen = [orient(x, o).tobytes() for o in range(8)]
    return np.array([[seen.index(orient(orient(x, o1), o2).tobytes()) for o2 in range(8)]
                     for o1 in range(8)], dtype=np.int64)


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


@cache
def _smooth_basis(side: int) -> np.ndarray:
    """Orthonormal (D, 6) basis of quadratic surfaces on the grid (invariant under D4)."""
    g = (np.arange(side) - (side - 1) / 2) / side
    yy, xx = np.meshgrid(g, g, indexing="ij")
    b = np.stack([np.ones_like(xx), xx, yy, xx * xx, yy * yy, xx * yy], axis=-1)
    q, _ = np.linalg.qr(b.reshape(side * side, 6))
    return q


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x`` divided by its RMS over the last axis, in place, and that RMS."""
    rms = np.sqrt(np.einsum("...i,...i->...", x, x) / x.shape[-1])
    x /= np.maximum(rms, _EPS)[..., None]
    return x, rms


def _full_and_detail(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., D) float64 square pictures, flattened -> their standardised luma (mean 0, RMS
    1) and detail (minus the best quadratic surface, RMS 1): what both correlation rules
    compare, on the 16 px variants and on the whole tensors."""
    d = x.shape[-1]
    q = _smooth_basis(math.isqrt(d))
    detail, _ = _standardise(x - ((x.reshape(-1, d) @ q) @ q.T).reshape(x.shape))
    full, _ = _standardise(x - x.mean(axis=-1, keepdims=True))
    return full, detail


def _luma_boxes(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(c, px, px) luma of a chunk of tensors (``_luma``) and its ``trim_boxes``: what both
    stored features start from, made once for both."""
    lum = _luma(t, slice(None)).reshape(len(t), t.shape[1], t.shape[2])
    return lum, trim_boxes(lum)


def _lumas_of(lum: np.ndarray, box: np.ndarray) -> np.ndarray:
    """(c, V, D): the area-averaged ``SIDE x SIDE`` luma inside each trimmed box and its
    central ``CROPS`` shares."""
    c = len(lum)
    out = np.empty((c, 1 + len(CROPS), SIDE * SIDE), dtype=np.float32)
    cx, cy = (box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2
    bw, bh = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
    boxes = [box] + [np.stack([cx - bw * s / 2, cy - bh * s / 2, cx + bw * s / 2,
                               cy + bh * s / 2], axis=1) for s in CROPS]
    for v, b in enumerate(boxes):
        out[:, v] = _area_resample(lum, b, SIDE).reshape(c, SIDE * SIDE)
    return out


def _fine_of(lum: np.ndarray, box: np.ndarray) -> np.ndarray:
    """(c, F + 2): ``fine_features`` of a chunk from its luma and trim boxes."""
    c, px = len(lum), lum.shape[1]
    d = px * px
    proj, plan = _fine_projection(px)
    flat = lum.reshape(c, d)
    co = flat @ proj
    smooth = np.einsum("ij,ij->i", co[:, :6], co[:, :6])
    energy = np.sqrt(np.maximum(np.einsum("ij,ij->i", flat, flat) - smooth, 0.0) / d)
    centred = flat - flat.mean(axis=1, keepdims=True)
    spread = np.sqrt(np.einsum("ij,ij->i", centred, centred) / d)
    out = np.empty((c, _fine_width() + 2), dtype=np.float32)
    out[:, :-2] = _fold(co[:, 6:] / np.maximum(energy, _EPS)[:, None], plan)
    out[:, -2] = (energy >= MIN_DETAIL) & (spread > _EPS)
    out[:, -1] = (box != np.array([0, 0, px, px], dtype=np.float64)).any(axis=1)
    return out


def lumas(tensors: np.ndarray) -> np.ndarray:
    """(n, V, D) float32: each tensor's luma, uniform borders trimmed, area-averaged to
    ``SIDE x SIDE`` over the whole trimmed picture and its central ``CROPS`` shares.

    What the catalog stores per image (``pack``, with ``fine_features``); everything else
    of the correlation rule is derived from it."""
    return stored_of(tensors, fine=False, extra=False)[0]


def fine_features(tensors: np.ndarray) -> np.ndarray:
    """(n, F + 2) float32 per tensor, what the fine rule needs of it: the orientation
    invariants of its standardised detail (``fine_candidates``), then 1.0 where its detail
    is strong enough to match (``MIN_DETAIL``) and 1.0 where ``trim_boxes`` trims a border.
    Stored in the catalog beside ``lumas``; float32 like them, and the search allows for
    that rounding."""
    return stored_of(tensors, lum=False, extra=False)[1]


def stored_of(tensors: np.ndarray, lum: bool = True, fine: bool = True, extra: bool = True
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, V, D) ``lumas``, (n, F + 2) ``fine_features`` and (n, E) ``search_features`` of
    ``tensors`` (each left empty when not asked for), chunk by chunk, each chunk's luma and
    trim boxes made once."""
    n = len(tensors)
    out = np.zeros((n if lum or extra else 0, 1 + len(CROPS), SIDE * SIDE), dtype=np.float32)
    out_fine = np.zeros((n if fine else 0, _fine_width() + 2), dtype=np.float32)
    for c0 in range(0, n, _CHUNK):
        luma, box = _luma_boxes(np.asarray(tensors[c0 : c0 + _CHUNK]))
        if lum or extra:
            out[c0 : c0 + len(luma)] = _lumas_of(luma, box)
        if fine:
            out_fine[c0 : c0 + len(luma)] = _fine_of(luma, box)
    more = np.concatenate([_corr_of(out), mse_sums(tensors)], axis=1) if extra and n else \
        np.zeros((0, 0), dtype=np.float32)
    return (out if lum else out[:0]), out_fine, more


def search_features(tensors: np.ndarray) -> np.ndarray:
    """(n, E) float32 per tensor, made from ``lumas`` and the tensor so that a search only
    reads them: the correlation rule's orientation invariants, detail energy and
    eligibility (``_corr_of``), then the MSE rule's block sums and sum of squares
    (``mse_sums``). Stored in the catalog after ``lumas`` and ``fine_features``."""
    return stored_of(tensors, lum=False, fine=False)[2]


def _fine_width() -> int:
    """How many orientation invariants ``fine_features`` keeps (k + l < ``_K_FINE``)."""
    return _K_FINE * (_K_FINE + 1) // 2


def _corr_stored() -> int:
    """Width of ``_corr_of``'s features (the first part of ``search_features``)."""
    return 2 * (1 + len(CROPS)) * _corr_width() + 2


def _extra_width(px: int) -> int:
    """``search_features``' width for tensors of side ``px``."""
    from .match import _segments

    m = len(_segments(px, _MSE_GRID)) - 1
    return _corr_stored() + m * m * 3 + 2


def pack(lum: np.ndarray, fine: np.ndarray, extra: np.ndarray) -> bytes:
    """One image's ``lumas``, ``fine_features`` and ``search_features`` rows as the
    catalog blob (little-endian float32, one after the other)."""
    return b"".join(np.ascontiguousarray(x, dtype="<f4").tobytes() for x in (lum, fine, extra))


def unpack(blobs: list[bytes], px: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Catalog blobs of ``px`` tensors -> (n, V, D) ``lumas``, (n, F + 2)
    ``fine_features`` and (n, E) ``search_features``, float32 (``pack``'s inverse)."""
    v, d, f, e = 1 + len(CROPS), SIDE * SIDE, _fine_width() + 2, _extra_width(px)
    flat = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), v * d + f + e)
    return (flat[:, : v * d].reshape(len(blobs), v, d).astype(np.float32),
            flat[:, v * d : v * d + f].astype(np.float32),
            flat[:, v * d + f :].astype(np.float32))


def batch_blobs(batch: list[dict[int, bytes]]) -> list[dict[int, bytes]]:
    """[{px: tensor bytes}] -> [{px: ``pack``ed ``lumas``, ``fine_features`` and
    ``search_features``}]: what the catalog stores beside each tensor, for many images in
    one vectorised pass per tensor size (a decode worker's task, a migration's page of
    rows)."""
    out: list[dict[int, bytes]] = [{} for _ in batch]
    for px in sorted({px for tensors in batch for px in tensors}):
        which = [i for i, tensors in enumerate(batch) if px in tensors]
        stack = np.frombuffer(b"".join(batch[i][px] for i in which), dtype=np.uint8)
        rows, fines, extras = stored_of(stack.reshape(len(which), px, px, 3))
        for i, row, fine, extra in zip(which, rows, fines, extras, strict=True):
            out[i][px] = pack(row, fine, extra)
    return out


def blob_of(tensor: np.ndarray) -> bytes:
    """The catalog blob of one (px, px, 3) tensor (``batch_blobs`` for a single one)."""
    lum, fine, extra = stored_of(np.asarray(tensor)[None])
    return pack(lum[0], fine[0], extra[0])


def stored_features(blobs: list[bytes | None], tensors: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, V, D) ``lumas``, (n, F + 2) ``fine_features`` and (n, E) ``search_features``
    from the catalog's blobs (None: missing or of another version), the missing ones
    computed from ``tensors`` (aligned with ``blobs``). MSE sums too large to store
    exactly stay NaN: ``search`` then makes them from the tensors."""
    px = tensors.shape[1]
    out = np.empty((len(blobs), 1 + len(CROPS), SIDE * SIDE), dtype=np.float32)
    fine = np.empty((len(blobs), _fine_width() + 2), dtype=np.float32)
    extra = np.empty((len(blobs), _extra_width(px)), dtype=np.float32)
    have = np.array([b is not None for b in blobs], dtype=bool)
    idx = np.flatnonzero(have)
    if len(idx):
        out[idx], fine[idx], extra[idx] = unpack([blobs[i] for i in idx], px)  # type: ignore[misc]
    miss = np.flatnonzero(~have)
    for c0 in range(0, len(miss), _CHUNK):
        part = miss[c0 : c0 + _CHUNK]
        out[part], fine[part], extra[part] = stored_of(np.asarray(tensors[part]))
    return out, fine, extra


def features(tensors: np.ndarray | None, rows: np.ndarray | None = None,
             stored: np.ndarray | None = None, corr: np.ndarray | None = None) -> Features:
    """Near features of ``tensors[rows]``, or of their ``stored`` lumas (``lumas``) when
    given (aligned with ``rows``): the catalog's, so no tensor is resampled again; with
    their ``corr`` (``_corr_of``, the catalog's too) nothing is computed."""
    if stored is None:
        assert tensors is not None
        rows = np.arange(len(tensors)) if rows is None else np.asarray(rows, dtype=np.intp)
        stored = np.concatenate([lumas(tensors[rows[c0 : c0 + _CHUNK]])
                                 for c0 in range(0, len(rows), _CHUNK)]) if len(rows) else \
            np.zeros((0, 1 + len(CROPS), SIDE * SIDE), dtype=np.float32)
    if corr is None:
        corr = _corr_of(np.asarray(stored))
    n, nv = len(stored), 1 + len(CROPS)
    k = _corr_width()
    inv = np.asarray(corr[:, :-2], dtype=np.float64).reshape(n, 2, nv, k)
    return Features(np.asarray(stored), np.asarray(corr[:, -2], dtype=np.float64),
                    corr[:, -1] > 0.5, inv[:, 0], inv[:, 1])


def _corr_width() -> int:
    """How many orientation invariants each variant's luma and detail have (k + l <
    ``_K_CORR``)."""
    return _K_CORR * (_K_CORR + 1) // 2


def _corr_of(stored: np.ndarray) -> np.ndarray:
    """(n, 2 V K + 2) float32 correlation-rule features of (n, V, D) ``lumas``: linear maps of the
    centred luma (one pass over it, then one BLAS product onto the DCT basis and the
    quadratic surfaces), standardised after; the (n, V, D) vectors are never made."""
    r = np.array(stored, dtype=np.float64)
    n, nv, d = r.shape
    r -= r.mean(axis=2, keepdims=True)
    q = _smooth_basis(SIDE)
    basis, plan = _fold_plan(SIDE, _K_CORR)
    k = basis.shape[1]
    co = (r.reshape(-1, d) @ np.concatenate([basis, q], axis=1)).reshape(n, nv, -1)
    cb, cq = co[..., :k], co[..., k:]
    sq = np.einsum("...i,...i->...", r, r)
    rms = np.sqrt(sq / d)
    e = np.sqrt(np.maximum(sq - np.einsum("...i,...i->...", cq, cq), 0.0) / d)
    sf = 1.0 / np.maximum(rms, _EPS)[..., None]
    sd = 1.0 / np.maximum(e, _EPS)[..., None]
    lim_f, lim_d = _limits()
    out = np.empty((n, 2 * nv * k + 2), dtype=np.float32)
    out[:, : nv * k] = (_fold(cb * sf, plan) / math.sqrt(lim_f)).reshape(n, -1)
    out[:, nv * k : -2] = (_fold((cb - cq @ (q.T @ basis)) * sd, plan)
                           / math.sqrt(lim_d)).reshape(n, -1)
    out[:, -2] = e[:, 0]
    out[:, -1] = (e[:, 0] >= MIN_DETAIL) & (rms[:, 0] > _EPS)
    return out


# --------------------------------------------------------------------------- invariants


def _dct(n: int) -> np.ndarray:
    """(n, n) orthonormal DCT-II: row k is cos(pi (x + 1/2) k / n), normalised. Row k
    is symmetric (k even) or antisymmetric (k odd) under x -> n - 1 - x."""
    k = np.arange(n)[:, None]
    m = np.cos(np.pi * (np.arange(n)[None] + 0.5) * k / n) * math.sqrt(2 / n)
    m[0] /= math.sqrt(2)
    out: np.ndarray = m
    return out


@cache
def _fold_plan(n: int, k_max: int) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """The orthonormal 2-D DCT basis vectors (n*n, f) with frequencies k + l < ``k_max``
    and how ``_fold`` makes orientation invariants of their coefficients.

    A mirror multiplies coefficient (k, l) by (-1)**k (or (-1)**l), a transpose swaps (k, l)
    and (l, k), so each (k, l)/(l, k) pair spans a plane the 8 orientations act on as a
    reflection group, and each diagonal (k, k) a line. Folding a plane into its group's
    fundamental chamber is invariant and never lengthens a distance."""
    c = _dct(n)
    cols: list[np.ndarray] = []
    kinds: dict[str, list[int]] = {"even": [], "odd": [], "mixed": [], "ee": [], "oo": []}
    for k in range(k_max):
        for ll in range(k, k_max - k):
            at = len(cols)
            cols.append(np.outer(c[k], c[ll]).ravel())
            if k == ll:
                kinds["even" if k % 2 == 0 else "odd"].append(at)
                continue
            cols.append(np.outer(c[ll], c[k]).ravel())
            kind = "mixed" if (k + ll) % 2 else ("ee" if k % 2 == 0 else "oo")
            kinds[kind].append(at)
    plan = tuple(np.array(kinds[x], dtype=np.intp) for x in ("even", "odd", "mixed", "ee", "oo"))
    return np.stack(cols, axis=1), plan


def _fold(c: np.ndarray, plan: tuple[np.ndarray, ...]) -> np.ndarray:
    """Orientation invariants (..., k) of DCT coefficients (..., f) (see ``_fold_plan``):
    1-Lipschitz, so ``|fold(a) - fold(b)| <= |a - g b|`` for every orientation g."""
    even, odd, mixed, ee, oo = plan
    h = math.sqrt(0.5)
    am, bm = np.abs(c[..., mixed]), np.abs(c[..., mixed + 1])
    se, de = (c[..., ee] + c[..., ee + 1]) * h, (c[..., ee] - c[..., ee + 1]) * h
    so, do = (c[..., oo] + c[..., oo + 1]) * h, (c[..., oo] - c[..., oo + 1]) * h
    out: np.ndarray = np.concatenate([
        c[..., even], np.abs(c[..., odd]), np.minimum(am, bm), np.maximum(am, bm),
        se, np.abs(de), np.abs(so), np.abs(do)], axis=-1)
    return out


def mse_sums(tensors: np.ndarray) -> np.ndarray:
    """(n, m * m * 3 + 2) float32 per tensor, what the MSE rule's invariants are made of
    (``mse_invariants``): its block sums on the ``_MSE_GRID`` grid and its sum of squares
    (as ``hi * 2**16 + lo``), all integers float32 holds exactly while a block sum stays
    below 2**24 (tensors up to 2,560 px; else NaN, and a search makes them again)."""
    from .match import _segments

    n, px = len(tensors), tensors.shape[1]
    m = len(_segments(px, _MSE_GRID)) - 1
    out = np.empty((n, m * m * 3 + 2), dtype=np.float32)
    for c0 in range(0, n, _CHUNK):
        g, sq = _mse_raw(np.asarray(tensors[c0 : c0 + _CHUNK]))
        out[c0 : c0 + len(g), :-2] = g
        out[c0 : c0 + len(g), -2] = sq >> 16
        out[c0 : c0 + len(g), -1] = sq & 0xFFFF
    if n and float(np.max(out[:, :-2], initial=0.0)) >= 2**24:
        out[:] = np.nan
    return out


def _mse_raw(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(c, m * m * 3) float64 block sums and (c,) int64 sums of squares of a chunk of
    tensors, exact integers."""
    from .match import _acc_dtype, _block_sums, _segments

    px = t.shape[1]
    d = px * px * 3
    g = _block_sums(t, _segments(px, _MSE_GRID)).reshape(len(t), -1)
    flat: np.ndarray = t.reshape(len(t), d).astype(_acc_dtype(d))  # integer squares: exact sums
    return g, np.einsum("ij,ij->i", flat, flat).astype(np.int64)


def mse_invariants(tensors: np.ndarray, rows: np.ndarray, threshold: float,
                   sums: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, k) orientation invariants of ``tensors[rows]`` whose squared distance is at most
    ``MSE / threshold`` for every orientation: the pixels' channel sum and two chroma
    differences (an orthonormal change of colour basis), block sums on a symmetric grid
    (an orthogonal projection), their low DCT frequencies (an orthonormal basis), folded.
    Also the (n, m, m, 3) projections themselves, same scale: their squared distance after
    turning one of them bounds that rotation's MSE / threshold; and (n,) the RMS of what
    the projection leaves out (grey levels), so that ``MSE <= bound * threshold +
    (rms_a + rms_b)**2`` (the left-out parts are orthogonal to the projection, which
    commutes with every rotation, and their difference is at most the sum of their norms).
    ``sums``: the rows' ``mse_sums`` (the catalog's), else made from the tensors."""
    from .match import _segments

    px = tensors.shape[1]
    bounds = _segments(px, _MSE_GRID)
    seg = np.diff(bounds).astype(np.float64)
    m = len(seg)
    norm = 1.0 / np.sqrt(np.outer(seg, seg).ravel())
    colour = np.array([[1, 1, 1], [1, -1, 0], [1, 1, -2]], dtype=np.float64)
    colour /= np.linalg.norm(colour, axis=1, keepdims=True)
    luma_basis, luma_plan = _fold_plan(m, min(_K_MSE, m))
    chroma_basis, chroma_plan = _fold_plan(m, min(_K_CHROMA, m))
    scale = 1.0 / math.sqrt(px * px * 3 * threshold)
    d = px * px * 3
    parts = []
    blocks = np.empty((len(rows), m, m, 3))
    rest = np.empty(len(rows))
    for c0 in range(0, len(rows), _CHUNK):
        if sums is None:
            raw, sq_int = _mse_raw(np.asarray(tensors[rows[c0 : c0 + _CHUNK]]))
            sq = sq_int.astype(np.float64)
        else:
            part = np.asarray(sums[c0 : c0 + _CHUNK], dtype=np.float64)
            raw, sq = part[:, :-2], part[:, -2] * 65536.0 + part[:, -1]  # exact integers
        c = len(raw)
        g = (raw.reshape(c, m * m, 3) @ colour.T) * norm[None, :, None]
        blocks[c0 : c0 + c] = g.reshape(c, m, m, 3) * scale
        kept = np.einsum("cij,cij->c", g, g)
        rest[c0 : c0 + c] = np.sqrt(np.maximum(sq - kept, 0.0) / d)
        g = g.reshape(c, m, m, 3)
        parts.append(np.concatenate([
            _fold(g[:, :, :, 0].reshape(c, m * m) @ luma_basis, luma_plan),
            _fold(g[:, :, :, 1].reshape(c, m * m) @ chroma_basis, chroma_plan),
            _fold(g[:, :, :, 2].reshape(c, m * m) @ chroma_basis, chroma_plan)], axis=1) * scale)
    if not parts:
        return np.zeros((0, 1), dtype=np.float64), blocks, rest
    return np.concatenate(parts), blocks, rest


def join(x: np.ndarray, y: np.ndarray | None = None, radius: np.ndarray | float = 1.0,
         ) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (i, j) with ``|x_i - y_j| <= radius_j`` (one radius per column, or one
    for all); with ``y`` None, pairs i < j of ``x`` with itself. Exact for that test: the
    float32 products' rounding is covered by a tolerance, so it lets through a little too
    much, never too little.

    Rows are sorted by their first coordinate and each block of rows is multiplied (BLAS)
    only with the columns whose first coordinate is within reach, so images far apart on
    it (brightness, for the MSE invariants) are never compared."""
    same = y is None
    yy = x if y is None else y
    n, m, k = len(x), len(yy), x.shape[1]
    none = np.zeros(0, dtype=np.intp)
    if n == 0 or m == 0 or (same and n < 2):
        return none, none
    rad = np.broadcast_to(np.asarray(radius, dtype=np.float64), (m,))
    centre = np.concatenate([x, yy]).mean(axis=0) if not same else x.mean(axis=0)
    xc, yc = x - centre, yy - centre
    ox, oy = np.argsort(xc[:, 0], kind="stable"), np.argsort(yc[:, 0], kind="stable")
    xs, ys, rs = xc[ox], yc[oy], rad[oy]
    sx, sy = (xs * xs).sum(axis=1), (ys * ys).sum(axis=1)
    # |x - y|^2 <= r^2  <=>  x.y - (|y|^2 - r^2) / 2 - |x|^2 / 2 >= 0: one float32 product
    # of (x, 1, -|x|^2 / 2) and (y, -(|y|^2 - r^2) / 2, 1). Its rounding error is below
    # (k + 4) 2**-24 (|x|^2 + |y|^2) (the added terms included), covered by ``tol``
    tol = (k + 6) * 2.0**-23 * (float(sx.max()) + float(sy.max()) + float(rs.max()) ** 2) + 1e-9
    x32 = np.concatenate([xs, np.ones((n, 1)), -((sx - tol) / 2)[:, None]], axis=1
                         ).astype(np.float32)
    y32 = np.concatenate([ys, -((sy - rs * rs) / 2)[:, None], np.ones((m, 1))], axis=1
                         ).astype(np.float32)
    rmax = float(rs.max())
    y0 = ys[:, 0]
    found_i: list[np.ndarray] = []
    found_j: list[np.ndarray] = []
    for s in range(0, n, _ROWS):
        e = min(n, s + _ROWS)
        lo = int(np.searchsorted(y0, xs[s, 0] - rmax - 1e-9, side="left"))
        hi = int(np.searchsorted(y0, xs[e - 1, 0] + rmax + 1e-9, side="right"))
        if same:
            lo = max(lo, s)
        if hi <= lo:
            continue
        # flat indices of a sparse mask: much faster than np.nonzero's two arrays
        ii, jj = np.divmod(np.flatnonzero((x32[s:e] @ y32[lo:hi].T) >= 0), hi - lo)
        ii += s
        jj += lo
        if same:  # later rows only
            later = jj > ii
            ii, jj = ii[later], jj[later]
        found_i.append(ox[ii])
        found_j.append(oy[jj])
    if not found_i:
        return none, none
    i, j = np.concatenate(found_i), np.concatenate(found_j)
    if same:
        i, j = np.minimum(i, j), np.maximum(i, j)
    return i.astype(np.intp), j.astype(np.intp)


def _rotated(t: np.ndarray, k: int) -> np.ndarray:
    """``np.rot90(t, k, axes=(1, 2))`` of (c, px, px, 3), contiguous: moved as whole
    pixels (3-item records), several times faster than item by item."""
    if k == 0:
        return np.ascontiguousarray(t)
    c, px = t.shape[0], t.shape[1]
    rec = np.dtype((np.void, 3 * t.dtype.itemsize))
    pix = np.ascontiguousarray(t).view(rec).reshape(c, px, px)
    out: np.ndarray = np.ascontiguousarray(np.rot90(pix, k, axes=(1, 2))).view(t.dtype)
    return out.reshape(c, px, px, 3)


def _mse_radius(threshold: float) -> float:
    """The radius of the MSE rule's joins on ``mse_invariants`` (made for ``threshold``):
    MSE <= threshold, plus the margin ``match`` allows for rounding."""
    from .match import _margin

    return math.sqrt(1 + _margin(threshold) / max(threshold, _EPS))


def mse_candidates(tensors: np.ndarray, rows: np.ndarray, threshold: float,
                   bucket: np.ndarray | None = None, sums: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Pairs (i < j, local) of ``tensors[rows]`` whose invariants allow an MSE <= threshold
    in some orientation, and the block projections and left-out RMS (``mse_invariants``;
    ``sums``: the rows' ``mse_sums``, the catalog's)."""
    inv, blocks, rest = mse_invariants(tensors, rows, threshold, sums)
    ia, ib = join(inv, None, _mse_radius(threshold))
    if bucket is not None:
        keep = bucket[ia] == bucket[ib]
        ia, ib = ia[keep], ib[keep]
    return ia, ib, (blocks, rest)


def exact_mse(tensors: np.ndarray, rows: np.ndarray, ia: np.ndarray, ib: np.ndarray,
              proj: tuple[np.ndarray, np.ndarray], scale: float, threshold: float = math.inf,
              rotate: bool = True, first: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The true MSE of each pair (local indices into ``rows``) in its best rotation k of b
    (the smallest k on a tie, as ``match.mse_exact``) and k; inf where above
    ``threshold``. ``blocks`` (``mse_invariants`` for ``scale``, the threshold it was made
    for) give a lower bound per rotation, so a rotation that cannot beat the threshold or
    the best so far is skipped. Pixels are read a strip of block rows at a time, and a
    rotation stops as soon as the strips read plus the block bound of the rows not read
    yet (each block's pixels differ at least as much as their means) exceed them.
    ``first``: any rotation within the threshold will do (not necessarily the best one),
    and a pair whose upper bound (``mse_invariants``) is within it needs no pixel at all;
    the value returned for it is then that bound, not its MSE."""
    from .match import _segments

    blocks, rest = proj
    d = int(np.prod(tensors.shape[1:]))
    m = blocks.shape[1]
    # strips of _STRIP block rows, as offsets into the flattened tensors
    row_len = d // tensors.shape[1]
    cuts = [*range(0, m, _STRIP), m]
    offsets = _segments(tensors.shape[1], m) * row_len
    flat = tensors.reshape(len(tensors), d)
    best = np.full(len(ia), np.inf)
    best_k = np.zeros(len(ia), dtype=np.int64)
    nrot = 4 if rotate else 1
    for c0 in range(0, len(ia), _PAIR_CHUNK):
        a, b = ia[c0 : c0 + _PAIR_CHUNK], ib[c0 : c0 + _PAIR_CHUNK]
        cur, cur_k = best[c0 : c0 + len(a)], best_k[c0 : c0 + len(a)]  # views
        # the chunk's block projections, gathered once (not once per rotation)
        ga, gb = blocks[a], blocks[b]
        for k in range(nrot):
            # the bound must allow the threshold and beat the best so far (or, with
            # ``first``, the pair must not have matched yet); bounds of the pairs still open
            cap = np.minimum(cur, threshold)
            sel = np.flatnonzero(np.isinf(cur)) if first else np.arange(len(a))
            whole = len(sel) == len(a)
            diff_b = (ga if whole else ga[sel]) - _rotated(gb if whole else gb[sel], k)
            by_row = np.einsum("cijk,cijk->ci", diff_b, diff_b) * scale  # per block row
            lb = by_row.sum(axis=1)
            c_sel = cap[sel]
            keep = lb <= c_sel + 1e-6 + 1e-9 * np.where(np.isinf(c_sel), 0.0, c_sel)
            sel, lb, by_row = sel[keep], lb[keep], by_row[keep]
            if first:  # matched for sure: bound + left-out parts within the threshold
                ub = lb + (rest[a[sel]] + rest[b[sel]]) ** 2
                sure = ub <= threshold * (1 - 1e-9) - 1e-6
                cur[sel[sure]] = ub[sure]
                cur_k[sel[sure]] = k
                sel, by_row = sel[~sure], by_row[~sure]
            if len(sel) == 0:
                continue
            # the bound of the block rows from each cut on, a little lowered so that its
            # rounding never rules a rotation out (after the last strip: none, exact)
            ahead = np.cumsum(by_row[:, ::-1], axis=1)[:, ::-1]
            ahead = np.maximum(ahead * (1 - 1e-9) - 1e-6, 0.0)
            # each image is turned once, not once per pair
            ub, inv_b = np.unique(b[sel], return_inverse=True)
            yr = _rotated(tensors[rows[ub]], k).reshape(len(ub), d)
            xa = rows[a[sel]]
            cap = cap[sel]
            ss = np.zeros(len(sel))
            live = np.arange(len(sel))
            for r0, r1 in itertools.pairwise(cuts):
                # differences and their squares (<= 255**2) are integers float32 holds
                # exactly; their sums, in float64, too. The rows read plus the bound of
                # the rows ahead above the cap rule the rotation out.
                p0, p1 = offsets[r0], offsets[r1]
                sq = np.subtract(flat[xa[live], p0:p1], yr[inv_b[live], p0:p1],
                                 dtype=np.float32)
                sq *= sq
                ss[live] += sq.sum(axis=1, dtype=np.float64)
                low = ss[live] / d + (ahead[live, r1] if r1 < m else 0.0)
                live = live[low <= cap[live]]
            sel = sel[live]
            mse = ss[live] / d
            better = mse < cur[sel]
            cur[sel[better]] = mse[better]
            cur_k[sel[better]] = k
    return best, best_k


def mse_pairs(tensors: np.ndarray, rows: np.ndarray, threshold: float, rotate: bool = True,
              bucket: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``match.verified_pairs``'s result (every unordered pair of ``tensors[rows]`` with
    true MSE <= ``threshold``, its MSE and the rotation of b onto a), found through the
    orientation invariants (``mse_invariants``, ``join``) and verified exactly."""
    ia, ib, proj = mse_candidates(tensors, rows, threshold, bucket)
    best, best_k = exact_mse(tensors, rows, ia, ib, proj, threshold, threshold, rotate)
    hit = best <= threshold
    order = np.lexsort((ib[hit], ia[hit]))
    return ia[hit][order], ib[hit][order], best[hit][order], 90 * best_k[hit][order]


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
    # the full vectors of the pictures the pairs name, once each
    used, at = np.unique(np.concatenate([ia, ib]), return_inverse=True)
    cfull, cdetail, full, detail = feat.coarse(used)
    for c0 in range(0, p, _PAIR_CHUNK):
        e0 = min(p, c0 + _PAIR_CHUNK)
        a, b = at[c0:e0], at[p + c0 : p + e0]
        cfa, cda = cfull[a][:, va], cdetail[a][:, va]  # (c, combos, m, m)
        cfb, cdb = cfull[b][:, vb], cdetail[b][:, vb]
        for o in range(8):
            ef = cfa - orient(cfb, o)
            ed = cda - orient(cdb, o)
            alive = ((np.einsum("ijkl,ijkl->ij", ef, ef) <= lim_f)
                     & (np.einsum("ijkl,ijkl->ij", ed, ed) <= lim_d))
            pi, ci = np.nonzero(alive)
            if len(pi) == 0:
                continue
            pa, pb = a[pi], b[pi]
            of = orient(full[pb, vb[ci]].reshape(-1, SIDE, SIDE), o).reshape(-1, d)
            od = orient(detail[pb, vb[ci]].reshape(-1, SIDE, SIDE), o).reshape(-1, d)
            cf = np.einsum("ij,ij->i", full[pa, va[ci]], of) / d
            cd = np.einsum("ij,ij->i", detail[pa, va[ci]], od) / d
            ok = (cf >= MIN_CORR) & (cd >= MIN_DETAIL_CORR)
            score[c0 + pi[ok], o, ci[ok]] = cd[ok]
    flat = score.reshape(p, 8 * nc)
    k = np.argmax(flat, axis=1) if p else np.zeros(0, dtype=np.intp)
    best = flat[np.arange(p), k]
    ok = np.isfinite(best) & feat.eligible[ia] & feat.eligible[ib]
    return ok, k // nc, best


def candidate_pairs(feat: Features, rows_ok: np.ndarray, bucket: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Unordered pairs (i < j) of eligible rows that the orientation invariants cannot
    rule out for any variant pair (``COMBOS``).

    The detail invariants rule out nearly every unrelated pair on their own: one ``join``
    of the whole pictures with themselves and one of the whole pictures against every
    picture's crops; the survivors must also pass the luma invariants, both for one
    variant pair."""
    idx = np.flatnonzero(rows_ok)
    none = np.zeros(0, dtype=np.intp)
    n = len(idx)
    if n < 2:
        return none, none
    ef, ed = feat.efull[idx], feat.edetail[idx]
    nv = ed.shape[1]
    # the joins compare the _JOIN_DIMS widest coordinates only (widest first): dropping
    # coordinates only shortens distances, so no pair is lost, and the full invariants
    # are checked below; the product, the joins' cost, shrinks more than the survivors grow
    by_spread = np.argsort(-ed[:, 0].std(axis=0), kind="stable")[:_JOIN_DIMS]
    # the radius allows for the float32 rounding of the stored invariants (below 1e-6)
    a0, b0 = join(ed[:, 0][:, by_spread], None, _SLACK)
    crops = ed[:, 1:].transpose(1, 0, 2).reshape((nv - 1) * n, -1)
    a1, b1 = join(ed[:, 0][:, by_spread], crops[:, by_spread], _SLACK)
    b1 %= n
    other = a1 != b1
    a1, b1 = a1[other], b1[other]
    pairs = np.concatenate([np.stack([a0, b0]), np.stack(
        [np.minimum(a1, b1), np.maximum(a1, b1)])], axis=1)
    if pairs.shape[1]:
        key = np.unique(pairs[0].astype(np.int64) * n + pairs[1])
        pairs = np.stack([key // n, key % n]).astype(np.intp)
    if bucket is not None:
        bk = bucket[idx]
        pairs = pairs[:, bk[pairs[0]] == bk[pairs[1]]]
    pairs = pairs[:, _combos_within((ef, ed), pairs[0], (ef, ed), pairs[1])]
    return idx[pairs[0]], idx[pairs[1]]


def _combos_within(a: tuple[np.ndarray, np.ndarray], ia: np.ndarray,
                   b: tuple[np.ndarray, np.ndarray], ib: np.ndarray) -> np.ndarray:
    """For each pair (row ``ia`` of ``a``, row ``ib`` of ``b``; each the (n, V, k)
    orientation invariants of the luma and of the detail, ``Features.efull`` and
    ``edetail``): whether both are within the joins' radius for some variant pair
    (``COMBOS``), which every pair the correlation rule accepts is."""
    alive = np.zeros(len(ia), dtype=bool)
    for va, vb in COMBOS:
        df = a[0][ia, va] - b[0][ib, vb]
        dd = a[1][ia, va] - b[1][ib, vb]
        alive |= ((np.einsum("ij,ij->i", df, df) <= _SLACK**2)
                  & (np.einsum("ij,ij->i", dd, dd) <= _SLACK**2))
    return alive


# --------------------------------------------------------------------------- fine rule


def _luma(tensors: np.ndarray, rows: np.ndarray | slice) -> np.ndarray:
    """(c, px * px) float64 luma of ``tensors[rows]``, the one every feature starts from
    (ITU-R 601 weights in thousandths: the integer sums, below 2**24, are exact in
    float32, and fast)."""
    t = np.asarray(tensors[rows])
    # one matrix-vector product over every pixel (not one per picture)
    out: np.ndarray = (t.reshape(-1, 3).astype(np.float32) @ _LUMA).astype(np.float64)
    return out.reshape(len(t), t.shape[1] * t.shape[2]) / 1000.0


def _fine_vectors(tensors: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the tensor's luma standardised (mean 0, RMS 1) and its detail (luma minus
    its best quadratic surface) standardised, both (c, px * px) over the whole untrimmed
    picture."""
    return _full_and_detail(_luma(tensors, rows))


@cache
def _fine_projection(px: int) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """(px * px, 6 + f): the quadratic surfaces' orthonormal basis, then the low DCT
    frequencies of what they leave (the detail) for the fine rule's invariants."""
    q = _smooth_basis(px)
    basis, plan = _fold_plan(px, _K_FINE)
    return np.concatenate([q, basis - q @ (q.T @ basis)], axis=1), plan


def fine_candidates(tensors: np.ndarray, rows: np.ndarray, bucket: np.ndarray | None,
                    fine: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j, local) of ``tensors[rows]``, at least one of them with a border
    ``trim_boxes`` trims (else the correlation rule sees the same pictures), that the fine
    rule's orientation invariants (low DCT frequencies of the detail, folded) cannot rule
    out. ``fine``: their ``fine_features`` (aligned with ``rows``; the catalog's), else
    computed here."""
    if fine is None:
        fine = np.concatenate([fine_features(np.asarray(tensors[rows[c0 : c0 + _CHUNK]]))
                               for c0 in range(0, len(rows), _CHUNK)]) if len(rows) else \
            fine_features(tensors[:0])
    inv, ok, trimmed = _fine_scaled(fine, tensors.shape[1])
    every, some = np.flatnonzero(ok), np.flatnonzero(ok & trimmed)
    none = np.zeros(0, dtype=np.intp)
    if len(every) < 2 or len(some) == 0:
        return none, none
    by_spread = np.argsort(-inv[every].std(axis=0), kind="stable")
    # the radius allows for the float32 rounding of the stored invariants (below 1e-6)
    ia, ib = join(inv[every][:, by_spread], inv[some][:, by_spread], _SLACK)
    ia, ib = every[ia], some[ib]
    ia, ib = np.minimum(ia, ib), np.maximum(ia, ib)
    keep = ia != ib
    if bucket is not None:
        keep &= bucket[ia] == bucket[ib]
    key = np.unique(ia[keep].astype(np.int64) * len(rows) + ib[keep])
    return (key // len(rows)).astype(np.intp), (key % len(rows)).astype(np.intp)


def _fine_scaled(fine: np.ndarray, px: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From (n, F + 2) ``fine_features`` of px-pixel tensors: the invariants scaled so that
    a squared distance above 1 rules a pair out of the fine rule (a join radius of
    ``_SLACK`` allows for their float32 rounding), whether each picture may match by it,
    and whether it has a border ``trim_boxes`` trims."""
    d = px * px
    lim = 2 * d * (1 - MIN_FINE_CORR) + 1e-6 * d
    return (np.asarray(fine[:, :-2], dtype=np.float64) / math.sqrt(lim), fine[:, -2] > 0.5,
            fine[:, -1] > 0.5)


def fine_pairs(tensors: np.ndarray, rows: np.ndarray, bucket: np.ndarray | None,
               fine: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """The fine rule's matches (i < j, local): in one of the 8 orientations of j, the whole
    untrimmed luma of the two tensors correlates at least ``MIN_CORR`` and its detail at
    least ``MIN_FINE_CORR``. With the best such orientation of j and its detail
    correlation (float64, full vectors).

    For edits that keep every pixel where it was (brightness, contrast, tone curves,
    saturation, grey) but move the borders ``trim_boxes`` finds: a sky that darkens can
    stop being a "uniform border", and the trimmed pictures no longer line up."""
    ia, ib = fine_candidates(tensors, rows, bucket, fine)
    none = np.zeros(0, dtype=np.intp)
    if len(ia) == 0:
        return none, none, none, np.zeros(0)
    px = tensors.shape[1]
    d = px * px
    used, inv = np.unique(np.concatenate([ia, ib]), return_inverse=True)
    flat, detail = _fine_vectors(tensors, rows[used])
    pa, pb = inv[: len(ia)], inv[len(ia) :]
    best = np.full(len(ia), -np.inf)
    best_o = np.zeros(len(ia), dtype=np.int64)
    for c0 in range(0, len(ia), _CHUNK):
        a, b = pa[c0 : c0 + _CHUNK], pb[c0 : c0 + _CHUNK]
        fa, da = flat[a], detail[a]
        fb, db = flat[b].reshape(-1, px, px), detail[b].reshape(-1, px, px)
        for o in range(8):
            cf = np.einsum("ij,ij->i", fa, orient(fb, o).reshape(-1, d)) / d
            cd = np.einsum("ij,ij->i", da, orient(db, o).reshape(-1, d)) / d
            cd = np.where(cf >= MIN_CORR, cd, -np.inf)
            better = cd > best[c0 : c0 + len(a)]
            best[c0 : c0 + len(a)][better] = cd[better]
            best_o[c0 : c0 + len(a)][better] = o
    hit = best >= MIN_FINE_CORR
    return ia[hit], ib[hit], best_o[hit], best[hit]


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
    stored: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> list[NearGroup]:
    """``near`` groups, as match.find_groups' (same ranks, subset and protected rows);
    members by (mse, path), keys in rank order. ``stored``: every row's ``lumas``,
    ``fine_features`` and ``search_features`` (``stored_features``: the catalog's), else
    they are computed from the tensors."""
    from . import match

    scope = match.search_scope(widths, heights, sizes, paths, subset, order, protected, same_dim)
    if scope is None:
        return []
    rows, rank, prot, bucket, local_paths = scope
    # the MSE rule's candidates: verified in claim order, only where they can still claim
    # (the exact minimum over the rotations is computed for the group members only)
    mine = None if stored is None else tuple(np.asarray(x)[rows] for x in stored)
    sums = None if mine is None else mine[2][:, _corr_stored():]
    cands = mse_candidates(tensors, rows, NEAR_THRESHOLD, bucket,
                           None if sums is None or np.isnan(sums).any() else sums)
    out = []
    for key, members in find_groups(tensors, rank, rows, prot, bucket, cands, mine):
        members.sort(key=lambda m: (m.mse, local_paths[m.index]))
        out.append(NearGroup(int(rows[key]), tuple(
            NearMember(int(rows[m.index]), m.mse, m.rotation, m.mirror, m.measure, m.value,
                       None if m.via is None else int(rows[m.via]))
            for m in members)))
    return out


def query(
    picture: np.ndarray,
    tensors: np.ndarray,
    rows: np.ndarray,
    stored: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> list[NearMember]:
    """Every row of ``tensors`` among ``rows`` that matches ``picture`` ((1, px, px, 3),
    indexed or not) by one of the preset's rules, by (mse, row): what ``search`` would
    give a key that claims first (no claiming among the rows, no one-hop join). Each
    member's rotation and mirror bring it onto the picture. ``stored``: every row's
    ``stored_features`` (the catalog's), else computed here.

    The rules' invariants pick, row by row, a superset of the rows that can match; only
    those and the picture are then matched as ``find_groups`` matches a search, the
    picture ranked first, so the answer is the search's, not an approximation of it."""
    rows = np.asarray(rows, dtype=np.intp)
    theirs = stored_of(picture)
    chunks = [_query_candidates(picture, theirs, tensors, rows[c0 : c0 + _QUERY_ROWS], stored)
              for c0 in range(0, len(rows), _QUERY_ROWS)]
    if not chunks or not sum(len(c[0]) for c in chunks):
        return []
    pick = np.concatenate([c[0] for c in chunks])
    mine = tuple(np.concatenate([c[1][k] for c in chunks]) for k in range(3))
    n = len(pick) + 1
    few = np.concatenate([np.asarray(tensors[pick]), picture])
    few_stored = tuple(np.concatenate([x, y]) for x, y in zip(mine, theirs, strict=True))
    local = np.arange(n)
    rank = np.r_[np.arange(1, n), 0]  # the picture claims first
    cands = mse_candidates(few, local, NEAR_THRESHOLD)
    out = []
    for key, members in find_groups(few, rank, local, np.zeros(n, dtype=bool), None, cands,
                                    few_stored):
        if key != n - 1:
            continue
        out = [NearMember(int(pick[m.index]), m.mse, m.rotation, m.mirror, m.measure,
                          m.value) for m in members if m.via is None]
    out.sort(key=lambda m: (m.mse, m.index))
    return out


def _query_candidates(picture: np.ndarray, theirs: tuple[np.ndarray, ...], tensors: np.ndarray,
                      rows: np.ndarray, stored: tuple[np.ndarray, ...] | None
                      ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Those of ``rows`` that may match ``picture`` (its ``stored_of``: ``theirs``) by
    some rule, with their ``stored_features``: the rows that the three rules' invariants
    cannot rule out (the tests of ``mse_candidates``, ``candidate_pairs`` and
    ``fine_candidates``, one picture against each row), from the stored features where
    given. One chunk of rows at a time, so a query holds a bounded part of a large
    catalog in memory."""
    cw = _corr_stored()
    mine = (tuple(np.asarray(x)[rows] for x in stored) if stored is not None
            else stored_features([None] * len(rows), np.asarray(tensors[rows])))
    # the MSE rule: on the stored sums where they are exact, else on the tensors
    sums = mine[2][:, cw:]
    exact = not np.isnan(sums).any()
    here = np.arange(len(rows)) if exact else rows
    inv = mse_invariants(tensors, here, NEAR_THRESHOLD, sums if exact else None)[0]
    _, hit = join(mse_invariants(picture, np.arange(1), NEAR_THRESHOLD)[0], inv,
                  _mse_radius(NEAR_THRESHOLD))
    maybe = np.zeros(len(rows), dtype=bool)
    maybe[hit] = True
    # the correlation rule
    fr = features(None, None, mine[0], mine[2][:, :cw])
    fq = features(None, None, theirs[0], theirs[2][:, :cw])
    if fq.eligible[0]:
        maybe |= fr.eligible & _combos_within((fr.efull, fr.edetail), np.arange(len(rows)),
                                              (fq.efull, fq.edetail),
                                              np.zeros(len(rows), dtype=np.intp))
    # the fine rule: pairs of which at least one picture is trimmed
    inv_r, ok_r, trimmed_r = _fine_scaled(mine[1], picture.shape[1])
    inv_q, ok_q, trimmed_q = _fine_scaled(theirs[1], picture.shape[1])
    if ok_q[0]:
        gap = inv_r - inv_q[0]
        maybe |= (ok_r & (trimmed_r | trimmed_q[0])
                  & (np.einsum("ij,ij->i", gap, gap) <= _SLACK**2))
    return rows[maybe], tuple(x[maybe] for x in mine)


def find_groups(
    tensors: np.ndarray,
    rank: np.ndarray,
    rows: np.ndarray,
    prot: np.ndarray,
    bucket: np.ndarray | None,
    mse_candidates: tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]],
    stored: tuple[np.ndarray, ...] | None = None,
    lazy: bool = True,
) -> list[tuple[int, list[NearMember]]]:
    """Groups (local row indices) claimed in rank order over the union of the rules.

    ``mse_candidates`` are pairs (a, b) in local indices that may be within the MSE
    threshold in some rotation (``mse_candidates``: a superset of the MSE rule's
    matches), with the block projections ``mse_invariants`` made for it; the correlation
    and fine matches are found here. An MSE candidate is verified only where the result
    can depend on it (``_claim``, then the pairs ``_attach`` looks at): the groups are
    those of verifying every candidate first (``lazy`` False, for the tests). Each
    member's exact MSE to its key (minimum over the rotations) is computed once the groups
    are known.
    """
    n = len(rows)
    feat = features(tensors, rows, None if stored is None else stored[0],
                    None if stored is None else stored[2][:, : _corr_stored()])
    ca, cb = candidate_pairs(feat, feat.eligible, bucket)
    ok, orient_b, value = pair_scores(feat, ca, cb)
    ca, cb, orient_b, value = ca[ok], cb[ok], orient_b[ok], value[ok]
    fa, fb, fine_o, fine_v = fine_pairs(tensors, rows, bucket, None if stored is None else stored[1])
    ma, mb, proj = mse_candidates
    # one table of undirected pairs: (a, b, measure (``MEASURES``' index; 0: an MSE
    # candidate, not yet verified), value, orientation of b)
    a = np.concatenate([ma, ca, fa]).astype(np.intp)
    b = np.concatenate([mb, cb, fb]).astype(np.intp)
    meas = np.concatenate([np.zeros(len(ma), np.int8), np.ones(len(ca), np.int8),
                           np.full(len(fa), 2, np.int8)])
    val = np.concatenate([np.full(len(ma), np.nan), value, fine_v])
    ori = np.concatenate([np.zeros(len(ma), np.int64), orient_b, fine_o])
    # direct each pair from the better-ranked image; the orientation follows
    swap = rank[a] > rank[b]
    a, b = np.where(swap, b, a), np.where(swap, a, b)
    ori = np.where(swap, _inverse(ori), ori)
    # one row per pair, in claim order: whether it is an MSE candidate, and its first
    # other match (the correlation before the fine rule; a pair is in each list once)
    order = np.lexsort((meas, b, rank[a]))
    a, b, meas, val, ori = a[order], b[order], meas[order], val[order], ori[order]
    first = np.r_[True, (a[1:] != a[:-1]) | (b[1:] != b[:-1])] if len(a) else np.zeros(0, bool)
    head = np.cumsum(first) - 1  # each row's pair
    alt = np.flatnonzero((meas > 0) & (first | (np.r_[1, meas[:-1]] == 0)))
    is_mse = meas[first] == 0
    alt_meas = np.full(len(is_mse), -1, dtype=np.int8)
    alt_meas[head[alt]] = meas[alt]
    alt_val = np.full(len(is_mse), np.nan)
    alt_val[head[alt]] = val[alt]
    alt_ori = np.zeros(len(is_mse), dtype=np.int64)
    alt_ori[head[alt]] = ori[alt]
    a, b = a[first], b[first]
    hit = np.zeros(len(a), dtype=bool)  # MSE within the threshold, known
    unknown = is_mse.copy()  # MSE candidates not verified yet

    def verify(idx: np.ndarray) -> None:
        best, _ = exact_mse(tensors, rows, a[idx], b[idx], proj, NEAR_THRESHOLD,
                            NEAR_THRESHOLD, first=True)
        hit[idx] = best <= NEAR_THRESHOLD
        unknown[idx] = False

    if not lazy:  # every candidate first: the reference the lazy claiming must equal
        verify(np.flatnonzero(unknown))
    claims = _claim(a, b, hit, unknown, alt_meas > 0, prot, verify)
    joined = _attach(claims, a, b, rank, prot, hit, unknown, alt_meas > 0, verify)
    # the table of matches: the MSE rule first, then the correlation, then the fine rule
    meas = np.where(hit, 0, alt_meas).astype(np.int8)
    val = np.where(hit, np.nan, alt_val)
    ori = np.where(hit, 0, alt_ori)
    keep = meas >= 0
    renum = np.cumsum(keep) - 1  # claimed pairs all match, so all are kept
    a, b, meas, val, ori = a[keep], b[keep], meas[keep], val[keep], ori[keep]
    claims = [(key, renum[sel]) for key, sel in claims]
    # the pair each joined picture matched, and its orientation onto the grouped one (the
    # table holds b's orientation onto a: the joined one is b, or undo it)
    j_e = renum[joined[3]]
    j_ori = np.where(joined[1] == b[j_e], ori[j_e], _inverse(ori[j_e]))
    every = np.concatenate([sel for _, sel in claims]) if claims else np.zeros(0, np.intp)
    keys = np.array([key for key, _ in claims], dtype=np.intp)
    # exact MSE and rotation of every member to its key, and of each joined picture to
    # the member it matched (that rule's value and orientation when it was the MSE one)
    j_key, j_left, j_via = keys[joined[0]], joined[1], joined[2]
    mse, rot = exact_mse(tensors, rows, np.concatenate([a[every], j_key, j_via]),
                         np.concatenate([b[every], j_left, j_left]), proj, NEAR_THRESHOLD)
    n_m, n_j = len(every), len(j_key)
    # each member's orientation onto its key (a matched rotation is an orientation < 4)
    on_key = np.where(meas[every] > 0, ori[every], rot[:n_m])
    groups: list[tuple[int, list[NearMember]]] = []
    at = 0
    pos = np.full(n, -1, dtype=np.intp)  # member row -> its index in ``every``
    pos[b[every]] = np.arange(n_m)
    for g, (key, sel) in enumerate(claims):
        members = []
        for i, m_mse, m_rot in zip(sel, mse[at : at + len(sel)], rot[at : at + len(sel)],
                                   strict=True):
            o, corr = int(ori[i]), bool(meas[i])
            members.append(NearMember(
                int(b[i]), float(m_mse), 90 * (o % 4) if corr else 90 * int(m_rot),
                bool(o >= 4 and corr), MEASURES[meas[i]],
                float(val[i]) if corr else float(m_mse),
            ))
        at += len(sel)
        for t in np.flatnonzero(joined[0] == g):
            e, via = int(j_e[t]), int(j_via[t])
            corr = bool(meas[e])
            # the picture's orientation onto the member it matched, then the member's
            # onto the key (the key itself: none)
            o1 = int(j_ori[t]) if corr else int(rot[n_m + n_j + t])
            o = int(_COMPOSE[o1, 0 if via == key else on_key[pos[via]]])
            members.append(NearMember(
                int(j_left[t]), float(mse[n_m + t]), 90 * (o % 4), o >= 4, MEASURES[meas[e]],
                float(val[e]) if corr else float(mse[n_m + n_j + t]), via))
        groups.append((key, members))
    return groups


def _claim(a: np.ndarray, b: np.ndarray, hit: np.ndarray, unknown: np.ndarray,
           other: np.ndarray, prot: np.ndarray, verify: Callable[[np.ndarray], None],
           ) -> list[tuple[int, np.ndarray]]:
    """Greedy claiming over directed pairs sorted by their key's rank: each unclaimed key
    claims every unclaimed, unprotected picture it matches (``other``: by a rule already
    verified; ``hit``: by its MSE, known once ``verify`` has looked at the pair, which it
    does for the pairs still ``unknown``, updating both). Returns the claims (key, pair
    indices).

    MSE candidates are verified lazily, in waves: the next keys in rank order whose pairs
    still open (key and member unclaimed, member unprotected, MSE unknown) add up to about
    ``_WAVE`` are verified at once (one vectorised ``exact_mse``), then claimed one key
    after the other. Claims only grow, so every pair a key of the wave can still claim was
    open when its wave started and is known by its turn; a pair that closes during its
    wave was verified for nothing, which costs time, never a result."""
    starts = np.flatnonzero(np.r_[True, a[1:] != a[:-1]]) if len(a) else np.zeros(0, np.intp)
    ends = np.r_[starts[1:], len(a)].astype(np.intp)
    claimed = np.zeros(len(prot), dtype=bool)
    claims: list[tuple[int, np.ndarray]] = []
    k0 = 0
    while k0 < len(starts):
        s0 = int(starts[k0])
        # the wave: keys from k0 until their open pairs reach _WAVE (looked for in a
        # window of pairs, so that a wave costs what it verifies, not the whole table)
        s1 = min(len(a), s0 + 16 * _WAVE)
        wa, wb = a[s0:s1], b[s0:s1]
        count = np.cumsum(unknown[s0:s1] & ~(claimed[wa] | claimed[wb] | prot[wb]))
        stop = int(np.searchsorted(count, _WAVE)) if count[-1] >= _WAVE else s1 - s0 - 1
        k1 = max(int(np.searchsorted(starts, s0 + stop, side="right")), k0 + 1)
        e = int(ends[k1 - 1])  # the last key's pairs may reach past the window
        wa, wb = a[s0:e], b[s0:e]
        verify(np.flatnonzero(unknown[s0:e] & ~(claimed[wa] | claimed[wb] | prot[wb])) + s0)
        for k in range(k0, k1):
            s, e = int(starts[k]), int(ends[k])
            key = int(a[s])
            if claimed[key]:
                continue
            bk = b[s:e]
            sel = np.flatnonzero(~(claimed[bk] | prot[bk]) & (hit[s:e] | other[s:e])) + s
            if len(sel):
                claimed[b[sel]] = True
                claims.append((key, sel))
        k0 = k1
    return claims


def _attach(claims: list[tuple[int, np.ndarray]], a: np.ndarray, b: np.ndarray,
            rank: np.ndarray, prot: np.ndarray, hit: np.ndarray, unknown: np.ndarray,
            other: np.ndarray, verify: Callable[[np.ndarray], None]) -> tuple[np.ndarray, ...]:
    """Pictures that the claiming left out of every group but that match a picture of a
    group (its key or a member) join that group: one hop, never further, and never a
    protected one. Matches are not transitive, so without this a rotated copy whose
    original was claimed by a cropped copy it does not match would stay alone.

    Each left-out picture joins the group whose key ranks best among those it matches,
    through that group's best-ranked picture it matches: its pairs with grouped pictures
    are walked in that order up to the first match (``hit`` once verified, or ``other``: a
    correlation or fine match). MSE candidates on the way are verified (``verify``, as in
    ``_claim``), the match itself too (which rule it reports depends on it), and no more:
    a few pairs per picture at a time, twice as many each round, one ``verify`` call per
    round. Returns, per joined picture: its group's index in ``claims``, its row, the row
    it matched and that pair's index in the table."""
    n = len(rank)
    group_of = np.full(n, -1, dtype=np.intp)
    key_rank = np.zeros(n, dtype=np.int64)
    for g, (key, sel) in enumerate(claims):
        group_of[key] = g
        group_of[b[sel]] = g
        key_rank[key] = rank[key]
        key_rank[b[sel]] = rank[key]
    a_out, b_out = group_of[a] < 0, group_of[b] < 0
    left = np.where(a_out, a, b)
    e = np.flatnonzero((a_out ^ b_out) & ~prot[left])
    left, via = left[e], np.where(a_out[e], b[e], a[e])
    order = np.lexsort((rank[via], key_rank[via], left))
    e, left, via = e[order], left[order], via[order]
    picks = [np.zeros(0, dtype=np.intp)]
    pos = np.flatnonzero(np.r_[True, left[1:] != left[:-1]]) if len(e) else e[:0]
    end = np.r_[pos[1:], len(e)].astype(np.intp)  # each picture's pairs: pos .. end
    step = 1
    while len(pos):
        # the next ``step`` pairs of every picture still looking
        take = np.minimum(pos + step, end)
        counts = take - pos
        idx = np.repeat(pos - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
        pairs = e[idx]
        todo = pairs[unknown[pairs]]
        if len(todo):
            verify(todo)
        matched = np.flatnonzero(hit[pairs] | other[pairs])
        # per picture: its first match among those pairs, if any
        owner = np.repeat(np.arange(len(pos)), counts)
        found, first = np.unique(owner[matched], return_index=True)
        picks.append(idx[matched[first]])
        open_ = take < end
        open_[found] = False
        pos, end = take[open_], end[open_]
        step *= 2
    sel = np.sort(np.concatenate(picks))
    return group_of[via[sel]], left[sel], via[sel], e[sel]


_COMPOSE = _compose_table()
