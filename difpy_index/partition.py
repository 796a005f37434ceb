"""The exact partitioned search: bands of pixel sums, one task per band and its neighbour.

Why it is exact. ``S`` = the integer sum of every element of a tensor; rotation does not
change it, and ``(S_a - S_b)**2 / d**2 <= mse(a, b)`` (``d = px*px*3``, Jensen), so two
images whose sums differ by more than ``W = d*sqrt(T)`` never match. Rows are sorted by
``(dims bucket, S)`` (the bucket only when ``same_dim``) and cut into bands such that a
band never meets the band after its neighbour: every matching pair lies inside one band or
between neighbours. Task ``k`` holds band ``k`` and band ``k+1`` and returns the matching
pairs with at least one image in band ``k``, each verified with integer arithmetic
(:func:`match.band_matches`), so every matching pair comes back exactly once. The driver
then claims groups in quality-rank order over those pairs, as the in-memory search does,
so the groups are identical to :func:`match.find_groups` for every parameter combination.
Threshold 0 needs no neighbour: equal images have equal sums, so each band is a set of
whole equality classes and is grouped on its own.

Why it bounds memory. A task holds at most ``max_band_rows`` tensors (two bands) unless
more than half of that many images share one window of width ``W`` (then the band has to
be wider; see docs/deployment.md). The driver holds only per-image summaries and the
matching pairs. Tasks read their tensors through a loader (row ids -> tensors), so they
run in-process, on any ``concurrent.futures`` executor, or on a Dask cluster, and never
receive tensors through the task graph.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from .match import Group

__all__ = ["DEFAULT_MAX_BAND_ROWS", "Band", "Loader", "band_width", "partitioned_groups", "plan_bands"]

#: Tensors one task may hold (two neighbouring bands): about 1 GiB of work memory at 50 px.
DEFAULT_MAX_BAND_ROWS = 100_000

#: ids (n,) -> uint8 tensors (n, px, px, 3) in that order. Must be picklable for executors.
Loader = Callable[["np.ndarray"], "np.ndarray"]


@dataclass(frozen=True, slots=True)
class Band:
    """Rows ``[start, stop)`` of the ``(bucket, S)`` order."""

    start: int
    stop: int


def band_width(threshold: float, d: int) -> int:
    """An integer ``W`` with ``|S_a - S_b| > W  =>  mse(a, b) > threshold`` (with slack)."""
    return math.ceil(d * math.sqrt(threshold) * (1 + 1e-9)) + 1


def plan_bands(comp: np.ndarray, width: int, target: int) -> list[Band]:
    """Cut rows sorted by ``comp`` (``bucket << 40 | S``) into bands of about ``target``.

    ``width > 0``: any row of band ``k`` and any row of band ``k+2`` or later differ in
    ``comp`` by more than ``width`` (so they are in different buckets or cannot match).
    ``width == 0`` (threshold 0): bands end where ``comp`` changes, so equal rows share one.
    """
    import numpy as np

    n = len(comp)
    target = max(1, int(target))
    cuts = [0]
    while cuts[-1] < n:
        start = cuts[-1]
        end = min(n, start + target)
        if width == 0:
            end = int(np.searchsorted(comp, comp[end - 1], side="right"))
        elif len(cuts) >= 2:
            # this band must reach past everything within ``width`` of the previous band's
            # last row, so that band and the one after this never meet
            x = start - 1
            end = max(end, int(np.searchsorted(comp, comp[x] + width, side="right")))
        cuts.append(min(n, max(end, start + 1)))
    return [Band(a, b) for a, b in itertools.pairwise(cuts)]


def sort_key(sums: np.ndarray, bucket: np.ndarray | None) -> np.ndarray:
    """``bucket << 40 | S`` as int64 (S < 2**40 for any px_size this package accepts)."""
    import numpy as np

    s = np.asarray(sums, dtype=np.int64)
    return s if bucket is None else (np.asarray(bucket, dtype=np.int64) << 40) | s


def _task(
    loader: Loader, ids: np.ndarray, outer: int, bucket: np.ndarray | None, rank: np.ndarray,
    prot: np.ndarray, threshold: float, rotate: bool,
) -> tuple[np.ndarray, ...]:
    """One band task (runs wherever the executor puts it): load, match, return pairs.

    Threshold 0: ``(key, member, rotation k)`` of the band's groups; else matching pairs
    ``(a, b, mse, k)``. Indices are positions in ``ids``.
    """
    import numpy as np

    from . import match

    tensors = loader(ids)
    if threshold == 0:
        groups = match._groups_exact(tensors, np.arange(len(ids)), rank, bucket, rotate, prot)
        keys = [k for k, members in groups for _ in members]
        mem = [m for _, members in groups for m, _v, _k in members]
        rot = [k for _, members in groups for _m, _v, k in members]
        return (np.array(keys, dtype=np.int64), np.array(mem, dtype=np.int64),
                np.array(rot, dtype=np.int64))
    return match.band_matches(tensors, bucket, rank, outer, threshold, rotate)


def partitioned_groups(
    loader: Loader,
    ids: np.ndarray,
    sums: np.ndarray,
    widths: np.ndarray,
    heights: np.ndarray,
    px: int,
    rank: np.ndarray,
    paths: Sequence[bytes],
    threshold: float,
    rotate: bool = True,
    same_dim: bool = True,
    max_band_rows: int = DEFAULT_MAX_BAND_ROWS,
    executor: Executor | None = None,
    window: int = 16,
    protected: np.ndarray | None = None,
) -> list[Group]:
    """``match.find_groups`` over rows whose tensors ``loader(ids)`` reads, band by band.

    ``rank`` is the quality rank of each row (smaller = better; a total order), exactly the
    one the in-memory search claims in. Indices in the result are row positions, as in
    ``find_groups``. ``protected`` rows (reference files) may be keys, never members, as
    in ``find_groups``. ``executor``: run tasks there, at most ``window`` in flight (a task
    carries row ids in and matching pairs out, never tensors); None runs them here, one
    band pair at a time.
    """
    import numpy as np

    from .match import Group, Member, _dim_buckets

    threshold = float(threshold)
    if not math.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold!r}")
    n = len(ids)
    if n < 2:
        return []
    rank = np.asarray(rank, dtype=np.int64)
    prot = np.zeros(n, dtype=bool) if protected is None else np.asarray(protected, dtype=bool)
    bucket = _dim_buckets((np.asarray(widths), np.asarray(heights)))[0] if same_dim else None
    comp = sort_key(sums, bucket)
    order = np.lexsort((rank, comp))  # ties in any fixed order; rank makes it deterministic
    comp = comp[order]
    d = px * px * 3
    width = 0 if threshold == 0 else band_width(threshold, d)
    target = max(1, max_band_rows // (1 if threshold == 0 else 2))
    bands = plan_bands(comp, width, target)
    tasks: list[tuple[np.ndarray, int]] = []  # (sorted positions of the task, own rows)
    for k, band in enumerate(bands):
        stop = band.stop if threshold == 0 or k + 1 == len(bands) else bands[k + 1].stop
        tasks.append((np.arange(band.start, stop), band.stop - band.start))
    ids_s = np.asarray(ids)[order]
    rank_s = rank[order]
    prot_s = prot[order]
    bucket_s = None if bucket is None else bucket[order]

    def args(pos: np.ndarray, outer: int) -> tuple:
        return (ids_s[pos], outer, None if bucket_s is None else bucket_s[pos], rank_s[pos],
                prot_s[pos], threshold, rotate)

    parts: list[tuple[np.ndarray, ...]] = []

    def collect(pos: np.ndarray, res: tuple[np.ndarray, ...]) -> None:
        # local task indices -> row positions of the caller
        parts.append((order[pos[res[0]]], order[pos[res[1]]], *res[2:]))

    if executor is None:
        _run_local(loader, bands, tasks, args, collect, threshold)
    else:
        pending: deque[tuple[np.ndarray, int]] = deque(tasks)
        inflight: dict[Future, np.ndarray] = {}
        from concurrent.futures import FIRST_COMPLETED, wait

        limit = max(1, window)
        while pending or inflight:
            while pending and len(inflight) < limit:
                pos, outer = pending.popleft()
                inflight[executor.submit(_task, loader, *args(pos, outer))] = pos
            done, _ = wait(inflight, return_when=FIRST_COMPLETED)
            for fut in done:
                collect(inflight.pop(fut), fut.result())

    groups: list[tuple[int, list[tuple[int, float, int]]]] = []
    if threshold == 0:
        by_key: dict[int, list[tuple[int, float, int]]] = {}
        for keys, mem, rot in parts:
            for k, m, r in zip(keys.tolist(), mem.tolist(), rot.tolist(), strict=True):
                by_key.setdefault(k, []).append((m, 0.0, r))
        groups = sorted(by_key.items(), key=lambda g: rank[g[0]])
    elif parts:
        a = np.concatenate([p[0] for p in parts])
        b = np.concatenate([p[1] for p in parts])
        mse = np.concatenate([p[2] for p in parts])
        ks = np.concatenate([p[3] for p in parts])
        groups = _claim(a, b, mse, ks, rank, prot)
    out = []
    for key, members in groups:
        members.sort(key=lambda m: (m[1], paths[m[0]]))
        out.append(Group(int(key), tuple(Member(int(i), float(v), 90 * int(k)) for i, v, k in members)))
    return out


def _run_local(
    loader: Loader, bands: list[Band], tasks: list[tuple[np.ndarray, int]],
    args: Callable[[np.ndarray, int], tuple], collect: Callable[[np.ndarray, tuple], None],
    threshold: float,
) -> None:
    """The tasks in order, here: each band is read and its features computed once (the
    upper neighbour of task k is the own band of task k+1), so the local search costs what
    the in-memory one does, holding at most three bands of tensors."""
    import numpy as np

    from . import match

    if threshold == 0:
        for pos, outer in tasks:
            collect(pos, _task(loader, *args(pos, outer)))
        return
    # Task k's tensors are one buffer [band k | band k+1]; band k+1 stays there (a view)
    # until task k+1 copies it to the front of its own buffer and the old one is freed:
    # at most three bands of tensors are resident, never two bands plus a two-band copy.
    prev: np.ndarray | None = None
    prev_outer = 0
    kept_feat: Any = None
    for k, (pos, outer) in enumerate(tasks):
        ids, _outer, bucket, rank, _prot, thr, rotate = args(pos, outer)
        if prev is None:
            own_t = loader(ids[:outer])
            own_f = match.band_features(own_t)
        else:
            own_t, own_f = prev[prev_outer:], kept_feat
        assert len(own_t) == outer
        if len(pos) > outer:  # the upper neighbour: read once, kept for task k+1
            buf = np.empty((len(pos), *own_t.shape[1:]), dtype=np.uint8)
            buf[:outer] = own_t
            del own_t
            prev = None  # frees the previous task's buffer
            nxt = loader(ids[outer:])
            kept_feat = match.band_features(nxt)
            buf[outer:] = nxt
            del nxt
            tensors, feat = buf, match.concat_features([own_f, kept_feat])
            prev, prev_outer = buf, outer
            del buf
        else:
            tensors, feat = own_t, own_f
            del own_t
            prev = None
        del own_f
        assert k + 1 == len(tasks) or len(pos) - outer == bands[k + 1].stop - bands[k + 1].start
        collect(pos, match.band_matches(tensors, bucket, rank, outer, thr, rotate, feat=feat))
        del tensors, feat


def _claim(
    a: np.ndarray, b: np.ndarray, mse: np.ndarray, ks: np.ndarray, rank: np.ndarray,
    prot: np.ndarray,
) -> list[tuple[int, list[tuple[int, float, int]]]]:
    """Greedy claiming in rank order over verified pairs (``rank[a] < rank[b]``);
    protected rows are never claimed (``match._claim_from_pairs``)."""
    import numpy as np

    if len(a) == 0:
        return []
    order = np.lexsort((rank[b], rank[a]))
    a, b, mse, ks = a[order], b[order], mse[order], ks[order]
    starts = np.flatnonzero(np.r_[True, a[1:] != a[:-1]])
    ends = np.r_[starts[1:], len(a)]
    claimed = np.zeros(len(rank), dtype=bool)
    groups: list[tuple[int, list[tuple[int, float, int]]]] = []
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        key = int(a[s])
        if claimed[key]:
            continue
        free = ~(claimed[b[s:e]] | prot[b[s:e]])
        if not free.any():
            continue
        mb = b[s:e][free]
        claimed[mb] = True
        groups.append((key, list(zip(mb.tolist(), mse[s:e][free].tolist(), ks[s:e][free].tolist(), strict=True))))
    return groups
