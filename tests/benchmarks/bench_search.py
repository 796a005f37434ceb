"""Engine benchmark: difpy_index.match.find_groups side by side with difPy 4.2.1's search.

Not collected by pytest (``bench_*.py``). Run::

    python tests/benchmarks/bench_search.py                        # 400 images, seed 1
    python tests/benchmarks/bench_search.py --n 4000 --seed 1 --big 100000
    python tests/benchmarks/bench_search.py --corpus DIR [--same-dim-off-n 1500]

Without ``--corpus`` it generates a ground-truth corpus with tests/corpus.py (real photos
from scikit-image, scikit-learn and matplotlib: ``pip install -e '.[bench]'``).

Both tools search the very same tensors: difPy's own ``build`` makes them, and the engine
gets them with the decoded dims (difPy's ``_id_to_shape_dictionary`` is (H, W, 3)) and the
file sizes from ``os.stat``. Prints seconds and ratios, the growth exponent from n to 4n
(4n tensors synthesised by perturbing real ones), and peak memory for ``--big`` random
tensors (engine only: difPy would need days for 100,000).
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from difpy_index.match import find_groups

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import corpus as corpus_maker


def _difpy_build(corpus: str):
    import difPy

    dif = difPy.build(corpus, show_progress=False)
    ids = sorted(dif._tensor_dictionary)
    tensors = np.stack([dif._tensor_dictionary[i] for i in ids])
    shape = np.array([dif._id_to_shape_dictionary[i][:2] for i in ids], dtype=np.int64)
    paths = [str(dif._filename_dictionary[i]) for i in ids]
    sizes = np.array([os.stat(p).st_size for p in paths], dtype=np.int64)
    return dif, tensors, shape[:, 1], shape[:, 0], sizes, [os.fsencode(p) for p in paths]


def _time(fn, repeat: int = 1) -> tuple[float, object]:
    best, out = math.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _difpy_search(dif, similarity, same_dim: bool) -> float:
    import difPy

    t0 = time.perf_counter()
    difPy.search(dif, similarity=similarity, same_dim=same_dim, show_progress=False)
    return time.perf_counter() - t0


def _subset_build(corpus: str, n: int) -> str:
    """A folder of symlinks to the first n files of the corpus (difPy builds folders)."""
    files = sorted(
        os.path.join(r, f) for r, _d, fs in os.walk(corpus) for f in fs if not f.startswith(".")
    )[:n]
    out = tempfile.mkdtemp(prefix="bench_search_sub_")
    for i, f in enumerate(files):
        os.symlink(f, os.path.join(out, f"{i:06d}_{os.path.basename(f)}"))
    return out


def _synthesise(tensors, w, h, sizes, factor: int, seed: int = 1):
    """factor x n tensors: the originals plus perturbed copies (+-1..3 noise, new dims)."""
    rng = np.random.default_rng(seed)
    parts_t, parts_w, parts_h = [tensors], [w], [h]
    for _ in range(factor - 1):
        noise = rng.integers(-3, 4, tensors.shape, dtype=np.int16)
        shift = rng.integers(-40, 41, (len(tensors), 1, 1, 1), dtype=np.int16)  # new "photos"
        parts_t.append(np.clip(tensors + noise + shift, 0, 255).astype(np.uint8))
        parts_w.append(w + rng.integers(1, 50, len(w)))
        parts_h.append(h + rng.integers(1, 50, len(h)))
    t = np.concatenate(parts_t)
    n = len(t)
    return (t, np.concatenate(parts_w), np.concatenate(parts_h),
            rng.integers(1000, 10**7, n), [f"/syn/{i:07d}.jpg".encode() for i in range(n)])


def _peak_big(n: int, threshold: float, seed: int) -> None:
    """Child process: peak RSS of find_groups on n random 50px tensors."""
    t, w, h, sizes, paths = corpus_maker.synthetic_tensors(n, seed)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    g = find_groups(t, w, h, sizes, paths, threshold, same_dim=False)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{n} {threshold} {dt:.2f} {peak / 2**20:.3f} {(peak - before) / 2**20:.3f} {len(g)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", help="image folder (default: generate one with --n images)")
    ap.add_argument("--n", type=int, default=400, help="images to generate without --corpus")
    ap.add_argument("--seed", type=int, default=1, help="seed of the corpus and the tensors")
    ap.add_argument("--max-side", type=int, default=1600, help="longest side of generated images")
    ap.add_argument("--same-dim-off-n", type=int, default=1500,
                    help="images for the same_dim=False comparison (difPy is slow there)")
    ap.add_argument("--repeat", type=int, default=3, help="engine runs (best is reported)")
    ap.add_argument("--big", type=int, default=20_000, help="random tensors for peak memory")
    ap.add_argument("--big-threshold", type=float, action="append",
                    help="thresholds for the big run (default: 0 and 5)")
    ap.add_argument("--_peak", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._peak:
        _peak_big(int(a._peak[0]), float(a._peak[1]), int(a._peak[2]))
        return
    print("$ " + " ".join([os.path.basename(sys.executable), *sys.argv]), flush=True)
    corpus = a.corpus
    if corpus is None:
        corpus = os.path.join(tempfile.mkdtemp(prefix="bench_search_"), "corpus")
        t0 = time.perf_counter()
        corpus_maker.make_corpus(corpus, a.n, a.seed, max_side=a.max_side, processes=None)
        print(f"corpus of {a.n} generated (seed {a.seed}) in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    dif, T, W, H, S, P = _difpy_build(corpus)
    print(f"corpus {corpus}: {len(P)} images, difPy build {time.perf_counter() - t0:.1f} s, "
          f"cpus {os.cpu_count()}")
    rows = []

    def compare(label, dif_obj, sim, thr, same_dim, t, w, h, s, p):
        d = _difpy_search(dif_obj, sim, same_dim)
        e, groups = _time(lambda: find_groups(t, w, h, s, p, thr, same_dim=same_dim), a.repeat)
        members = sum(len(g.members) for g in groups)
        rows.append((label, len(p), d, e, d / e, len(groups), members))
        print(f"  {label:<27} n={len(p):<5} difPy search {d:7.2f} s | difpy-index engine "
              f"{e:7.3f} s | ratio {d / e:6.1f}x  ({len(groups)} groups, {members} members)",
              flush=True)

    print("search timings (same tensors, rotate=True):")
    compare("duplicates, same_dim", dif, "duplicates", 0, True, T, W, H, S, P)
    compare("similar (5), same_dim", dif, "similar", 5, True, T, W, H, S, P)
    if a.same_dim_off_n >= len(P):  # the whole corpus: no second build
        dif2, T2, W2, H2, S2, P2 = dif, T, W, H, S, P
    else:
        dif2, T2, W2, H2, S2, P2 = _difpy_build(_subset_build(corpus, a.same_dim_off_n))
    compare("duplicates, same_dim off", dif2, "duplicates", 0, False, T2, W2, H2, S2, P2)
    compare("similar (5), same_dim off", dif2, "similar", 5, False, T2, W2, H2, S2, P2)

    print("growth (engine only; 4n synthesised by perturbing the real tensors):")
    big = _synthesise(T, W, H, S, 4, a.seed)
    for thr, sd in ((0, True), (5, True), (5, False)):
        e1, _ = _time(lambda thr=thr, sd=sd: find_groups(T, W, H, S, P, thr, same_dim=sd), a.repeat)
        e4, _ = _time(lambda thr=thr, sd=sd: find_groups(*big, thr, same_dim=sd), a.repeat)
        expo = math.log(e4 / e1) / math.log(len(big[4]) / len(P))
        print(f"  threshold {thr:<3} same_dim {sd!s:<5}  n={len(P)}: {e1:.3f} s  "
              f"n={len(big[4])}: {e4:.3f} s  exponent {expo:.2f}", flush=True)

    print(f"peak memory, {a.big} random 50px tensors (tensors alone "
          f"{a.big * 7500 / 2**30:.2f} GiB), same_dim off, child process max RSS "
          "(engine only, no difPy run):")
    for thr in a.big_threshold or [0.0, 5.0]:
        out = subprocess.run([sys.executable, __file__, "--_peak", str(a.big), str(thr), str(a.seed)],
                             check=True, capture_output=True, text=True).stdout.split()
        print(f"  threshold {thr:<4} {float(out[2]):8.2f} s  peak RSS {float(out[3]):.2f} GiB  "
              f"groups {out[5]}", flush=True)

    print("\n| setting | n | difPy search s | difpy-index engine s | ratio |\n|---|---|---|---|---|")
    for label, n, d, e, r, _g, _m in rows:
        print(f"| {label} | {n} | {d:.2f} | {e:.3f} | {r:.0f}x |")


if __name__ == "__main__":
    main()
